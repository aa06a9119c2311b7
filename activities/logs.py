"""Log lines: text for people by default; `ESCALATION_LOG_FORMAT=json` writes one JSON object
per line (for Loki, Elasticsearch, Cloud Logging) with the case id and the trace id where
there is one, so a log line leads to its case and to its trace."""

from __future__ import annotations

import logging
import os

from pythonjsonlogger.json import JsonFormatter

from activities import tracing

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class CaseContext(logging.Filter):
    """Adds `case_id` (from the SDK's workflow or activity context, or an `extra`) and
    `trace_id` to a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "case_id", None) is None:
            for attr in ("temporal_workflow", "temporal_activity"):
                info = getattr(record, attr, None)
                if isinstance(info, dict) and info.get("workflow_id"):
                    record.case_id = str(info["workflow_id"]).removeprefix("case-")
                    break
        if trace_id := tracing.trace_id():
            record.trace_id = trace_id
        return True


def configure(level: str | None = None) -> None:
    fmt = os.environ.get("ESCALATION_LOG_FORMAT", "text").lower()
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
        handler.addFilter(CaseContext())
    elif fmt == "text":
        handler.setFormatter(logging.Formatter(TEXT))
    else:
        raise ValueError(f"ESCALATION_LOG_FORMAT: expected text or json, got {fmt!r}")
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("LOG_LEVEL", "INFO"))
