"""Notices into messages: each notice names a template in activities/templates (or in the
folder $ESCALATION_TEMPLATES, whose files override the bundled ones) and carries its facts.

`<name>.subject.txt` and `<name>.body.txt` make the plain-text message. Templates see the case
as the records keep it (`case`: CaseSnapshot) and the notice's own facts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined

from workflows.activity_models import CaseSnapshot, OutboundMessage
from workflows.wording import clock_verb, fmt_duration, fmt_money

BUNDLED_TEMPLATES = Path(__file__).with_name("templates")


def _money(action: dict[str, Any]) -> str:
    return fmt_money(float(action["amount"]), str(action["currency"]))


class Renderer:
    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        override = folder or os.environ.get("ESCALATION_TEMPLATES")
        folders = [*([Path(override)] if override else []), BUNDLED_TEMPLATES]
        self.env = Environment(
            loader=ChoiceLoader([FileSystemLoader(f) for f in folders]),
            undefined=StrictUndefined,  # a fact a template needs and did not get is an error
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,  # plain text
        )
        self.env.filters.update(
            duration=fmt_duration,
            money=_money,
            clock_verb=clock_verb,
            tojson_pretty=lambda value: json.dumps(value, indent=2),
        )

    def render(self, message: OutboundMessage, case: CaseSnapshot) -> OutboundMessage:
        """The message with its subject and body; one already rendered is kept as it is."""
        if message.template is None:
            return message
        context = {**message.facts, "case": case}
        subject = self.env.get_template(f"{message.template}.subject.txt").render(context)
        body = self.env.get_template(f"{message.template}.body.txt").render(context)
        return message.model_copy(update={"subject": subject.strip(), "body": body})
