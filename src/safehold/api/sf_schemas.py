"""
OpenAPI descriptions of the Service Fabric request bodies.

The routes parse these bodies with ``core.policy`` (for SF's exact validation
messages and error codes); these models only document the shapes in
``/openapi.json``. ``install`` adds them to the app's OpenAPI components and
points each route's request body at its model.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

__all__ = ["install"]


class FrequencyBasedSchedule(BaseModel):
    """A backup every Interval (ISO 8601, 1 minute to 15 days)."""

    ScheduleKind: Literal["FrequencyBased"]
    Interval: str = Field(examples=["PT1H"])


class TimeBasedSchedule(BaseModel):
    """Backups at RunTimes (UTC, date ignored) on RunDays (Weekly) or every day (Daily)."""

    ScheduleKind: Literal["TimeBased"]
    ScheduleFrequencyType: Literal["Daily", "Weekly"]
    RunDays: list[
        Literal["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
    ] = []
    RunTimes: list[datetime]


class FileShareStorage(BaseModel):
    """A directory: a local path or a mounted share."""

    StorageKind: Literal["FileShare"]
    Path: str
    FriendlyName: str | None = None
    PrimaryUserName: str | None = None
    PrimaryPassword: str | None = Field(None, description="Sealed at rest; shown as ****.")
    SecondaryUserName: str | None = None
    SecondaryPassword: str | None = Field(None, description="Sealed at rest; shown as ****.")


class AzureBlobStorage(BaseModel):
    """A container in an Azure storage account."""

    StorageKind: Literal["AzureBlobStore"]
    ConnectionString: str = Field(description="Sealed at rest; shown as ****.")
    ContainerName: str
    FriendlyName: str | None = None


class S3Storage(BaseModel):
    """safehold's addition: a bucket (and prefix) on S3 or a compatible server."""

    StorageKind: Literal["S3"]
    BucketName: str
    Prefix: str | None = None
    Region: str | None = None
    EndpointUrl: str | None = None
    AccessKeyId: str | None = None
    SecretAccessKey: str | None = Field(None, description="Sealed at rest; shown as ****.")
    FriendlyName: str | None = None


AnyStorage = FileShareStorage | AzureBlobStorage | S3Storage


class BasicRetention(BaseModel):
    """Keep backups younger than RetentionDuration (whole hours), and at least the minimum."""

    RetentionPolicyType: Literal["Basic"]
    RetentionDuration: str = Field(examples=["P7D"])
    MinimumNumberOfBackups: int = Field(0, ge=0)


class BackupPolicyCreate(BaseModel):
    """SF's BackupPolicyDescription."""

    Name: str
    AutoRestoreOnDataLoss: bool
    MaxIncrementalBackups: int = Field(ge=0, le=255)
    Schedule: FrequencyBasedSchedule | TimeBasedSchedule = Field(discriminator="ScheduleKind")
    Storage: AnyStorage = Field(discriminator="StorageKind")
    RetentionPolicy: BasicRetention | None = None


class EnableBackupCreate(BaseModel):
    """EnableBackup's body."""

    BackupPolicyName: str


class DisableBackupCreate(BaseModel):
    """DisableBackup's optional body."""

    CleanBackup: bool


class BackupPartitionCreate(BaseModel):
    """An on-demand backup's optional body."""

    BackupStorage: AnyStorage | None = Field(None, discriminator="StorageKind")


class RestorePartitionCreate(BaseModel):
    """A restore: BackupId and BackupLocation, or nothing with Latest/RestorePointTime."""

    BackupId: str | None = None
    BackupLocation: str | None = None
    BackupStorage: AnyStorage | None = Field(None, discriminator="StorageKind")
    SourcePartitionId: str | None = Field(
        None, description="safehold: whose backups Latest/RestorePointTime use."
    )


class BackupEntityDescription(BaseModel):
    """An application, service or partition."""

    EntityKind: Literal["Application", "Service", "Partition"]
    ApplicationName: str | None = None
    ServiceName: str | None = None
    PartitionId: str | None = None


class GetBackupsByStorageCreate(BaseModel):
    """GetBackups straight from a storage."""

    Storage: AnyStorage = Field(discriminator="StorageKind")
    BackupEntity: BackupEntityDescription
    StartDateTimeFilter: datetime | None = None
    EndDateTimeFilter: datetime | None = None
    Latest: bool = False


class ConfigOperationCreate(BaseModel):
    """A configuration backup or restore: where, and under which name."""

    Storage: AnyStorage = Field(discriminator="StorageKind")
    BackupName: str


BODIES: dict[str, type[BaseModel]] = {
    "create_backup_policy": BackupPolicyCreate,
    "update_backup_policy": BackupPolicyCreate,
    "get_backups_from_backup_location": GetBackupsByStorageCreate,
    "backup_partition": BackupPartitionCreate,
    "restore_partition": RestorePartitionCreate,
    "backup_configuration": ConfigOperationCreate,
    "restore_configuration": ConfigOperationCreate,
}
for _noun in ("application", "service", "partition"):
    BODIES[f"enable_{_noun}_backup"] = EnableBackupCreate
    BODIES[f"disable_{_noun}_backup"] = DisableBackupCreate


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` describe the SF request bodies."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        for model in sorted(set(BODIES.values()), key=lambda m: m.__name__):
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[model.__name__] = schema
        for path_item in doc["paths"].values():
            for op in path_item.values():
                name = op.get("operationId", "").split("-", 1)[-1]
                body = BODIES.get(name)
                if body is not None:
                    op["requestBody"] = {
                        "required": name.startswith(
                            ("create", "update", "enable", "get_backups", "restore_p")
                        ),
                        "content": {
                            "application/json": {
                                "schema": {"$ref": f"#/components/schemas/{body.__name__}"}
                            }
                        },
                    }
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
