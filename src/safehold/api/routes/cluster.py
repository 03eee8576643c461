"""
What SF clients ask the cluster itself before anything else.

- ``GET /``: ``sfctl cluster select`` sends it and needs a 2xx (SF's gateway
  answers with its Explorer). It says what this is and needs no credential,
  like an SF cluster's landing page; it reveals no version.
- ``GET /$/GetClusterVersion``: sfctl asks it after each command to compare its
  own version with the cluster's, and warns unless the major version is 8 or 9.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from safehold.api.deps import ApiVersionDep, ReaderDep

router = APIRouter(tags=["Cluster"])

#: The SF runtime line whose Backup Restore and Faults REST API safehold answers
#: (sfctl 11.x and azure-servicefabric 8.2 target SF 8.x and 9.x).
SF_RUNTIME_VERSION = "9.1.0.0"


@router.get("/")
def root() -> dict[str, Any]:
    """What answers here: a backup service with SF's Backup Restore REST API."""
    return {
        "Name": "safehold",
        "Description": "Backup and restore service with Service Fabric's Backup Restore REST API",
    }


@router.get("/$/GetClusterVersion")
def get_cluster_version(_v: ApiVersionDep, _p: ReaderDep) -> dict[str, str]:
    """SF's ClusterVersion: the runtime line whose REST API this service answers."""
    return {"Version": SF_RUNTIME_VERSION}
