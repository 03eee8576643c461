"""
Server commands: ``safehold serve`` (the controller) and ``safehold agent``.

``serve`` runs FastAPI under uvicorn with the catalog (SQLite file by default,
or ``--catalog postgresql://…``), the scheduler and one embedded agent.
``agent`` pulls work from a controller over HTTP(S); no inbound port is needed.
"""

# ruff: noqa: ARG001 - serve's and agent's options are read from ctx.params, where the
# configuration file and the environment are merged in (cli/config.py).
from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path
from types import FrameType, ModuleType
from typing import Annotated, Any

import typer

from safehold.cli import service_setup
from safehold.core.errors import UsageError

__all__ = ["agent", "serve"]


def _composition_root() -> ModuleType:
    """
    Load ``safehold.bootstrap``, which wires the API, the agents and the service.

    Imported here, not at the top, so that engine commands never load the HTTP
    stacks; import-linter still sees the edge (the CLI sits above the root).
    """
    from safehold import bootstrap

    return bootstrap


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="SAFEHOLD_CONFIG",
        help="A TOML configuration file ([serve], [agent], [log]); flags and the "
        "environment override it.",
    ),
]
LogFormatOpt = Annotated[
    str, typer.Option("--log-format", help="Log lines as text, json or logfmt.")
]
LogLevelOpt = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="Port (19080, like SF's HTTP gateway).")
    ] = 19080,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Catalog, keys and password files.")
    ] = Path("./safehold-data"),
    catalog: Annotated[
        str | None,
        typer.Option("--catalog", help="SQLite path or postgresql://… (default: in --data-dir)"),
    ] = None,
    tokens_file: Annotated[
        Path | None,
        typer.Option(
            "--tokens-file", help="Lines of '<role> <token>' (reader/operator/admin/agent)."
        ),
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option("--password-file", help="The repository password (or SAFEHOLD_PASSWORD)."),
    ] = None,
    secret_key_file: Annotated[
        Path | None,
        typer.Option(
            "--secret-key-file", help="Key sealing policy secrets (or SAFEHOLD_SECRET_KEY)."
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="Serve HTTPS with this certificate.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="The certificate's private key.")
    ] = None,
    client_certs_file: Annotated[
        Path | None,
        typer.Option(
            "--client-certs-file",
            help="Lines of '<role> <thumbprint>' or '<role> CN=<name>': client certificates "
            "admitted over TLS, like SF's ClientCertThumbprints (needs --client-ca).",
        ),
    ] = None,
    client_ca: Annotated[
        Path | None,
        typer.Option("--client-ca", help="CA bundle that verifies client certificates."),
    ] = None,
    embedded_agent: Annotated[bool, typer.Option("--embedded-agent/--no-embedded-agent")] = True,
    agent_slots: Annotated[
        int, typer.Option("--agent-slots", help="Jobs the embedded agent runs at once.")
    ] = 2,
    max_running_jobs: Annotated[
        int,
        typer.Option(
            "--max-running-jobs",
            help="Jobs running at once across the fleet; 0: as many as the agents' slots take.",
        ),
    ] = 0,
    job_retention_hours: Annotated[
        float, typer.Option("--job-retention-hours", help="Finished jobs are kept this long.")
    ] = 7 * 24,
    tick_seconds: Annotated[float, typer.Option("--tick-seconds", help="Scheduler period.")] = 5.0,
    schedule_spread: Annotated[
        float,
        typer.Option(
            "--schedule-spread",
            min=0.0,
            max=1.0,
            help="Spread periodic backups over this share of their interval "
            "(0: each partition's first backup when backup is enabled, as SF).",
        ),
    ] = 1.0,
    agent_timeout: Annotated[
        float, typer.Option("--agent-timeout", help="Seconds without heartbeat before a job fails.")
    ] = 60.0,
    metrics_listen: Annotated[
        str | None,
        typer.Option(
            "--metrics-listen",
            help="Also serve /metrics, without an API token, at HOST:PORT (e.g. 127.0.0.1:9464).",
        ),
    ] = None,
    metrics_token_file: Annotated[
        Path | None,
        typer.Option("--metrics-token-file", help="With --metrics-listen: require this token."),
    ] = None,
    log_format: LogFormatOpt = "text",
    log_level: LogLevelOpt = "info",
    config: ConfigOpt = None,
) -> None:
    """Run the controller: the REST API, the scheduler and an embedded agent."""
    import uvicorn

    root = _composition_root()
    # The file and the environment fill in what no flag gave (cli/config.py).
    o = service_setup.serve_options(ctx, config)
    tls_cert, tls_key = o["tls_cert"], o["tls_key"]
    client_certs_file, client_ca = o["client_certs_file"], o["client_ca"]
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("give both --tls-cert and --tls-key, or neither")
    service_setup.start_logging(o)
    controller = root.build_controller(service_setup.settings_for(root.Settings, o))
    service_setup.serve_extras(controller.app, o)
    options: dict[str, Any] = {}
    if tls_cert is not None and tls_key is not None:
        options = {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key)}
    if client_certs_file is not None or client_ca is not None:
        options.update(_client_cert_options(controller.app, client_certs_file, client_ca, options))
    # log_config=None: uvicorn's loggers go through the handler of start_logging.
    server_config = uvicorn.Config(
        controller.app,
        host=o["host"],
        port=o["port"],
        log_level="warning",
        log_config=None,
        **options,
    )

    class Server(uvicorn.Server):
        # uvicorn finishes open requests before it stops the app: answer the
        # long-polled claims first, or a shutdown would wait out their wait.
        # From a thread: this runs in a signal handler, which must not take locks.
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            threading.Thread(target=controller.drain, name="drain", daemon=True).start()
            super().handle_exit(sig, frame)

    Server(server_config).run()


