"""What a person may do to a case now, asked of the same decisions the case validates with.

Each action is tried as a probe message from that person (`decide` is pure, so trying
changes nothing). An action is offered when the probe is accepted, or refused only for a
field of its payload other than `by` (the amount is within their own authority, the root
cause is required, ...): the person may take it, with the right details. A refusal for who
they are, or for the stage the case is in, means it is not theirs to take now. There is no
second permission table to drift from the one the case enforces.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from workflows import decisions
from workflows.messages import MESSAGES
from workflows.state import CaseState

_ANY = "-"  # a placeholder for free text the person will type
_FIELD = re.compile(r"^([a-z_.]+): ")

# the console's action -> (the message it sends, the probe's payload besides `by`)
PROBES: dict[str, tuple[str, Callable[[CaseState], dict[str, Any]]]] = {
    "acknowledge": ("acknowledge", lambda s: {}),
    "wait_for_customer": ("wait_for_customer", lambda s: {"question": _ANY}),
    "resolve": (
        "resolve",
        lambda s: {"resolution": _ANY, "root_cause": next(iter(s.policy.root_causes), None)},
    ),
    "escalate": ("escalate", lambda s: {"reason": _ANY}),
    "transfer": (
        "escalate",
        lambda s: {
            "reason": _ANY,
            "department": next((d for d in s.policy.departments if d != s.department), None),
        },
    ),
    "request_approval": (
        "request_approval",
        lambda s: {"action": {"kind": "refund", "amount": 0, "currency": s.policy.currency}},
    ),
    "approve": ("approve", lambda s: {}),
    "reject": ("reject", lambda s: {"reason": _ANY}),
    "deescalate": ("deescalate", lambda s: {"reason": _ANY}),
    "reopen": ("reopen", lambda s: {"reason": _ANY}),
}


def offered(state: CaseState | None, by: str, now: datetime) -> list[str]:
    """The console actions `by` may take on this case now, in the order of PROBES."""
    if state is None:
        return []
    actions = []
    for action, (name, probe) in PROBES.items():
        payload = {k: v for k, v in probe(state).items() if v is not None}
        try:
            msg = MESSAGES[name].parse({"by": by, **payload})
        except ValidationError:
            continue
        decision = decisions.decide(state, name, msg, now)
        if isinstance(decision, decisions.Refused):
            field = _FIELD.match(decision.reason)
            if field is None or field.group(1) == "by":
                continue
            if action == "transfer" and field.group(1) == "department":
                continue  # nowhere to transfer to
        actions.append(action)
    return actions
