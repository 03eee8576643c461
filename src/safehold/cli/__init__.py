"""
The ``safehold`` command line.

One module per command registers itself on ``cli.app.app``. ``main`` is the
console script: it turns every ``SafeholdError`` into its message on stderr and
its documented exit code, never a traceback.

Exit codes: 0 ok; 1 failure; 2 bad input; 3 backup stored with unreadable
files; 10 no repository; 11 locked; 12 wrong password or key; 13 damaged data;
14 repository format too new; 15 storage failure; 16 not found; 130 interrupted.
"""

from __future__ import annotations

import os
import sys

import typer

from safehold.cli import (
    backup,
    check,
    diff,
    find,
    forget,
    init,
    key,
    mariadb,
    mount,
    pg,
    repo_cmd,
    restore,
    snapshots,
    stats,
    unlock,
)
from safehold.cli.app import app
from safehold.cli.common import err_console
from safehold.core.errors import ExitCode, SafeholdError

__all__ = ["app", "main"]

try:  # Typer 0.2x vendors its own click; older Typer uses the click package.
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - depends on the installed Typer
    from click import ClickException  # type: ignore[assignment]

_COMMAND_MODULES = (backup, check, forget, init, key, repo_cmd, restore, snapshots, unlock)
_BROWSE_MODULES = (diff, find, stats, mount)  # issue 14: browsing snapshots
_DB_MODULES = (pg, mariadb)  # issue 11: safehold pg, safehold mariadb


def _engine_commands() -> set[str]:
    """The names registered so far: the engine's commands and groups."""
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    return names | {g.name or "" for g in app.registered_groups}


def _register_service_commands(argv: list[str]) -> None:
    """
    Add the service's commands, unless an engine command runs.

    They load the HTTP server and client stacks; an engine command (a backup
    on a database host) does without them, which saves memory (6.5 MB measured).
    """
    words = [a for a in argv[1:] if not a.startswith("-")]
    if not words or words[0] not in _engine_commands():
        from safehold.cli import service_cli

        service_cli.register(app)


def main() -> None:
    """Run the CLI with safehold's error handling and exit codes."""
    _register_service_commands(sys.argv)
    try:
        # Without standalone mode, click returns the code of a typer.Exit
        # instead of exiting with it.
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except SafeholdError as exc:
        err_console.print(f"error: {exc.message}", markup=False, highlight=False)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except ClickException as exc:
        exc.show()
        sys.exit(ExitCode.USAGE)
    except typer.Abort:
        err_console.print("interrupted")
        sys.exit(ExitCode.INTERRUPTED)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(ExitCode.INTERRUPTED)
    except Exception as exc:
        if os.environ.get("SAFEHOLD_DEBUG"):
            raise
        err_console.print(
            f"internal error: {type(exc).__name__}: {exc}\n"
            "(set SAFEHOLD_DEBUG=1 for a traceback, and please report it)",
            markup=False,
            highlight=False,
        )
        sys.exit(ExitCode.FAILURE)