def _client_cert_options(
    app: Any, certs_file: Path | None, client_ca: Path | None, tls: dict[str, Any]
) -> dict[str, Any]:
    """Admit the client certificates of *certs_file*; return uvicorn's options for them."""
    if certs_file is None or client_ca is None or not tls:
        raise UsageError("--client-certs-file needs --client-ca, --tls-cert and --tls-key")
    # Imported here, not at the top: engine commands never load the HTTP stacks.
    from safehold.api import certauth

    certauth.install(app, certauth.ClientCertRoles.from_file(certs_file))
    options: dict[str, Any] = certauth.uvicorn_options(client_ca)
    return options


def agent(
    ctx: typer.Context,
    controller: Annotated[
        str | None,
        typer.Option(
            "--controller",
            help="The controller's URL; several replicas comma-separated (tried in turn).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar="SAFEHOLD_TOKEN", help="An agent token.", show_default=False
        ),
    ] = None,
    token_file: Annotated[Path | None, typer.Option("--token-file")] = None,
    agent_id: Annotated[
        str | None, typer.Option("--id", help="This agent's name (default: host name).")
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option("--password-file", help="The repository password (or SAFEHOLD_PASSWORD)."),
    ] = None,
    slots: Annotated[int, typer.Option("--slots", help="Jobs to run at once.")] = 1,
    ca_cert: Annotated[
        Path | None, typer.Option("--ca-cert", help="CA bundle for the controller's TLS.")
    ] = None,
    poll: Annotated[
        float,
        typer.Option("--poll", help="Seconds before claiming again after an empty claim."),
    ] = 1.0,
    claim_wait: Annotated[
        float,
        typer.Option(
            "--claim-wait",
            min=0.0,
            max=25.0,
            help="Seconds a claim waits at the controller for work (0: poll instead).",
        ),
    ] = 20.0,
    heartbeat: Annotated[
        float, typer.Option("--heartbeat", help="Seconds between heartbeats.")
    ] = 5.0,
    log_format: LogFormatOpt = "text",
    log_level: LogLevelOpt = "info",
    config: ConfigOpt = None,
) -> None:
    """Run an agent that pulls work from a controller."""
    # The file and the environment fill in what no flag gave (cli/config.py).
    o = service_setup.agent_options(ctx, config)
    token = o["token"]
    if token is None and o["token_file"] is not None:
        token = o["token_file"].read_text().strip()
    if not token:
        raise UsageError("an agent token is needed: --token, SAFEHOLD_TOKEN or --token-file")
    if not o["controller"]:
        raise UsageError("the controller's URL is needed: --controller or [agent] controller")
    service_setup.start_logging(o, token)
    runner = _composition_root().build_agent(
        o["controller"],
        token,
        o["agent_id"] or socket.gethostname(),
        password_file=o["password_file"],
        slots=o["slots"],
        verify=str(o["ca_cert"]) if o["ca_cert"] else True,
        poll_interval=o["poll"],
        claim_wait=o["claim_wait"],
        heartbeat_interval=o["heartbeat"],
    )

    def stop(signum: int, frame: object) -> None:
        del signum, frame
        runner.stop(timeout=0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner.run_forever()
