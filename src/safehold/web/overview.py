"""
The overview and the recovery points: health counts, late partitions first, at any fleet size.

The fleet's health is ``service.health``'s shared ``FleetView`` (computed at most
once a second, in the background once it exists). Only its first computation
is slow (seconds at 10,000 partitions), and a page never waits for it:
``FleetWarmer`` asks for the view on a worker thread and waits at most
``WAIT`` seconds. Until the first view exists the overview shows the outcome of
each partition's newest backup (one grouped query) and polls its health
section, which htmx replaces with the real counts once they are there.

Recovery points (``service.views.recovery_points``): each partition's last good
backup against its policy's period, the late ones first, paged on the server.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from safehold.service import jobs, views
from safehold.service.context import ServiceContext
from safehold.service.health import FleetHealth
from safehold.web.common import Viewer, render

router = APIRouter(prefix="/console", include_in_schema=False)

PAGE_SIZE = 50
OVERVIEW_LATE = 10  # late partitions listed on the overview itself
WAIT = 0.1  # seconds a page waits for the fleet's health before showing the stand-in
KEEP = 2.0  # seconds the console shows the same health view before asking for a newer one


class FleetWarmer:
    """
    Get the app's shared ``FleetView`` without making a request wait for its first computation.

    One worker thread calls ``fleet.get``. Until a first view exists (``ready``)
    a request does not touch it: it reads its stand-in first, then ``start``s
    the computation in the background (on SQLite a read holds the catalog's
    lock, so the page's own reads go before it, not behind it). Once ready, a
    request waits at most *wait* seconds (the view is cached, so it answers at once).
    """

    def __init__(self, fleet: Any, wait: float = WAIT, keep: float = KEEP) -> None:
        self._fleet = fleet
        self._wait = wait
        self._keep = keep
        self._lock = threading.Lock()
        self._pending: Future[FleetHealth] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="console-fleet")
        self._kept: tuple[float, FleetHealth] | None = None
        self.ready = False

    def start(self, ctx: ServiceContext) -> Future[FleetHealth]:
        """Ask for the view on the worker (unless a request for it is running)."""
        with self._lock:
            pending = self._pending
            if pending is None or pending.done():
                pending = self._pending = self._pool.submit(self._get, ctx)
            return pending

    def _get(self, ctx: ServiceContext) -> FleetHealth:
        view: FleetHealth = self._fleet.get(ctx)
        self._kept = (time.monotonic(), view)
        self.ready = True
        return view

    def get(self, ctx: ServiceContext) -> FleetHealth | None:
        """
        The fleet's health if it is ready within the wait, else ``None``.

        A view this console got less than *keep* seconds ago is used again
        without asking the ``FleetView`` (each ask of a stale view starts a
        refresh, and on SQLite a refresh's reads hold the catalog's lock).
        """
        kept = self._kept
        if kept is not None and time.monotonic() - kept[0] < self._keep:
            return kept[1]
        if not self.ready:
            return None
        try:
            return self.start(ctx).result(timeout=self._wait)
        except FutureTimeout:
            return None
        except Exception:  # the catalog failed: the stand-in is shown, the next request retries
            return None


def _warmer(request: Request) -> FleetWarmer | None:
    state = request.app.state
    fleet = getattr(state, "fleet", None)
    if fleet is None:
        return None
    warmer: FleetWarmer | None = getattr(state, "console_fleet_warmer", None)
    if warmer is None:
        warmer = FleetWarmer(fleet, keep=float(getattr(state, "console_health_keep", KEEP)))
        state.console_fleet_warmer = warmer
    return warmer


def _health(request: Request) -> dict[str, Any]:
    """The overview's health: the real counts, or the stand-in while they are computed."""
    ctx = request.app.state.ctx
    warmer = _warmer(request)
    if warmer is None:  # an app without a shared view (tests): compute it here
        return {"ov": views.overview(ctx), "outcomes": None}
    view = warmer.get(ctx)
    if view is not None:
        return {"ov": views.overview(ctx, view.partitions), "outcomes": None}
    with ctx.uow() as uow:
        active = uow.jobs.running_count()
    outcomes = views.backup_outcome_counts(ctx)
    warmer.start(ctx)  # after this page's own reads
    return {"ov": None, "outcomes": outcomes, "active": active}


def recovery(
    request: Request, *, offset: int, limit: int, late_only: bool = False
) -> tuple[list[views.RecoveryPoint], int, int]:
    """One page of recovery points, late first (paged and sorted in the catalog)."""
    return views.recovery_points(
        request.app.state.ctx, offset=offset, limit=limit, late_only=late_only
    )


@router.get("/")
def overview_page(request: Request, session: Viewer) -> HTMLResponse:
    """Health counts, what is failing or late first, recovery points, agents alive or lost."""
    ctx = request.app.state.ctx
    agents = jobs.list_agents(ctx)
    points, total, late = recovery(request, offset=0, limit=OVERVIEW_LATE)
    health = _health(request)  # last: it may start the fleet's computation
    return render(
        request,
        "overview.html",
        session,
        **health,
        points=points,
        points_total=total,
        late=late,
        now=ctx.clock(),
        agents=agents,
        page="overview",
    )


@router.get("/health")
def health_fragment(request: Request, session: Viewer) -> HTMLResponse:
    """The overview's health section alone (polled by htmx until the real counts are there)."""
    return render(request, "_health.html", session, **_health(request))


@router.get("/recovery")
def recovery_page(
    request: Request,
    session: Viewer,
    page_no: Annotated[int, Query(alias="page", ge=1)] = 1,
    late: bool = False,
) -> HTMLResponse:
    """Every partition's recovery point (and last drill's RTO), late first, paged."""
    points, total, late_count = recovery(
        request, offset=(page_no - 1) * PAGE_SIZE, limit=PAGE_SIZE, late_only=late
    )
    return render(
        request,
        "recovery.html",
        session,
        points=points,
        total=total,
        late=late_count,
        late_only=late,
        page_no=page_no,
        pages=max(1, -(-total // PAGE_SIZE)),
        now=request.app.state.ctx.clock(),
        page="recovery",
    )
