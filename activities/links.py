"""Signed links in messages: what lets a supervisor act from their inbox, and nobody else.

A token binds the case, the approval request (when it was asked), the approver and an expiry
(the approval's deadline); it is signed with $ESCALATION_SECRET and is never part of the
workflow's history (it is made when the message is rendered, outside the workflow).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from itsdangerous import BadSignature, URLSafeSerializer

APPROVAL = "approval"
VERDICT = "verdict"  # the customer's rating and "not solved" links


class InvalidToken(Exception):
    """Tampered, foreign (another secret or kind) or expired."""


@dataclass(frozen=True, slots=True)
class ApprovalClaim:
    case_id: str
    requested_at: str  # the request's identity: a case has one pending at a time
    approver: str
    expires: int  # unix seconds


@dataclass(frozen=True, slots=True)
class VerdictClaim:
    case_id: str
    resolution: int  # which resolution the customer answers (a reopened case has more)
    expires: int  # unix seconds: the end of the reopen window


class Links:
    def __init__(self, secret: str, base_url: str) -> None:
        if len(secret) < 16:
            raise ValueError("ESCALATION_SECRET: use at least 16 characters")
        self.base_url = base_url.rstrip("/")
        self.secret = secret
        self._approvals = URLSafeSerializer(secret, salt="escalation-desk/" + APPROVAL)
        self._verdicts = URLSafeSerializer(secret, salt="escalation-desk/" + VERDICT)

    @classmethod
    def from_env(cls, dev_folder: Path | None = None) -> Links | None:
        """$ESCALATION_SECRET and $ESCALATION_WEB_URL; in --dev a secret kept under ./data/
        (made on first start) and http://127.0.0.1:8000. None: messages carry no links."""
        secret = os.environ.get("ESCALATION_SECRET")
        base = os.environ.get("ESCALATION_WEB_URL")
        if dev_folder is not None:
            if not secret:
                path = dev_folder / "web-secret"
                if not path.exists():
                    dev_folder.mkdir(parents=True, exist_ok=True)
                    path.write_text(secrets.token_urlsafe(32))
                    path.chmod(0o600)
                secret = path.read_text().strip()
            base = base or "http://127.0.0.1:8000"
        if not secret or not base:
            return None
        return cls(secret, base)

    def case_url(self, case_id: str) -> str:
        """The case's page on the desk console (behind sign-in)."""
        return f"{self.base_url}/cases/{quote(case_id)}"

    def approval_token(self, claim: ApprovalClaim) -> str:
        return str(
            self._approvals.dumps(
                [claim.case_id, claim.requested_at, claim.approver, claim.expires]
            )
        )

    def approval_url(self, claim: ApprovalClaim) -> str:
        return f"{self.base_url}/approvals/{self.approval_token(claim)}"

    def read_approval(self, token: str, now: datetime | None = None) -> ApprovalClaim:
        try:
            case_id, requested_at, approver, expires = self._approvals.loads(token)
        except (BadSignature, ValueError, TypeError):
            raise InvalidToken("this link is not valid") from None
        claim = ApprovalClaim(str(case_id), str(requested_at), str(approver), int(expires))
        if (now or datetime.now(UTC)).timestamp() > claim.expires:
            raise InvalidToken("this link has expired")
        return claim

    def verdict_token(self, claim: VerdictClaim) -> str:
        return str(self._verdicts.dumps([claim.case_id, claim.resolution, claim.expires]))

    def rating_url(self, claim: VerdictClaim, score: int) -> str:
        return f"{self.base_url}/feedback/{self.verdict_token(claim)}?score={score}"

    def reopen_url(self, claim: VerdictClaim) -> str:
        return f"{self.base_url}/reopen/{self.verdict_token(claim)}"

    def read_verdict(self, token: str, now: datetime | None = None) -> VerdictClaim:
        try:
            case_id, resolution, expires = self._verdicts.loads(token)
        except (BadSignature, ValueError, TypeError):
            raise InvalidToken("this link is not valid") from None
        claim = VerdictClaim(str(case_id), int(resolution), int(expires))
        if (now or datetime.now(UTC)).timestamp() > claim.expires:
            raise InvalidToken("this link has expired: the case is closed")
        return claim
