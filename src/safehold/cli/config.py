"""
The configuration file (TOML) of ``safehold serve`` and ``safehold agent``, via pydantic-settings.

One file may hold both commands' settings: a ``[serve]`` table, an ``[agent]``
table and a ``[log]`` table shared by both (see ``deploy/safehold.toml`` and
docs/service.md, "Configuration file"). It is named by ``--config FILE`` or
``SAFEHOLD_CONFIG``.

Precedence, highest first: a flag given on the command line (or an option's
own environment variable, such as ``SAFEHOLD_TOKEN``); the environment
(``SAFEHOLD_SERVE_<KEY>``, ``SAFEHOLD_AGENT_<KEY>``, ``SAFEHOLD_LOG_<KEY>``); the
file; the flag's default. The models below declare no defaults of their own
(every key is optional): the defaults are the flags', which map onto
``bootstrap.Settings``. An unknown key or a value of the wrong type stops the
command with exit 2, naming the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

import typer
from pydantic import ValidationError
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from safehold.core.errors import UsageError

__all__ = ["AgentFile", "LogFile", "ServeFile", "load_file", "resolve"]


class _Section(BaseSettings):
    """A table of the file, overridden by the environment."""

    table: ClassVar[str] = ""
    file_values: ClassVar[dict[str, Any]] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment first, then the file's table (``init_settings`` is not used)."""
        del init_settings, dotenv_settings, file_secret_settings
        return env_settings, InitSettingsSource(settings_cls, init_kwargs=cls.file_values)


class ServeFile(_Section):
    """``[serve]``: the controller (the keys are the long flags, with ``_`` for ``-``)."""

    model_config = SettingsConfigDict(env_prefix="SAFEHOLD_SERVE_", extra="forbid")
    table: ClassVar[str] = "serve"

    host: str | None = None
    port: int | None = None
    data_dir: Path | None = None
    catalog: str | None = None
    tokens_file: Path | None = None
    password_file: Path | None = None
    secret_key_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_certs_file: Path | None = None
    client_ca: Path | None = None
    embedded_agent: bool | None = None
    agent_slots: int | None = None
    max_running_jobs: int | None = None
    job_retention_hours: float | None = None
    tick_seconds: float | None = None
    schedule_spread: float | None = None
    alerts_file: Path | None = None
    agent_timeout: float | None = None
    metrics_listen: str | None = None
    metrics_token_file: Path | None = None


class AgentFile(_Section):
    """``[agent]``: a remote agent."""

    model_config = SettingsConfigDict(env_prefix="SAFEHOLD_AGENT_", extra="forbid")
    table: ClassVar[str] = "agent"

    controller: str | None = None
    token_file: Path | None = None
    agent_id: str | None = None
    password_file: Path | None = None
    slots: int | None = None
    ca_cert: Path | None = None
    poll: float | None = None
    claim_wait: float | None = None
    heartbeat: float | None = None


class LogFile(_Section):
    """``[log]``: how both commands log."""

    model_config = SettingsConfigDict(env_prefix="SAFEHOLD_LOG_", extra="forbid")
    table: ClassVar[str] = "log"

    log_format: Literal["text", "json", "logfmt"] | None = None
    log_level: Literal["debug", "info", "warning", "error"] | None = None


#: ``[log]`` keys as written in the file, to their field names.
_LOG_KEYS = {"format": "log_format", "level": "log_level"}


def load_file(path: Path | None) -> dict[str, Any]:
    """Read the TOML file (``{}`` when *path* is None); raise ``UsageError`` if unreadable."""
    if path is None:
        return {}
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise UsageError(f"cannot read the configuration file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from exc
    unknown = set(doc) - {"serve", "agent", "log"}
    if unknown:
        raise UsageError(f"{path}: unknown table(s) {', '.join(sorted(unknown))}")
    return doc


def _section(model: type[_Section], doc: dict[str, Any], path: Path | None) -> dict[str, Any]:
    raw = doc.get(model.table, {})
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: [{model.table}] must be a table")
    if model is LogFile:
        raw = {_LOG_KEYS.get(k, k): v for k, v in raw.items()}
    model.file_values = raw
    try:
        return model().model_dump(exclude_unset=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(x) for x in first["loc"])
        where = f"{path}: " if path else ""
        raise UsageError(
            f"{where}[{model.table}] {key}: {first['msg']} (or its SAFEHOLD_ variable)"
        ) from None
    finally:
        model.file_values = {}


def resolve(
    ctx: typer.Context, models: tuple[type[_Section], ...], config: Path | None
) -> dict[str, Any]:
    """
    The command's parameters after the file and the environment are applied.

    *ctx* is the command's click context: a parameter given on the command line
    (or by its own environment variable) wins; otherwise a value from the
    environment or the file; otherwise the flag's default.
    """
    doc = load_file(config)
    values = dict(ctx.params)
    for model in models:
        for name, value in _section(model, doc, config).items():
            source = ctx.get_parameter_source(name)
            # By name: Typer vendors its own click, whose enum is not click's.
            if source is None or source.name not in ("COMMANDLINE", "ENVIRONMENT"):
                values[name] = value
    return values
