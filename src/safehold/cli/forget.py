"""``safehold forget`` and ``safehold prune``: retention."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Annotated

import typer

from safehold.cli.app import app
from safehold.cli.common import (
    JsonOpt,
    PasswordFileOpt,
    RepoOpt,
    console,
    open_repo,
    print_json,
    progress_sink,
)
from safehold.core.errors import UsageError
from safehold.core.retention import KeepPolicy, apply_policy, parse_duration
from safehold.core.snapshot import Snapshot
from safehold.repo import forget as forget_snapshots
from safehold.repo import prune as prune_repo


@app.command()
def forget(
    keep_last: Annotated[int, typer.Option("--keep-last", min=-1, help="Keep the N newest.")] = 0,
    keep_hourly: Annotated[int, typer.Option("--keep-hourly", min=-1)] = 0,
    keep_daily: Annotated[int, typer.Option("--keep-daily", min=-1)] = 0,
    keep_weekly: Annotated[int, typer.Option("--keep-weekly", min=-1)] = 0,
    keep_monthly: Annotated[int, typer.Option("--keep-monthly", min=-1)] = 0,
    keep_yearly: Annotated[int, typer.Option("--keep-yearly", min=-1)] = 0,
    keep_within: Annotated[
        str | None, typer.Option("--keep-within", help="e.g. 7d, 2w, 1y")
    ] = None,
    keep_tag: Annotated[list[str] | None, typer.Option("--keep-tag")] = None,
    prune: Annotated[bool, typer.Option("--prune", help="Prune afterwards.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would go.")] = False,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """
    Remove snapshots by keep rules, per host and paths; --prune frees their space.

    Exit status: 0; 2 if no keep rule is given; 11 if prune finds the repository locked.
    """
    policy = KeepPolicy(
        last=keep_last,
        hourly=keep_hourly,
        daily=keep_daily,
        weekly=keep_weekly,
        monthly=keep_monthly,
        yearly=keep_yearly,
        within=parse_duration(keep_within) if keep_within else None,
        tags=tuple(keep_tag or ()),
    )
    if policy.is_empty():
        raise UsageError("no keep rule given: refusing to forget every snapshot")
    now = datetime.now(UTC)
    with open_repo(repo, password_file, load_index=prune) as r:
        groups: dict[tuple[str, tuple[str, ...]], list[Snapshot]] = defaultdict(list)
        for s in r.snapshots():
            groups[(s.host, s.paths)].append(s)
        report = []
        remove: list[Snapshot] = []
        for (host, paths), snaps in sorted(groups.items()):
            d = apply_policy(snaps, policy, now)
            remove.extend(d.remove)
            report.append(
                {
                    "host": host,
                    "paths": paths,
                    "keep": [s.id for s in d.keep],
                    "remove": [s.id for s in d.remove],
                    "reasons": d.reasons,
                }
            )
            if not json_output:
                console.print(
                    f"[bold]{host}[/] {', '.join(paths)}: "
                    f"keep {len(d.keep)}, remove {len(d.remove)}"
                )
                for s in d.remove:
                    console.print(
                        f"  {'would remove' if dry_run else 'remove'} "
                        f"{s.short_id} {s.time:%Y-%m-%d %H:%M}"
                    )
        if not dry_run:
            forget_snapshots(r, [s.id for s in remove])
        pruned = (
            prune_repo(r, dry_run=dry_run, progress=progress_sink(json_output)) if prune else None
        )
    if json_output:
        print_json({"groups": report, "prune": pruned})
    elif pruned is not None:
        _print_prune(pruned.packs_deleted, pruned.bytes_freed, dry_run)


def _print_prune(packs: int, freed: int, dry_run: bool) -> None:
    verb = "would delete" if dry_run else "deleted"
    console.print(f"prune: {verb} {packs} packs, freeing {freed} bytes")


@app.command()
def prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only show what would be freed.")
    ] = False,
    repo: RepoOpt = "",
    password_file: PasswordFileOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """
    Free the space that no snapshot uses. Safe beside running backups: it waits
    for their locks and never deletes what they may use.

    Exit status: 0; 11 locked by a running backup; 13 unreadable snapshots (nothing deleted).
    """
    with open_repo(repo, password_file) as r:
        result = prune_repo(r, dry_run=dry_run, progress=progress_sink(json_output))
    if json_output:
        print_json(result)
    else:
        _print_prune(result.packs_deleted, result.bytes_freed, dry_run)
