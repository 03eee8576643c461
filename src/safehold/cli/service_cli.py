"""Client and server commands of the backup-restore service (serve, policy, partition, agent)."""

from __future__ import annotations

import typer

from safehold.cli.drill import drill_app, report
from safehold.cli.group import group_app
from safehold.cli.service_admin import agents, config_app
from safehold.cli.service_client import partition_app, policy_app
from safehold.cli.service_server import agent, serve

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the service's commands to *app*."""
    app.command("serve")(serve)
    app.command("agent")(agent)
    app.command("agents")(agents)
    app.add_typer(policy_app, name="policy")
    app.add_typer(partition_app, name="partition")
    app.add_typer(config_app, name="config")
    app.add_typer(drill_app, name="drill")
    app.add_typer(group_app, name="group")
    app.command("report")(report)
