"""
The recoverability report: per partition, the objectives against what was measured.

For each partition: the RPO its backup schedule allows (one period: data written
just after a backup waits that long for the next), the RPO its newest drill
achieved, its newest drill's measured RTO, and the trend over its last 30 drills.
What falls short of an objective (or has no drill at all, or failed its last
one) is listed first. ``render`` writes it as JSON, Markdown or HTML; the HTML
plots each trend as an inline SVG written here (no plotting library, no script).
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any, Literal

from safehold.core.drill import parse_drill_policy
from safehold.core.errors import SafeholdError
from safehold.core.policy import effective_config, format_duration
from safehold.core.slots import period
from safehold.core.snapshot import format_time
from safehold.service.context import ServiceContext
from safehold.service.policies import load_policy

__all__ = ["FORMATS", "PartitionReport", "Report", "build_report", "render"]

TREND = 30
FORMATS = ("json", "markdown", "html")
Format = Literal["json", "markdown", "html"]


@dataclass
class PartitionReport:
    """One partition's line of the report."""

    partition_id: str
    application: str
    service: str
    drill_policy: str | None
    rpo_objective: float | None
    rto_objective: float | None
    rpo_by_schedule: float | None
    rpo_achieved: float | None
    rto_last: float | None
    last_drill_state: str | None
    last_drill_utc: str | None
    trend: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    shortfalls: list[str] = field(default_factory=list)


@dataclass
class Report:
    """The whole report."""

    generated_utc: str
    partitions: list[PartitionReport]

    def to_json(self) -> dict[str, Any]:
        """The JSON shape (seconds as numbers, times in UTC)."""
        return {
            "GeneratedUtc": self.generated_utc,
            "ShortOfObjectives": sum(1 for p in self.partitions if p.shortfalls),
            "Partitions": [asdict(p) for p in self.partitions],
        }


def _secs(value: float | None) -> str:
    """Seconds for people: '2.5 s' under a minute, else an ISO 8601 duration."""
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    return format_duration(timedelta(seconds=round(value)))


def _over(measured: float | None, objective: float | None) -> bool:
    return measured is not None and objective is not None and measured > objective


def _shortfalls(r: PartitionReport) -> list[str]:
    out = []
    if r.drill_policy is None:
        out.append("no drill policy: its restores are not proven")
    elif r.last_drill_state is None:
        out.append("no drill has run yet")
    elif r.last_drill_state != "Success":
        out.append(f"the last drill ended {r.last_drill_state}")
    goal_rpo, goal_rto = _secs(r.rpo_objective), _secs(r.rto_objective)
    if _over(r.rpo_by_schedule, r.rpo_objective):
        out.append(f"RPO by schedule {_secs(r.rpo_by_schedule)} exceeds the objective {goal_rpo}")
    if _over(r.rpo_achieved, r.rpo_objective):
        out.append(f"RPO achieved {_secs(r.rpo_achieved)} exceeds the objective {goal_rpo}")
    if _over(r.rto_last, r.rto_objective):
        out.append(f"RTO measured {_secs(r.rto_last)} exceeds the objective {goal_rto}")
    return out


def build_report(ctx: ServiceContext) -> Report:
    """Read the catalog and build the report (shortfalls first, then by partition id)."""
    with ctx.uow() as uow:
        now = ctx.clock()
        parts = uow.partitions.list()
        backup_names = uow.mappings.all()
        drill_maps = uow.drills.mappings()
        drill_names = {e: n for e, (n, _) in drill_maps.items()}
        policies = {}
        for doc in uow.drills.list_policies():
            try:
                policies[doc["Name"]] = parse_drill_policy(doc)
            except SafeholdError:
                continue
        periods: dict[str, float | None] = {}
        for name in set(backup_names.values()):
            try:
                periods[name] = period(load_policy(ctx, uow, name).schedule, now).total_seconds()
            except SafeholdError:
                periods[name] = None
        states = uow.drills.states()
        runs = {p.partition_id: uow.drills.runs(p.partition_id, TREND) for p in parts}
    out = []
    for p in parts:
        backup = effective_config(p.chain(), backup_names, set()).policy_name
        drill = effective_config(p.chain(), drill_names, set()).policy_name
        pol = policies.get(drill) if drill else None
        st = states.get(p.partition_id)
        r = PartitionReport(
            partition_id=p.partition_id,
            application=p.application,
            service=p.service,
            drill_policy=drill,
            rpo_objective=pol.rpo.total_seconds() if pol and pol.rpo else None,
            rto_objective=pol.rto.total_seconds() if pol and pol.rto else None,
            rpo_by_schedule=periods.get(backup) if backup else None,
            rpo_achieved=st.rpo_seconds if st else None,
            rto_last=st.rto_seconds if st else None,
            last_drill_state=st.last_state if st else None,
            last_drill_utc=format_time(st.last_finished_at) if st and st.last_finished_at else None,
            trend=[
                {
                    "Utc": format_time(run.created_at),
                    "State": run.state,
                    "RtoSeconds": run.rto_seconds,
                    "RpoSeconds": run.rpo_seconds,
                }
                for run in reversed(runs.get(p.partition_id, []))
                if run.finished
            ],
        )
        r.shortfalls = _shortfalls(r)
        out.append(r)
    out.sort(key=lambda r: (not r.shortfalls, r.application, r.service, r.partition_id))
    return Report(format_time(now), out)


