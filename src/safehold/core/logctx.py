"""
Structured logs with the standard library: context ids, three formats, and redaction.

``bind(job_id=…, partition_id=…)`` puts ids into a ``contextvars`` context for
the code it wraps (a job on an agent's thread, a request in the API), and every
log record emitted there carries them, whichever logger emits it. ``configure``
installs one handler on the root logger with a formatter for ``text``
(``time level logger message key=value…``), ``json`` (one object a line) or
``logfmt`` (``key=value`` pairs, quoted where needed).

Secrets: values registered with ``redact`` (the repository password, tokens,
a job's storage credentials while it runs) are replaced by ``****`` in every
formatted line, message and fields alike, as a last line of defence; nothing
is meant to log them in the first place.

Standard library only (no structlog): the ids travel in contextvars, which
threads started with ``contextvars.copy_context`` and Starlette's thread pool
carry; third-party loggers (uvicorn, httpx, alembic) get the same format.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "FORMATS",
    "ContextFilter",
    "LogFormat",
    "bind",
    "configure",
    "current",
    "job_context",
    "make_formatter",
    "redact",
]

LogFormat = Literal["text", "json", "logfmt"]
FORMATS: tuple[str, ...] = ("text", "json", "logfmt")

#: The ids carried by every record emitted in a context, in this order.
CONTEXT_KEYS = ("request_id", "job_id", "partition_id", "agent_id", "kind")
#: Storage fields whose values are secrets (as ``service.secrets`` seals them).
SECRET_FIELDS = frozenset(
    {"PrimaryPassword", "SecondaryPassword", "ConnectionString", "SecretAccessKey"}
)

_EMPTY: Mapping[str, str] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "safehold_log_context", default=_EMPTY
)
_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def current() -> Mapping[str, str]:
    """The ids bound in this context."""
    return _context.get()


@contextmanager
def bind(**ids: object) -> Iterator[None]:
    """Add *ids* (``None`` values skipped) to every log record emitted inside the block."""
    token = _context.set({**_context.get(), **{k: str(v) for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def redact(values: Iterable[str | None]) -> None:
    """Never print these values in a log line (strings of 4 characters or more)."""
    with _secrets_lock:
        _secrets.update(v for v in values if v and len(v) >= 4)


def _forget(values: Iterable[str]) -> None:
    with _secrets_lock:
        _secrets.difference_update(values)


@contextmanager
def job_context(
    job_id: str, partition_id: str, agent_id: str, kind: str, storage: Mapping[str, Any] | None
) -> Iterator[None]:
    """
    Bind a job's ids for the block, and redact its storage's secrets meanwhile.

    The secrets are forgotten after the block unless another job registered the
    same values (they stay then: redacting too much is harmless).
    """
    values = {str(v) for k, v in (storage or {}).items() if k in SECRET_FIELDS and v}
    with _secrets_lock:
        new = values - _secrets
    redact(new)
    try:
        with bind(job_id=job_id, partition_id=partition_id, agent_id=agent_id, kind=kind):
            yield
    finally:
        _forget(new)


def _scrub(text: str) -> str:
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        if s in text:
            text = text.replace(s, "****")
    return text


class ContextFilter(logging.Filter):
    """Copies the bound ids onto each record (as attributes named by ``CONTEXT_KEYS``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Attach the context; never drops a record."""
        ctx = _context.get()
        record.safehold_ctx = dict(ctx)
        return True


def _fields(record: logging.LogRecord) -> dict[str, str]:
    ctx: dict[str, str] = getattr(record, "safehold_ctx", None) or dict(_context.get())
    return {k: ctx[k] for k in CONTEXT_KEYS if k in ctx} | {
        k: v for k, v in ctx.items() if k not in CONTEXT_KEYS
    }


def _stamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def _message(record: logging.LogRecord, fmt: logging.Formatter) -> str:
    msg = record.getMessage()
    if record.exc_info:
        msg += "\n" + fmt.formatException(record.exc_info)
    return msg


class TextFormatter(logging.Formatter):
    """``2026-12-01T15:00:00.000+00:00 INFO safehold.agent message job_id=… partition_id=…``."""

    def format(self, record: logging.LogRecord) -> str:
        """One line (plus a traceback if any), secrets scrubbed."""
        extra = " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())
        line = f"{_stamp(record)} {record.levelname} {record.name} {_message(record, self)}"
        return _scrub(f"{line} {extra}" if extra else line)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, then the context ids."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON, secrets scrubbed."""
        doc = {
            "time": _stamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _message(record, self),
            **_fields(record),
        }
        return _scrub(json.dumps(doc, ensure_ascii=False))


def _logfmt_value(value: str) -> str:
    if value and not any(c in value for c in ' ="\\\n\t'):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    """``time=… level=info logger=… msg="…" job_id=…`` (Heroku's logfmt; Loki parses it)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as logfmt pairs, secrets scrubbed."""
        pairs = {
            "time": _stamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _message(record, self),
            **_fields(record),
        }
        return _scrub(" ".join(f"{k}={_logfmt_value(v)}" for k, v in pairs.items()))


def make_formatter(fmt: str) -> logging.Formatter:
    """The formatter for ``text``, ``json`` or ``logfmt``."""
    formatters: dict[str, type[logging.Formatter]] = {
        "text": TextFormatter,
        "json": JsonFormatter,
        "logfmt": LogfmtFormatter,
    }
    if fmt not in formatters:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    return formatters[fmt]()


def configure(fmt: str = "text", level: int | str = logging.INFO, stream: Any = None) -> None:
    """Send every logger's records to *stream* (stderr) in *fmt*, replacing earlier handlers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request at INFO: an agent's claim each second. Kept for debug.
    quiet = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    logging.getLogger("httpx").setLevel(quiet)
