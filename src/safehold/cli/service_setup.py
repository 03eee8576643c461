"""
What ``serve`` and ``agent`` do before they run: settings, logging, metrics listener.

``serve_options``/``agent_options`` merge the flags with the configuration file
and the environment (``cli/config.py``); ``start_logging`` installs the chosen
log format (``core/logctx.py``) and redacts the process's own secrets;
``serve_extras`` adds request ids to the API and starts the token-free metrics
listener if asked. The API modules are imported inside the functions that use
them, not at import time: engine commands never load the HTTP stacks.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import typer

from safehold.cli.config import AgentFile, LogFile, ServeFile, resolve
from safehold.core import logctx
from safehold.core.errors import UsageError

__all__ = ["agent_options", "serve_extras", "serve_options", "settings_for", "start_logging"]

log = logging.getLogger("safehold")

#: The ``serve`` options that are ``bootstrap.Settings`` fields, by option name.
_SETTINGS_FIELDS = {
    "data_dir": "data_dir",
    "catalog": "catalog",
    "password_file": "password_file",
    "secret_key_file": "secret_key_file",
    "tokens_file": "tokens_file",
    "embedded_agent": "embedded_agent",
    "agent_slots": "agent_slots",
    "max_running_jobs": "max_running_jobs",
    "job_retention_hours": "job_retention_hours",
    "port": "port",
    "tick_seconds": "tick_seconds",
    "schedule_spread": "schedule_spread",
    "alerts_file": "alerts_file",
    "agent_timeout": "agent_timeout_seconds",
}


def serve_options(ctx: typer.Context, config: Path | None) -> dict[str, Any]:
    """``serve``'s parameters with the file's ``[serve]`` and ``[log]`` and the environment."""
    return resolve(ctx, (ServeFile, LogFile), config)


def agent_options(ctx: typer.Context, config: Path | None) -> dict[str, Any]:
    """``agent``'s parameters with the file's ``[agent]`` and ``[log]`` and the environment."""
    return resolve(ctx, (AgentFile, LogFile), config)


def settings_for(settings_cls: type[Any], options: dict[str, Any]) -> Any:
    """The composition root's ``Settings`` from ``serve``'s resolved options."""
    fields = {field: options[name] for name, field in _SETTINGS_FIELDS.items() if name in options}
    return settings_cls(**fields)


def start_logging(options: dict[str, Any], *secrets: str | None) -> None:
    """Log in the chosen format and level; never print *secrets* or the environment's."""
    fmt = options.get("log_format") or "text"
    level = (options.get("log_level") or "info").lower()
    if fmt not in logctx.FORMATS:
        raise UsageError(f"--log-format {fmt!r}: use text, json or logfmt")
    if level not in ("debug", "info", "warning", "error"):
        raise UsageError(f"--log-level {level!r}: use debug, info, warning or error")
    logctx.configure(fmt, level.upper())
    names = ("SAFEHOLD_PASSWORD", "SAFEHOLD_TOKEN", "SAFEHOLD_SECRET_KEY")
    env = [os.environ.get(k) for k in names]
    tokens = os.environ.get("SAFEHOLD_TOKENS", "")
    env += [x.split(":", 1)[-1] for x in tokens.split(",") if x.strip()]
    logctx.redact([*env, *secrets])


def _token_from(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read the metrics token file {path}: {exc.strerror}") from exc
    if not token:
        raise UsageError(f"the metrics token file {path} is empty")
    return token


def serve_extras(app: Any, options: dict[str, Any]) -> Any:
    """
    Add request ids and access lines to *app*; start the metrics listener if asked.

    Returns the ``MetricsServer`` (or None). Raises ``UsageError`` for a bad
    ``--metrics-listen`` or an address already in use.
    """
    # Imported here, not at the top: engine commands never load the HTTP stacks.
    from safehold.api import metrics_http, requestlog

    requestlog.install(app)
    listen = options.get("metrics_listen")
    if not listen:
        if options.get("metrics_token_file") is not None:
            raise UsageError("--metrics-token-file needs --metrics-listen")
        return None
    try:
        host, port = metrics_http.parse_listen(listen)
    except ValueError as exc:
        raise UsageError(f"--metrics-listen: {exc}") from None
    token = _token_from(options.get("metrics_token_file"))
    logctx.redact([token])
    try:
        server = metrics_http.MetricsServer(
            app.state.registry, host, port, token, render=app.state.metrics_page.get
        ).start()
    except OSError as exc:
        raise UsageError(f"--metrics-listen {listen}: {exc.strerror}") from exc
    log.info(
        "metrics on http://%s:%d/metrics (%s)",
        host,
        server.port,
        "scrape token required" if token else "no token",
    )
    return server
