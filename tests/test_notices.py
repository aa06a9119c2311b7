"""Every notice a case sends, rendered from the facts the pure core gives it, against the
snapshots in tests/snapshots/notices (UPDATE_SNAPSHOTS=1 writes them anew: read the diff)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from activities.links import ApprovalClaim, InvalidToken, Links
from activities.render import BUNDLED_TEMPLATES, Renderer
from workflows import decisions, evolve, projections
from workflows.activity_models import OutboundMessage
from workflows.events import (
    Acknowledged,
    ApprovalDecided,
    ApprovalRequested,
    CustomerAskedAtTop,
    CustomerReplied,
    CustomerUpdated,
    Escalated,
    FeedbackGiven,
    HardCapReached,
    Renotified,
    Reopened,
    Resolved,
    SlaBreached,
    SlaWarned,
    Transferred,
    WaitingForCustomer,
)
from workflows.models import Action
from workflows.state import CaseState, Clock

from .core_cases import ASSIGNEE, T0, assigned, identified, with_events

SNAPSHOTS = Path(__file__).parent / "snapshots" / "notices"
LINKS = Links("a-test-secret-of-some-length", "https://desk.example")
LATER = T0 + timedelta(minutes=10)


def rendered(
    state: CaseState, messages: list[OutboundMessage], links: Links | None = None
) -> list[OutboundMessage]:
    renderer = Renderer(links=links)
    snap = projections.snapshot(state, "case-M-1", "run", 1, closing=False)
    return [renderer.render(m, snap) for m in messages]


def everything_a_case_sends() -> list[OutboundMessage]:
    """One case through every path that sends something (and a second to the hard cap)."""
    refund = Action(kind="refund", amount=250, currency="USD")
    s = assigned(identified())
    deadline = s.clocks.ack_by if s.clocks else T0
    with_events(
        s,
        Renotified(ASSIGNEE, 1, T0),
        SlaWarned(Clock.ACK, deadline),
        Acknowledged(ASSIGNEE),
        ApprovalRequested(ASSIGNEE, refund, ["sup-lee", "exec-holt"], ["sup-lee"], LATER),
        ApprovalDecided("approved", "sup-lee", "approved under policy 7"),
        WaitingForCustomer(ASSIGNEE, "Which card was charged twice?"),
        CustomerReplied("The Visa ending 4242"),
        CustomerUpdated(),
        Transferred(ASSIGNEE, "technical", "the charge came from an API retry"),
    )
    assigned(s, "tech-raj")
    with_events(s, Escalated("tech-raj", "needs the platform lead"))
    assigned(s, "sup-ito")
    with_events(s, Escalated(None, "ack SLA breached at tier 3", automatic=True))
    assigned(s, "exec-holt")
    with_events(
        s,
        CustomerAskedAtTop("Fourth call this week"),
        SlaBreached(Clock.ACK, LATER, top_tier=True),
        Resolved("exec-holt", "Refunded the duplicate charge"),
    )
    evolve.apply(s, decisions.report_up(s), LATER)
    windowed = assigned(identified(case_id="M-3"))
    with_events(windowed, Acknowledged(ASSIGNEE), Resolved(ASSIGNEE, "Refunded", "billing_error"))
    evolve.apply(windowed, decisions.report_up(windowed, LATER + timedelta(days=7)), LATER)
    with_events(windowed, FeedbackGiven(2, "Took too long"), Reopened("customer", "Charged again"))
    capped = assigned(identified(case_id="M-2"))
    with_events(capped, HardCapReached())
    evolve.apply(capped, decisions.report_up(capped), T0 + timedelta(days=30))
    assign = OutboundMessage(
        key="k",
        channel="internal",
        recipient="bill-ana",
        address="ana.ruiz@desk.example",
        template="assigned",
        facts={"person": "bill-ana", "tier_name": "Specialists", "department_name": "Billing"},
    )
    return [
        *rendered(s, [*s.outbox, assign], LINKS),
        *rendered(capped, capped.outbox, LINKS),
        *rendered(windowed, windowed.outbox, LINKS),
    ]


SENT = everything_a_case_sends()
TEMPLATES = sorted(
    p.name.removesuffix(".subject.txt") for p in BUNDLED_TEMPLATES.glob("*.subject.txt")
)


def test_every_template_is_sent_and_every_notice_has_a_template() -> None:
    assert {m.template for m in SENT} == set(TEMPLATES)


@pytest.mark.parametrize("template", TEMPLATES)
def test_notice_renders_as_its_snapshot(template: str) -> None:
    message = next(m for m in SENT if m.template == template)
    text = f"To: {message.recipient} <{message.address}> ({message.channel})\n"
    text += f"Subject: {message.subject}\nChat: {message.short}\n\n{message.body}\n"
    path = SNAPSHOTS / f"{template}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text()


def test_customer_messages_carry_no_internal_names_or_notes() -> None:
    staff = {"bill-ana", "sup-lee", "exec-holt", "tech-raj", "sup-ito", "policy 7"}
    for message in SENT:
        if message.channel == "customer":
            assert message.body.startswith("Dear Ada Lopez,\n\n")
            assert (
                message.body.endswith("Case reference: M-1")
                or "M-2" in message.body
                or ("M-3" in message.body)
            )
            assert not any(word in message.body for word in staff), message.body


def test_a_message_queued_as_text_before_notices_is_kept_as_it_came() -> None:
    old = OutboundMessage(
        key="k", channel="customer", recipient="c", address="c@x.example", subject="S", body="B"
    )
    assert rendered(identified(), [old]) == [old]


def test_an_organisation_overrides_a_template(tmp_path: Path) -> None:
    (tmp_path / "acknowledged.subject.txt").write_text("We are on it: {{ case.case_id }}\n")
    message = next(m for m in SENT if m.template == "acknowledged")
    state = identified()
    snap = projections.snapshot(state, "case-M-1", "run", 1, closing=False)
    again = Renderer(tmp_path).render(message.model_copy(update={"subject": ""}), snap)
    assert again.subject == "We are on it: M-1"
    assert again.body == message.body  # the body still comes from the bundled template


def test_html_part_escapes_what_people_typed() -> None:
    s = assigned(identified())
    s.case = s.case.model_copy(
        update={"customer": s.case.customer.model_copy(update={"name": "<script>x()</script>"})}
    )
    with_events(s, WaitingForCustomer(ASSIGNEE, "Is <b>this</b> the card?"))
    for message in rendered(s, s.outbox):
        assert message.html is not None and "<script>" not in message.html
        assert "<b>this</b>" not in message.html
    customer = next(m for m in rendered(s, s.outbox) if m.channel == "customer")
    assert customer.html is not None and "&lt;script&gt;x()&lt;/script&gt;" in customer.html
    assert "<script>x()</script>" in customer.body  # the plain part is plain text


def test_approvers_get_their_own_signed_link_and_nobody_else_gets_one() -> None:
    refund = Action(kind="refund", amount=250, currency="USD")
    s = assigned(identified())
    with_events(
        s,
        Acknowledged(ASSIGNEE),
        ApprovalRequested(
            ASSIGNEE, refund, ["sup-lee", "exec-holt"], ["sup-lee", "exec-holt"], LATER
        ),
        ApprovalDecided("approved", "sup-lee", "ok"),
    )
    messages = rendered(s, s.outbox, LINKS)
    asks = [m for m in messages if m.template == "approval_needed"]
    assert [m.recipient for m in asks] == ["sup-lee", "exec-holt"]
    for m in asks:
        assert m.html is not None and m.short is not None
        url = m.body.split("Approve or reject: ")[1].split()[0]
        assert (
            url.startswith("https://desk.example/approvals/") and url in m.html and url in m.short
        )
        claim = LINKS.read_approval(url.rsplit("/", 1)[1], now=T0)
        assert (claim.case_id, claim.approver) == ("M-1", m.recipient)
        assert claim.expires == int(LATER.timestamp())  # the approval's deadline
        with pytest.raises(InvalidToken, match="expired"):
            LINKS.read_approval(url.rsplit("/", 1)[1], now=LATER + timedelta(seconds=1))
    for m in messages:
        if m.template != "approval_needed":
            assert "/approvals/" not in m.body + (m.html or "") + (m.short or "")


def test_a_token_changed_or_signed_elsewhere_is_refused() -> None:
    s = assigned(identified())
    refund = Action(kind="refund", amount=250, currency="USD")
    with_events(s, ApprovalRequested(ASSIGNEE, refund, ["sup-lee"], ["sup-lee"], LATER))
    ask = next(m for m in rendered(s, s.outbox, LINKS) if m.template == "approval_needed")
    token = ask.body.split("/approvals/")[1].split()[0]
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    for bad in (
        flipped,
        token + "x",
        Links("another-secret-entirely", "https://x").approval_token(
            LINKS.read_approval(token, now=T0)
        ),
    ):
        with pytest.raises(InvalidToken):
            LINKS.read_approval(bad, now=T0)


def test_the_resolution_mail_asks_for_a_rating_and_offers_a_reopen() -> None:
    s = assigned(identified())
    with_events(s, Acknowledged(ASSIGNEE), Resolved(ASSIGNEE, "Refunded"))
    until = LATER + timedelta(days=7)
    evolve.apply(s, decisions.report_up(s, until), LATER)
    mail = next(m for m in rendered(s, s.outbox, LINKS) if m.template == "resolved")
    urls = [u for u in mail.body.split() if u.startswith("https://desk.example/")]
    ratings = [u for u in urls if "/feedback/" in u]
    assert [u.rsplit("score=", 1)[1] for u in ratings] == ["1", "2", "3", "4", "5"]
    reopen = next(u for u in urls if "/reopen/" in u)
    claim = LINKS.read_verdict(reopen.rsplit("/", 1)[1], now=LATER)
    assert (claim.case_id, claim.resolution, claim.expires) == ("M-1", 1, int(until.timestamp()))
    assert mail.html is not None and all(u.replace("&", "&amp;") in mail.html for u in urls)
    with pytest.raises(InvalidToken, match="expired"):
        LINKS.read_verdict(reopen.rsplit("/", 1)[1], now=until + timedelta(seconds=1))
    with pytest.raises(InvalidToken):  # an approval token is not a verdict token
        LINKS.read_verdict(LINKS.approval_token(ApprovalClaim("M-1", "x", "sup-lee", 2**31)))


def test_every_internal_notice_leads_to_the_case_page_and_no_customer_message_does() -> None:
    page = "https://desk.example/cases/"
    for m in SENT:
        if m.channel == "internal":
            assert page in m.body and page in (m.html or ""), m.template
            short = m.short or ""  # an approver's chat line carries their own decision link
            assert page in short or "https://desk.example/approvals/" in short, m.template
            assert "escalate acknowledge" not in m.body, m.template
        else:
            assert page not in m.body + (m.html or "") + (m.short or ""), m.template
