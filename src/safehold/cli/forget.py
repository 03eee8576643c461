"""``safehold forget`` and ``safehold prune``: retention."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from safehold.cli.app import app
from safehold.cli.common import (
    HostFilterOpt,
    JsonOpt,
    PasswordFileOpt,
    PathFilterOpt,
    RepoOpt,
    TagFilterOpt,
    console,
    open_repo,
    print_json,
    progress_sink,
    snapshot_filter,
)
from safehold.core.errors import UsageError
from safehold.core.retention import KeepPolicy, apply_policy, hold_back, parse_duration
from safehold.core.snapshot import Snapshot
from safehold.repo import PruneResult
from safehold.repo import prune as prune_repo
from safehold.repo.holds import snapshot_holds
from safehold.repo.prune import forget_held
from safehold.storage import Hold


@app.command()
def forget(
    keep_last: Annotated[int, typer.Option("--keep-last", min=0, help="Keep the N newest.")] = 0,
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
    host: HostFilterOpt = None,
    tag: TagFilterOpt = None,
    path: PathFilterOpt = None,
    group_by: Annotated[
        str,
        typer.Option(
            "--group-by",
            help="Apply the rules per group of snapshots with the same host, paths and/or "
            "tags: any of host,paths,tags, or '' for one group.",
        ),
    ] = "host,paths",
    json_output: JsonOpt = False,
) -> None:
    """
    Remove snapshots by keep rules, per host and paths; --prune frees their space.

    As in restic, the rules apply to each group of snapshots (--group-by,
    host and paths by default); --host, --tag and --path consider only some.

    Exit status: 0; 2 if no keep rule is given; 11 if prune finds the repository locked.
    """
    policy = KeepPolicy(
        last=keep_last,
        hourly=keep_hourly,
        daily=keep_daily,
        weekly=keep_weekly,
        monthly=keep_monthly,
        yearly=keep_yearly,
        within=_keep_within(keep_within),
        tags=tuple(keep_tag or ()),
    )
    if policy.is_empty():
        raise UsageError("no keep rule given: refusing to forget every snapshot")
    by = _parse_group_by(group_by)
    where = snapshot_filter(host, tag, path)
    now = datetime.now(UTC)
    with open_repo(repo, password_file, load_index=prune) as r:
        groups: dict[_GroupKey, list[Snapshot]] = defaultdict(list)
        for s in r.snapshots():
            if where.matches(s):
                groups[_group_key(s, by)].append(s)
        report = []
        remove: list[Snapshot] = []
        for (g_host, g_paths, g_tags), snaps in sorted(groups.items()):
            d = apply_policy(snaps, policy, now)
            # Held snapshots stay, with their chains: forget never tries to delete them.
            holds = snapshot_holds(r, [s.id for s in d.remove])
            d = hold_back(d, {sid: h.until for sid, h in holds.items()})
            remove.extend(d.remove)
            report.append(
                {
                    "host": g_host,
                    "paths": g_paths,
                    "tags": g_tags,
                    "keep": [s.id for s in d.keep],
                    "remove": [s.id for s in d.remove],
                    "held": list(holds.values()),
                    "reasons": d.reasons,
                }
            )
            if not json_output:
                console.print(
                    f"[bold]{g_host or '*'}[/] {', '.join(g_paths) or '*'}"
                    f"{' (' + ','.join(g_tags) + ')' if g_tags else ''}: "
                    f"keep {len(d.keep)}, remove {len(d.remove)}"
                )
                for s in d.remove:
                    console.print(
                        f"  {'would remove' if dry_run else 'remove'} "
                        f"{s.short_id} {s.time:%Y-%m-%d %H:%M}"
                    )
                _print_held(holds.values(), "  keep ")
        if not dry_run:
            forget_held(r, [s.id for s in remove])
        pruned = (
            prune_repo(r, dry_run=dry_run, progress=progress_sink(json_output)) if prune else None
        )
    if json_output:
        print_json({"groups": report, "prune": pruned})
    elif pruned is not None:
        _print_prune(pruned, dry_run)


_GroupKey = tuple[str, tuple[str, ...], tuple[str, ...]]
_GROUP_FIELDS = ("host", "paths", "tags")


def _parse_group_by(text: str) -> frozenset[str]:
    fields = frozenset(f.strip() for f in text.split(",") if f.strip())
    unknown = fields - set(_GROUP_FIELDS)
    if unknown:
        raise UsageError(
            f"--group-by: unknown field {sorted(unknown)[0]!r}; use host, paths and/or tags"
        )
    return fields


def _group_key(s: Snapshot, by: frozenset[str]) -> _GroupKey:
    """Group as restic does: the paths (and tags) as a sorted set."""
    return (
        s.host if "host" in by else "",
        tuple(sorted(s.paths)) if "paths" in by else (),
        tuple(sorted(set(s.tags))) if "tags" in by else (),
    )


def _print_prune(result: PruneResult, dry_run: bool) -> None:
    verb = "would delete" if dry_run else "deleted"
    console.print(f"prune: {verb} {result.packs_deleted} packs, freeing {result.bytes_freed} bytes")
    if result.held:
        ends = [h.until for h in result.held if h.until is not None]
        last = f", the last until {max(ends):%Y-%m-%d %H:%M} UTC" if ends else ""
        console.print(f"prune: kept {len(result.held)} held objects{last}:")
        _print_held(result.held, "  kept ")
    if result.holds_extended:
        console.print(f"prune: held {result.holds_extended} objects as long as the newest snapshot")


def _print_held(holds: Iterable[Hold], lead: str, limit: int = 20) -> None:
    """Name each held object and until when (the first *limit*; --json lists all)."""
    holds = list(holds)
    for h in holds[:limit]:
        console.print(f"{lead}{h.describe()}", markup=False, highlight=False, soft_wrap=True)
    if len(holds) > limit:
        console.print(f"{lead}… and {len(holds) - limit} more (--json lists them all)")


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
        _print_prune(result, dry_run)


def _keep_within(text: str | None) -> timedelta | None:
    """Parse ``--keep-within``; a span too long to count back from now is bad input (exit 2)."""
    if not text:
        return None
    try:
        span = parse_duration(text)
        datetime.now(UTC) - span  # only whether it can be computed
    except OverflowError as exc:
        raise UsageError(
            f"invalid --keep-within {text!r}: it reaches back before the year 1"
        ) from exc
    return span
