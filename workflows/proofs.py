"""Signed decisions: a `proof` that a message the policy lists in `proof_required` was made
by the desk's own web app or CLI for this person, this case and this request, and not typed
into any Temporal client as `{"by": "exec-holt"}`.

A proof is an HMAC-SHA256, keyed from $ESCALATION_SECRET, over the case, the message, `by`,
the request it answers (a pending approval's `requested_at`; for other messages the tier the
case is at) and an expiry. The secret never enters a case's history: the worker hands it to
this module when it starts (`configure`), Update validators check with it (they do not run
on replay), and a Signal's proof is checked by a local activity whose answer is recorded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from workflows.activity_models import ProofClaim

if TYPE_CHECKING:
    from workflows.state import CaseState

PROOF_LIFETIME = timedelta(minutes=15)

_secret: list[bytes] = []  # the worker's key, set once at start; never in history


def configure(secret: str | None) -> None:
    _secret.clear()
    if secret:
        _secret.append(_key(secret))


def _key(secret: str) -> bytes:
    return hashlib.sha256(b"escalation-desk/proof:" + secret.encode()).digest()


def request_of(message: str, requested_at: datetime | None, tier: int | None) -> str:
    """What a proof answers: the pending request for a decision, else the tier it is at."""
    if message in ("approve", "reject"):
        return requested_at.isoformat() if requested_at else ""
    return f"tier {tier}"


def sign(secret: str, case_id: str, message: str, by: str, request: str, now: datetime) -> str:
    expires = int((now + PROOF_LIFETIME).timestamp())
    body = json.dumps([case_id, message, by, request, expires], separators=(",", ":"))
    mac = hmac.new(_key(secret), body.encode(), hashlib.sha256).hexdigest()
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=") + "." + mac


def check(
    proof: str | None, case_id: str, message: str, by: str, request: str, now: datetime
) -> str | None:
    """None when the proof holds; else why not, naming `proof`."""
    if not _secret:
        return "proof: this worker has no ESCALATION_SECRET to check proofs with"
    if not proof:
        return f"proof: {message} needs a signed proof (send it from the desk or the CLI)"
    try:
        encoded, mac = proof.rsplit(".", 1)
        body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        claim: list[Any] = json.loads(body)
    except (ValueError, binascii.Error):
        return "proof: not a proof"
    good = hmac.new(_secret[0], body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(good, mac):
        return "proof: not signed by this desk"
    if claim[:4] != [case_id, message, by, request]:
        return f"proof: made for another {_differs(claim, [case_id, message, by, request])}"
    if now.timestamp() > float(claim[4]):
        return "proof: expired"
    return None


def _differs(claim: list[Any], wanted: list[str]) -> str:
    names = ["case", "message", "person", "request"]
    return next((n for n, a, b in zip(names, claim, wanted, strict=False) if a != b), "request")


def claim_for(state: CaseState | None, name: str, msg: Any) -> ProofClaim | None:
    """What a message's proof must sign, when the case's policy requires one (else None)."""
    if state is None or name not in state.policy.proof_required:
        return None
    requested_at = state.pending.requested_at if state.pending else None
    return ProofClaim(
        proof=getattr(msg, "proof", None),
        case_id=state.case.case_id,
        message=name,
        by=getattr(msg, "by", ""),
        request=request_of(name, requested_at, state.tier),
    )


def check_claim(claim: ProofClaim, now: datetime) -> str | None:
    return check(claim.proof, claim.case_id, claim.message, claim.by, claim.request, now)
