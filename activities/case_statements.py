"""The statements a case's activities run, each built once (per dialect where it differs) and
bound per call: a statement built per call costs its cache key, and through the ORM session
its compile state, on every call, and they run on SQLite's one writer for every case."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, func, select, update

from activities.records import (
    AssignmentRow,
    CaseRow,
    MessageRow,
    PolicyRow,
    ReportRow,
    TimelineRow,
    insert_for,
    table_of,
)

# the case row as a snapshot leaves it
SNAPSHOT_COLUMNS = (
    "run_id",
    "step",
    "severity",
    "stage",
    "tier",
    "department",
    "assignee",
    "sla_breached",
    "closed_at",
    "outcome",
    "ack_by",
    "resolve_by",
    "acknowledged",
    "paused",
    "warned",
    "breaches",
    "approval_due_by",
    "reopen_until",
)
REPORT_COLUMNS = (
    "case_id",
    "outcome",
    "severity",
    "department",
    "sla_breached",
    "duration_seconds",
    "created_at",
    "body",
)

CASES = table_of(CaseRow)
ASSIGNMENTS = table_of(AssignmentRow)
_this_case = CASES.c.case_id == bindparam("case")
_others = CASES.c.customer_id == bindparam("customer"), CASES.c.case_id != bindparam("case")

MOVE_FORWARD = (  # the snapshot only moves forward: a late retry of an older step changes nothing
    update(CASES)
    .where(_this_case, CASES.c.step < bindparam("step"))
    .values({c: bindparam(c) for c in (*SNAPSHOT_COLUMNS, "approvers")})
)
OPENED = select(CASES.c.closed_at, CASES.c.run_id).where(_this_case)
TAKE_OVER = (
    update(CASES).where(_this_case).values(run_id=bindparam("run"), step=0, stage="identify")
)
RECENT = (  # none opened after this one: a retry of open_and_assign reads the same
    select(CASES.c.case_id)
    .where(*_others, CASES.c.opened_at.between(bindparam("since"), bindparam("until")))
    .order_by(CASES.c.opened_at.desc())
    .limit(50)
)
OPEN_COUNT = select(func.count()).select_from(CASES).where(*_others, CASES.c.closed_at.is_(None))
CHOSEN = select(ASSIGNMENTS.c.person_id, ASSIGNMENTS.c.open_load, ASSIGNMENTS.c.assigned_at).where(
    ASSIGNMENTS.c.key == bindparam("key")
)
LOADS = (
    select(CASES.c.assignee, func.count())
    .where(CASES.c.assignee.in_(bindparam("ids", expanding=True)), CASES.c.closed_at.is_(None))
    .group_by(CASES.c.assignee)
)
HOLDER = select(CASES.c.assignee).where(_this_case, CASES.c.closed_at.is_(None))


@cache
def last_assigned(people: int) -> Select[Any]:
    """Each of `people` (bound as p0, p1, ...)'s last assignment: one lookup per person on
    (person_id, assigned_at), not a scan of their history."""
    return select(
        *(
            select(func.max(ASSIGNMENTS.c.assigned_at))
            .where(ASSIGNMENTS.c.person_id == bindparam(f"p{i}"))
            .scalar_subquery()
            for i in range(people)
        )
    )


@dataclass(frozen=True)
class Upserts:
    """The dialect's INSERT ... ON CONFLICT statements, rows as parameters."""

    open_case: Any  # the case's row, unless it is there: its id when inserted
    new_rows: dict[str, Any]  # by table: rows whose key is not there yet; their keys
    keep_report: Any  # a report of later case time replaces an earlier one
    keep_policy: Any  # a policy version once


@cache
def upserts(dialect: str) -> Upserts:
    insert = insert_for(dialect)
    new_rows = {}
    for entity in (TimelineRow, MessageRow):
        table = table_of(entity)
        stmt = insert(table).on_conflict_do_nothing(index_elements=["key"])
        new_rows[table.name] = stmt.returning(table.c.key)
    report = insert(table_of(ReportRow))
    newer = report.excluded.duration_seconds >= report.table.c.duration_seconds
    return Upserts(
        open_case=insert(CASES)
        .on_conflict_do_nothing(index_elements=["case_id"])
        .returning(CASES.c.case_id),
        new_rows=new_rows,
        keep_report=report.on_conflict_do_update(
            index_elements=["key"],
            set_={c: report.excluded[c] for c in REPORT_COLUMNS},
            where=newer,
        ),
        keep_policy=insert(table_of(PolicyRow)).on_conflict_do_nothing(index_elements=["version"]),
    )
