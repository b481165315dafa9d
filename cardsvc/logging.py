"""Structured JSON logs with a redaction filter.

Keys, PINs, passwords and tokens are dropped; card numbers, ASNs and resident IDs are masked
wherever they appear (field values or free text), so that no log line carries them in full
(DESIGN §12).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

REDACTED = "[REDACTED]"

# Field names whose values are secrets in any form.
_SECRET_FIELD = re.compile(
    r"(^|_)(key|keys|pin|password|passwd|secret|token|kt|lmk|authorization)($|_)", re.I
)
# 18-character resident ID (GB 11643): 17 digits and a digit or X.
_RESIDENT_ID = re.compile(r"(?<![0-9A-Za-z])(\d{3})\d{11}(\d{3}[\dXx])(?![0-9A-Za-z])")
# 16- to 19-digit card numbers / PAN-like runs.
_CARD_NO = re.compile(r"(?<!\d)(\d{4})\d{8,11}(\d{4})(?!\d)")
# Long hex runs (keys, cryptograms) of 32 hex digits or more.
_LONG_HEX = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{32,}(?![0-9A-Fa-f])")


def mask_text(text: str) -> str:
    text = _RESIDENT_ID.sub(lambda m: f"{m.group(1)}{'*' * 11}{m.group(2)}", text)
    text = _CARD_NO.sub(lambda m: f"{m.group(1)}********{m.group(2)}", text)
    return _LONG_HEX.sub(REDACTED, text)


def redact(value: Any, field: str = "") -> Any:
    if field and _SECRET_FIELD.search(field):
        return REDACTED
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, bytes):
        return REDACTED
    return value


def _redact_processor(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for field, value in list(event_dict.items()):
        event_dict[field] = redact(value, field if field != "event" else "")
    return event_dict


def configure_logging(level: str = "INFO", json: bool = True, stream: Any = None) -> None:
    """Route structlog and the standard library (uvicorn, alembic) through one JSON renderer."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact_processor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # aiosqlite's DEBUG lines carry every statement's bound values; SQLAlchemy's own statement
    # log hides them (hide_parameters), so nothing below INFO is taken from the driver.
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, root.level))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