# --- Rendering -----------------------------------------------------------------------


def _markdown(rep: Report) -> str:
    lines = [
        "# Recoverability report",
        "",
        f"Generated {rep.generated_utc}. "
        f"{sum(1 for p in rep.partitions if p.shortfalls)} of {len(rep.partitions)} partitions "
        "fall short of their objectives.",
        "",
        "| partition | service | drill policy | RPO objective | RPO by schedule | RPO achieved "
        "| RTO objective | RTO last | last drill | short of |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in rep.partitions:
        cells = [
            p.partition_id,
            p.service,
            p.drill_policy or "-",
            _secs(p.rpo_objective),
            _secs(p.rpo_by_schedule),
            _secs(p.rpo_achieved),
            _secs(p.rto_objective),
            _secs(p.rto_last),
            p.last_drill_state or "-",
            "; ".join(p.shortfalls) or "ok",
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    return "\n".join(lines)


def _svg(trend: list[dict[str, Any]], objective: float | None) -> str:
    """An inline SVG of the measured RTO over the drills (failures in red at the bottom)."""
    w, h, pad = 240, 60, 4
    values = [t["RtoSeconds"] for t in trend if t["RtoSeconds"] is not None]
    top = max([*values, objective or 0.0, 1e-9])
    n = max(len(trend) - 1, 1)

    def y(v: float) -> float:
        return float(h - pad - (h - 2 * pad) * v / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" role="img" aria-label="RTO over the last drills">',
        f'<rect width="{w}" height="{h}" fill="#fafafa" stroke="#ddd"/>',
    ]
    if objective is not None:
        parts.append(
            f'<line x1="0" x2="{w}" y1="{y(objective):.1f}" y2="{y(objective):.1f}" '
            'stroke="#e0a000" stroke-dasharray="4 3"/>'
        )
    points = []
    for i, t in enumerate(trend):
        x = pad + (w - 2 * pad) * i / n
        if t["RtoSeconds"] is None:
            parts.append(f'<circle cx="{x:.1f}" cy="{h - pad}" r="3" fill="#c00"/>')
        else:
            points.append(f"{x:.1f},{y(t['RtoSeconds']):.1f}")
            parts.append(f'<circle cx="{x:.1f}" cy="{y(t["RtoSeconds"]):.1f}" r="2" fill="#06c"/>')
    if len(points) > 1:
        parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#06c"/>')
    parts.append("</svg>")
    return "".join(parts)


def _html(rep: Report) -> str:
    e = html.escape
    rows = []
    for p in rep.partitions:
        short = "<br>".join(e(s) for s in p.shortfalls) or "ok"
        cls = ' class="short"' if p.shortfalls else ""
        rows.append(
            f"<tr{cls}><td><code>{e(p.partition_id)}</code><br>{e(p.service)}</td>"
            f"<td>{e(p.drill_policy or '-')}</td>"
            f"<td>{e(_secs(p.rpo_objective))}</td><td>{e(_secs(p.rpo_by_schedule))}</td>"
            f"<td>{e(_secs(p.rpo_achieved))}</td><td>{e(_secs(p.rto_objective))}</td>"
            f"<td>{e(_secs(p.rto_last))}</td><td>{e(p.last_drill_state or '-')}</td>"
            f"<td>{_svg(p.trend, p.rto_objective)}</td><td>{short}</td></tr>"
        )
    short_n = sum(1 for p in rep.partitions if p.shortfalls)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>safehold recoverability report</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}"
        "tr.short td{background:#fff3f3}</style></head><body>"
        "<h1>Recoverability report</h1>"
        f"<p>Generated {e(rep.generated_utc)}. {short_n} of {len(rep.partitions)} partitions "
        "fall short of their objectives. The plots show the measured RTO of the last "
        f"{TREND} drills (dashed: the objective; red: a failed drill).</p>"
        "<table><tr><th>partition</th><th>drill policy</th><th>RPO objective</th>"
        "<th>RPO by schedule</th><th>RPO achieved</th><th>RTO objective</th><th>RTO last</th>"
        "<th>last drill</th><th>RTO trend</th><th>short of</th></tr>"
        + "".join(rows)
        + "</table></body></html>\n"
    )


def render(rep: Report, fmt: Format) -> str:
    """The report as JSON, Markdown or HTML."""
    if fmt == "json":
        return json.dumps(rep.to_json(), indent=2) + "\n"
    if fmt == "markdown":
        return _markdown(rep)
    return _html(rep)
