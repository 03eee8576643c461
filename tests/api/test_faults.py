"""The Faults API over HTTP: StartDataLoss and GetDataLossProgress, with SF's shapes and errors."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.api.conftest import READER, auth

V = {"api-version": "6.4"}
PID = "dddddddd-0000-4000-8000-000000000001"
BASE = f"/Faults/Services/Shop~Orders/$/GetPartitions/{PID}/$"


@pytest.fixture
def state_partition(client: httpx.Client) -> str:
    r = client.post(
        "/safehold/partitions",
        json={
            "ApplicationName": "fabric:/Shop",
            "ServiceName": "fabric:/Shop/Orders",
            "PartitionId": PID,
            "Source": "state:orders-1",
        },
        headers=auth(),
    )
    assert r.status_code in (200, 201), r.text
    return PID


def test_start_and_follow_a_data_loss(client: httpx.Client, state_partition: str) -> None:
    """202 Accepted, then Running until the agent completes it, then Completed."""
    op = str(uuid.uuid4())
    q = {**V, "OperationId": op, "DataLossMode": "FullDataLoss"}
    r = client.post(f"{BASE}/StartDataLoss", params=q, headers=auth())
    assert r.status_code == 202, r.text
    r = client.get(f"{BASE}/GetDataLossProgress", params={**V, "OperationId": op}, headers=auth())
    assert r.status_code == 200
    assert r.json()["State"] == "Running"
    assert r.json()["InvokeDataLossResult"]["SelectedPartition"]["PartitionId"] == PID
    r = client.post("/safehold/agents/orders-1/$/Claim", headers=auth())
    assert (r.status_code, r.json()["Kind"]) == (200, "dataloss")
    r = client.post(
        f"/safehold/agents/orders-1/jobs/{op}/$/Complete",
        json={"State": "Success", "Epoch": [1, 0], "Lsn": 0},
        headers=auth(),
    )
    assert r.status_code == 204, r.text
    r = client.get(f"{BASE}/GetDataLossProgress", params={**V, "OperationId": op}, headers=auth())
    assert r.json()["State"] == "Completed"


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"DataLossMode": "FullDataLoss"}, 400, "E_INVALIDARG"),
        ({"OperationId": "x", "DataLossMode": "FullDataLoss"}, 400, "E_INVALIDARG"),
        ({"OperationId": str(uuid.uuid4()), "DataLossMode": "Half"}, 400, "E_INVALIDARG"),
        ({"OperationId": str(uuid.uuid4())}, 400, "E_INVALIDARG"),
    ],
)
def test_bad_input_is_400(
    client: httpx.Client, state_partition: str, params: dict[str, str], status: int, code: str
) -> None:
    r = client.post(f"{BASE}/StartDataLoss", params={**V, **params}, headers=auth())
    assert r.status_code == status
    assert r.json()["Error"]["Code"] == code


def test_unknown_partition_operation_and_roles(client: httpx.Client, state_partition: str) -> None:
    """404 with SF's codes; a reader cannot start a drill."""
    op = str(uuid.uuid4())
    q = {**V, "OperationId": op, "DataLossMode": "FullDataLoss"}
    other = str(uuid.uuid4())
    r = client.post(
        f"/Faults/Services/Shop~Orders/$/GetPartitions/{other}/$/StartDataLoss",
        params=q,
        headers=auth(),
    )
    assert (r.status_code, r.json()["Error"]["Code"]) == (404, "FABRIC_E_PARTITION_NOT_FOUND")
    r = client.get(f"{BASE}/GetDataLossProgress", params={**V, "OperationId": op}, headers=auth())
    assert r.status_code == 404
    assert r.json()["Error"]["Code"] == "FABRIC_E_TEST_COMMAND_OPERATION_ID_NOT_FOUND"
    r = client.post(f"{BASE}/StartDataLoss", params=q, headers=auth(READER))
    assert r.status_code == 403
    r = client.post(f"{BASE}/StartDataLoss", params={"OperationId": op}, headers=auth())
    assert r.status_code == 400  # no api-version
