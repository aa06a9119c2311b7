"""The search attributes operators filter cases by in the Temporal UI."""

from __future__ import annotations

from typing import Any

from temporalio.common import SearchAttributeKey, SearchAttributeUpdate

CASE_ID = SearchAttributeKey.for_keyword("CaseId")
CASE_STAGE = SearchAttributeKey.for_keyword("CaseStage")
CASE_TIER = SearchAttributeKey.for_int("CaseTier")
CASE_SEVERITY = SearchAttributeKey.for_keyword("CaseSeverity")
CASE_DEPARTMENT = SearchAttributeKey.for_keyword("CaseDepartment")
CASE_ASSIGNEE = SearchAttributeKey.for_keyword("CaseAssignee")
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
SLA_BREACHED = SearchAttributeKey.for_bool("SlaBreached")
SLA_DEADLINE = SearchAttributeKey.for_datetime("SlaDeadline")

ALL: list[SearchAttributeKey[Any]] = [
    CASE_ID,
    CASE_STAGE,
    CASE_TIER,
    CASE_SEVERITY,
    CASE_DEPARTMENT,
    CASE_ASSIGNEE,
    CUSTOMER_ID,
    SLA_BREACHED,
    SLA_DEADLINE,
]


def dev_server_flags() -> list[str]:
    """`temporal server start-dev` flags that register every attribute."""
    kinds = {"KEYWORD": "Keyword", "INT": "Int", "BOOL": "Bool", "DATETIME": "Datetime"}
    flags = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}={kinds[key.indexed_value_type.name]}"]
    return flags


def changes(wanted: dict[str, Any], sent: dict[str, Any]) -> list[SearchAttributeUpdate[Any]]:
    """The updates that bring the attributes from `sent` to `wanted` (None: unset), noting
    them in `sent`; an attribute never set is not unset."""
    keys = {k.name: k for k in ALL}
    updates: list[SearchAttributeUpdate[Any]] = []
    for name, value in wanted.items():
        if (name in sent and sent[name] == value) or (value is None and name not in sent):
            continue
        sent[name] = value
        key = keys[name]
        updates.append(key.value_unset() if value is None else key.value_set(value))
    return updates
