"""
Jobs: requested by users and the scheduler, run by agents, recorded in the catalog.

The controller only decides and records: a request becomes an ``Accepted`` job
(``requests``); an agent claims it, reports progress and completes it, and
sweeps end what nobody will finish (``lifecycle``); ``listing`` reads jobs and
backups back. One backup or restore runs per partition at a time.
"""

from safehold.service.jobs.lifecycle import (
    claim,
    claim_waiting,
    complete,
    complete_and_claim,
    heartbeat,
    purge_finished,
    sweep,
    wait_for,
)
from safehold.service.jobs.listing import (
    backups_in_storage,
    entity_from_json,
    latest_job,
    latest_per_partition,
    list_agents,
    list_backups,
    storage_backups,
)
from safehold.service.jobs.requests import (
    disable_backup_and_clean,
    new_backup_job,
    refuse_if_busy,
    report_data_loss,
    request_backup,
    request_clean,
    request_restore,
)

__all__ = [
    "backups_in_storage",
    "claim",
    "claim_waiting",
    "complete",
    "complete_and_claim",
    "disable_backup_and_clean",
    "entity_from_json",
    "heartbeat",
    "latest_job",
    "latest_per_partition",
    "list_agents",
    "list_backups",
    "new_backup_job",
    "purge_finished",
    "refuse_if_busy",
    "report_data_loss",
    "request_backup",
    "request_clean",
    "request_restore",
    "storage_backups",
    "sweep",
    "wait_for",
]
