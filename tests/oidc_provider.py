"""A real OpenID provider for the tests: PyPI's oidc-provider-mock (an Authlib server with a
login form), run as its own process on 127.0.0.1 from a venv of its own, since it needs
Python 3.12 or newer and the desk runs on 3.11. The venv is made once, under .venv-oidc/."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).parent.parent
VENV = ROOT / ".venv-oidc"
PACKAGE = "oidc-provider-mock>=0.4,<0.5"


def _python_3_12() -> str:
    """An interpreter new enough for the provider: this one, pyenv's, or one on PATH (a pyenv
    shim on PATH may name a version that is not selected, so it is tried before use)."""
    if sys.version_info >= (3, 12):
        return sys.executable
    pyenv = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    found = [
        *sorted(glob.glob(f"{pyenv}/versions/3.12*/bin/python3")),
        *sorted(glob.glob(f"{pyenv}/versions/3.13*/bin/python3")),
        *filter(None, (shutil.which(n) for n in ("python3.12", "python3.13"))),
    ]
    for candidate in found:
        ok = subprocess.run([candidate, "-c", "import venv"], capture_output=True, check=False)
        if ok.returncode == 0:
            return candidate
    raise RuntimeError("the OpenID provider needs Python >= 3.12 (none found in pyenv or PATH)")


def provider_binary() -> Path:
    binary = VENV / "bin" / "oidc-provider-mock"
    if not binary.exists():
        subprocess.run([_python_3_12(), "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "-q", PACKAGE], check=True, timeout=300
        )
    return binary


@contextlib.contextmanager
def oidc_provider(port: int, users: list[dict[str, object]], log: Path) -> Iterator[str]:
    """The provider on 127.0.0.1:`port` with `users` (claims, each with a `sub`) to pick on
    its login form; yields its issuer URL."""
    args = [str(provider_binary()), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--require-nonce", "true"]
    for user in users:
        args += ["--user-claims", json.dumps(user)]
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    issuer = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{issuer}/.well-known/openid-configuration").status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the OpenID provider did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield issuer
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
