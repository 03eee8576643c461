"""
Enable, disable, suspend and resume backup, configuration info and backup lists.

The same six operations exist under ``/Applications/{applicationId}``,
``/Services/{serviceId}`` and ``/Partitions/{partitionId}``; ids are names
without ``fabric:/`` and with ``~`` for ``/`` (``Shop~Orders``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from safehold.api import sf_render
from safehold.api.deps import (
    ApiVersionDep,
    CtxDep,
    JsonBody,
    OperatorDep,
    ReaderDep,
    parse_filter_time,
)
from safehold.api.paging import page, page_read
from safehold.core.policy import EntityRef, PolicyError, name_from_id
from safehold.service import jobs, protection

router = APIRouter(tags=["BackupConfiguration"])

TokenQ = Annotated[str | None, Query(alias="ContinuationToken")]
MaxQ = Annotated[int | None, Query(alias="MaxResults")]
LatestQ = Annotated[bool, Query(alias="Latest")]
StartQ = Annotated[str | None, Query(alias="StartDateTimeFilter")]
EndQ = Annotated[str | None, Query(alias="EndDateTimeFilter")]

KINDS: dict[str, tuple[str, str]] = {
    # kind: (path prefix, operation-id noun)
    "Application": ("/Applications/{entity_id}", "application"),
    "Service": ("/Services/{entity_id}", "service"),
    "Partition": ("/Partitions/{entity_id}", "partition"),
}


def _entity_parser(kind: str) -> Callable[[str], EntityRef]:
    def parse(entity_id: str) -> EntityRef:
        if kind == "Partition":
            return EntityRef("Partition", entity_id.lower())
        return EntityRef(kind, name_from_id(entity_id))  # type: ignore[arg-type]

    return parse


def _add_routes(kind: str) -> None:
    prefix, noun = KINDS[kind]
    entity_of = _entity_parser(kind)

    @router.post(f"{prefix}/$/EnableBackup", status_code=202, name=f"enable_{noun}_backup")
    def enable(
        ctx: CtxDep, _v: ApiVersionDep, _p: OperatorDep, entity_id: str, body: JsonBody
    ) -> Response:
        if not isinstance(body, dict):
            raise PolicyError("the body must be an object with BackupPolicyName")
        protection.enable_backup(ctx, entity_of(entity_id), body.get("BackupPolicyName"))
        return Response(status_code=202)

    @router.post(f"{prefix}/$/DisableBackup", status_code=202, name=f"disable_{noun}_backup")
    def disable(
        ctx: CtxDep, _v: ApiVersionDep, _p: OperatorDep, entity_id: str, body: JsonBody
    ) -> Response:
        clean = False
        if body is not None:
            if not isinstance(body, dict) or not isinstance(body.get("CleanBackup"), bool):
                raise PolicyError('the body, when given, must be {"CleanBackup": true|false}')
            clean = body["CleanBackup"]
        jobs.disable_backup_and_clean(ctx, entity_of(entity_id), clean=clean)
        return Response(status_code=202)

    @router.post(f"{prefix}/$/SuspendBackup", status_code=202, name=f"suspend_{noun}_backup")
    def suspend(ctx: CtxDep, _v: ApiVersionDep, _p: OperatorDep, entity_id: str) -> Response:
        protection.suspend_backup(ctx, entity_of(entity_id))
        return Response(status_code=202)

    @router.post(f"{prefix}/$/ResumeBackup", status_code=202, name=f"resume_{noun}_backup")
    def resume(ctx: CtxDep, _v: ApiVersionDep, _p: OperatorDep, entity_id: str) -> Response:
        protection.resume_backup(ctx, entity_of(entity_id))
        return Response(status_code=202)

    @router.get(
        f"{prefix}/$/GetBackupConfigurationInfo", name=f"get_{noun}_backup_configuration_info"
    )
    def config_info(
        ctx: CtxDep,
        _v: ApiVersionDep,
        _p: ReaderDep,
        entity_id: str,
        token: TokenQ = None,
        max_results: MaxQ = None,
    ) -> Any:
        found = protection.config_info(ctx, entity_of(entity_id))
        infos = [sf_render.config_info(c) for c in found]
        if kind == "Partition":
            return infos[0]
        return page(infos, token, max_results)

    @router.get(f"{prefix}/$/GetBackups", name=f"get_{noun}_backup_list")
    def get_backups(
        ctx: CtxDep,
        _v: ApiVersionDep,
        _p: ReaderDep,
        entity_id: str,
        latest: LatestQ = False,
        start: StartQ = None,
        end: EndQ = None,
        token: TokenQ = None,
        max_results: MaxQ = None,
    ) -> dict[str, Any]:
        entity = entity_of(entity_id)
        since = parse_filter_time(start, "StartDateTimeFilter")
        until = parse_filter_time(end, "EndDateTimeFilter")
        if latest:  # each partition's newest: the whole list is read, one page rendered
            items = jobs.list_backups(ctx, entity, start=since, end=until, latest=True)
            one = page(items, token, max_results)
            return {**one, "Items": [sf_render.backup_info(b) for b in one["Items"]]}
        return page_read(
            lambda offset, limit: jobs.list_backups(
                ctx, entity, start=since, end=until, latest=False, offset=offset, limit=limit
            ),
            token,
            max_results,
            sf_render.backup_info,
        )


for _kind in KINDS:
    _add_routes(_kind)
