"""
The FastAPI application: routers, the error mapping and the metrics endpoint.

Every error leaves as Service Fabric's body ``{"Error": {"Code", "Message"}}``.
``SafeholdError`` subclasses carry their status and code; framework errors
(bad query values, unknown routes) are first turned into ``SafeholdError`` so
that one function, ``error_response``, maps everything. Unexpected exceptions
become a 500 ``E_UNEXPECTED`` whose message reveals nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

import safehold
from safehold import web
from safehold.api import sf_schemas
from safehold.api.deps import ReaderDep, TokenStore
from safehold.api.metrics import CatalogCollector, Rendering
from safehold.api.routes import (
    agents,
    cluster,
    config,
    drills,
    entities,
    faults,
    groups,
    keys,
    partition_jobs,
    partitions,
    policies,
)
from safehold.core.errors import SafeholdError, UsageError
from safehold.service.context import ServiceContext
from safehold.service.health import FleetView

__all__ = ["create_app", "error_response"]

log = logging.getLogger("safehold.api")


def error_response(exc: SafeholdError) -> JSONResponse:
    """Map a safehold error to its HTTP response (the one place that does)."""
    headers = {"X-ServiceFabric": "ResourceNotFound"} if exc.http_status == 404 else None
    if exc.http_status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse(
        status_code=exc.http_status,
        content={"Error": {"Code": exc.code, "Message": exc.message}},
        headers=headers,
    )


class _HttpError(SafeholdError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.http_status = status
        self.code = code


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        parts.append(f"{where}: {err.get('msg')}")
    return "invalid request: " + "; ".join(parts)


def _unique_id(route: APIRoute) -> str:
    return f"{route.tags[0] if route.tags else 'safehold'}-{route.name}"


def create_app(ctx: ServiceContext, tokens: TokenStore) -> FastAPI:
    """Build the application around a service context and the API tokens."""
    app = FastAPI(
        title="safehold",
        version=safehold.__version__,
        description="Backup and restore service, compatible with Service Fabric's "
        "Backup Restore REST API (api-version 6.4).",
        generate_unique_id_function=_unique_id,
        docs_url=None,  # /docs and /redoc come from safehold.web, with local assets
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.state.tokens = tokens
    app.state.fleet = FleetView()  # health and metrics: shared, refreshed in the background
    registry = CollectorRegistry()
    registry.register(CatalogCollector(ctx, app.state.fleet))
    app.state.registry = registry  # the composition root adds the scheduler's collector
    app.state.leading = None  # set by the controller's loop: whether this replica leads

    @app.exception_handler(SafeholdError)
    async def on_safehold_error(request: Request, exc: SafeholdError) -> JSONResponse:
        del request
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        del request
        err = UsageError(_validation_message(exc))
        err.code = "E_INVALIDARG"
        return error_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "FABRIC_E_DOES_NOT_EXIST", 405: "E_INVALIDARG"}.get(exc.status_code, "E_FAIL")
        message = (
            f"no such route: {request.method} {request.url.path}"
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        return error_response(_HttpError(exc.status_code, code, message))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(_HttpError(500, "E_UNEXPECTED", "an unexpected error occurred"))

    for module in (policies, entities, partition_jobs, partitions, agents, config, faults, cluster):
        app.include_router(module.router)
    app.include_router(drills.router)  # restore drills and alerts (service.drills)
    app.include_router(keys.router)  # repository key rotation (service.repo_keys)
    app.include_router(groups.router)  # consistency groups (service.groups)
    sf_schemas.install(app)
    web.install(app)  # the operator console at /console/, and /docs, /redoc

    @app.get("/healthz", tags=["Service"])
    def healthz() -> dict[str, Any]:
        """Liveness: the controller answers; ``Leader`` says whether it runs the scheduler."""
        return {"Status": "Ok", "Version": safehold.__version__, "Leader": app.state.leading}

    # Scrapes share one rendering, made in the background (a large fleet's is per
    # partition): only the first scrape waits for one.
    page = Rendering(lambda: generate_latest(registry), ttl=app.state.fleet.ttl)
    app.state.metrics_page = page  # the token-free listener serves the same rendering

    @app.get("/metrics", tags=["Service"])
    def metrics(_p: ReaderDep) -> Response:
        """Prometheus metrics: backups by outcome, durations, bytes, age of the last good backup."""
        return Response(page.get(), media_type=CONTENT_TYPE_LATEST)

    return app
