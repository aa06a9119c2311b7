"""The policy on disk: the bundled TOML or $ESCALATION_POLICY, re-read when it changes."""

from __future__ import annotations

import logging
import os
import tomllib
from pathlib import Path

from workflows.policy import Policy, PolicyError, policy_from_dict

BUNDLED_POLICY = Path(__file__).with_name("policy.toml")

log = logging.getLogger("escalation_desk.policy")


def load_policy(path: str | os.PathLike[str] | None = None) -> Policy:
    """Load `path`, else $ESCALATION_POLICY, else the bundled policy."""
    chosen = Path(path or os.environ.get("ESCALATION_POLICY") or BUNDLED_POLICY)
    try:
        data = tomllib.loads(chosen.read_text())
    except FileNotFoundError:
        raise PolicyError(f"{chosen}: no such policy file") from None
    except tomllib.TOMLDecodeError as err:
        raise PolicyError(f"{chosen}: not valid TOML: {err}") from None
    return policy_from_dict(data, str(chosen))


class PolicySource:
    """The policy file, re-read when it changes; a broken edit keeps the last good policy."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.policy = load_policy(path)
        self._mtime = 0.0
        self._mtime = self._stat()

    def _file(self) -> Path:
        return Path(self.path or os.environ.get("ESCALATION_POLICY") or BUNDLED_POLICY)

    def _stat(self) -> float:
        """The file's mtime; unreadable for a moment (an editor saving) counts as unchanged."""
        try:
            return self._file().stat().st_mtime
        except OSError:
            return self._mtime

    def __call__(self) -> Policy:
        mtime = self._stat()
        if mtime != self._mtime:
            self._mtime = mtime
            try:
                self.policy = load_policy(self.path)
                log.info("policy %s loaded from %s", self.policy.version, self._file())
            except PolicyError as err:
                log.error("policy change ignored, keeping %s: %s", self.policy.version, err)
        return self.policy
