"""Notices into messages: each notice names a template in activities/templates (or in the
folder $ESCALATION_TEMPLATES, whose files override the bundled ones) and carries its facts.

Per notice `<name>`: `.subject.txt` and `.body.txt` make the plain-text message; `.html` the
HTML part of a mail (else `_layout.html` around the plain body); `.chat.txt` the short form
for chat (else `_chat.txt`). HTML is autoescaped, text is not. Templates see the case as the
records keep it (`case`: CaseSnapshot), the notice's own facts and `approval_url` (a signed
link for an approver, or None) and `case_url` (the case on the desk console, for internal
notices only; None for customers' messages and when no web app is configured).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    select_autoescape,
)

from activities.links import ApprovalClaim, Links, VerdictClaim
from workflows.activity_models import CaseSnapshot, OutboundMessage
from workflows.wording import clock_verb, fmt_duration, fmt_money, fmt_when

BUNDLED_TEMPLATES = Path(__file__).with_name("templates")


def _money(action: dict[str, Any]) -> str:
    return fmt_money(float(action["amount"]), str(action["currency"]))


class Renderer:
    def __init__(
        self, folder: str | os.PathLike[str] | None = None, links: Links | None = None
    ) -> None:
        override = folder or os.environ.get("ESCALATION_TEMPLATES")
        folders = [*([Path(override)] if override else []), BUNDLED_TEMPLATES]
        self.links = links
        self.env = Environment(
            loader=ChoiceLoader([FileSystemLoader(f) for f in folders]),
            undefined=StrictUndefined,  # a fact a template needs and did not get is an error
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=select_autoescape(["html"], default_for_string=False, default=False),
        )
        self.env.filters.update(
            duration=fmt_duration,
            money=_money,
            clock_verb=clock_verb,
            when=fmt_when,
            tojson_pretty=lambda value: json.dumps(value, indent=2),
        )

    def _first(self, *names: str) -> Any:
        for name in names[:-1]:
            try:
                return self.env.get_template(name)
            except TemplateNotFound:
                continue
        return self.env.get_template(names[-1])

    def approval_url(self, message: OutboundMessage, case: CaseSnapshot) -> str | None:
        """Only an approver's own notice carries a link; customers' messages never do."""
        facts = message.facts
        if (
            self.links is None
            or message.channel != "internal"
            or message.template != "approval_needed"
            or not facts.get("requested_at")
        ):
            return None
        due = facts.get("due_by")
        expires = datetime.fromisoformat(due) if due else None
        claim = ApprovalClaim(
            case_id=case.case_id,
            requested_at=str(facts["requested_at"]),
            approver=str(facts["approver"]),
            expires=int(expires.timestamp()) if expires else 2**31,
        )
        return self.links.approval_url(claim)

    def case_url(self, message: OutboundMessage, case: CaseSnapshot) -> str | None:
        """Staff act on the desk console, signed in; a customer never gets its address."""
        if self.links is None or message.channel != "internal":
            return None
        return self.links.case_url(case.case_id)

    def verdict_urls(self, message: OutboundMessage, case: CaseSnapshot) -> dict[str, Any]:
        """The resolution mail's rating links (one per score) and its "not solved" link."""
        facts = message.facts
        if self.links is None or message.template != "resolved" or not facts.get("reopen_until"):
            return {"rating_urls": None, "reopen_url": None}
        until = datetime.fromisoformat(str(facts["reopen_until"]))
        claim = VerdictClaim(case.case_id, int(facts["resolution_number"]), int(until.timestamp()))
        ratings = {n: self.links.rating_url(claim, n) for n in range(1, 6)}
        return {"rating_urls": ratings, "reopen_url": self.links.reopen_url(claim)}

    def render(self, message: OutboundMessage, case: CaseSnapshot) -> OutboundMessage:
        """The message with its subject, body, HTML and short form; one already rendered
        (queued as text by an older case) is kept as it is."""
        if message.template is None:
            return message
        name = message.template
        context = {
            **message.facts,
            "case": case,
            "approval_url": self.approval_url(message, case),
            "case_url": self.case_url(message, case),
            **self.verdict_urls(message, case),
        }
        subject = self.env.get_template(f"{name}.subject.txt").render(context).strip()
        body = self.env.get_template(f"{name}.body.txt").render(context)
        context.update(subject=subject, body=body)
        html = self._first(f"{name}.html", "_layout.html").render(context)
        short = self._first(f"{name}.chat.txt", "_chat.txt").render(context).strip()
        return message.model_copy(
            update={"subject": subject, "body": body, "html": html, "short": short}
        )
