"""GetBackups pages with MaxResults and ContinuationToken, reading one page at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from safehold.bootstrap import Controller
from safehold.core.policy import EntityRef
from safehold.service import jobs, policies, protection
from tests.api.conftest import auth
from tests.service.helpers import P1, add_partition, policy_doc, run_agent_once

V = {"api-version": "6.4"}


def _all_pages(client: httpx.Client, path: str, **params: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    token = ""
    while True:
        query = {**V, **params, **({"ContinuationToken": token} if token else {})}
        r = client.get(path, params=query, headers=auth())
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append([b["BackupId"] for b in body["Items"]])
        token = body["ContinuationToken"]
        if not token:
            return pages


def test_backups_are_paged_in_order_with_nothing_lost_or_repeated(
    controller: Controller, client: httpx.Client, tmp_path: Path
) -> None:
    """Five backups, pages of two: 2 + 2 + 1 in creation order, as the unpaged list."""
    ctx = controller.ctx
    add_partition(ctx, P1, tmp_path / "a")
    policies.create_policy(ctx, policy_doc("p", tmp_path / "store"))
    protection.enable_backup(ctx, EntityRef("Application", "fabric:/Shop"), "p")
    for i in range(5):
        (tmp_path / "a" / "data.txt").write_text(f"version {i}")
        jobs.request_backup(ctx, P1)
        assert run_agent_once(ctx)
    path = f"/Partitions/{P1}/$/GetBackups"
    [whole] = _all_pages(client, path)
    assert len(whole) == 5
    pages = _all_pages(client, path, MaxResults=2)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [b for p in pages for b in p] == whole
    assert _all_pages(client, path, MaxResults=5) == [whole]  # exactly one page: no token
    assert _all_pages(client, path, MaxResults=1, Latest="true") == [[whole[-1]]]
    app_pages = _all_pages(client, "/Applications/Shop/$/GetBackups", MaxResults=3)
    assert [b for p in app_pages for b in p] == whole
