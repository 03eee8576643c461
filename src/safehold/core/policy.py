"""
Backup policies as Service Fabric's Backup Restore Service defines them, and the rules around them.

Everything here is pure: parsing and validating the JSON shapes of api-version 6.4
(``BackupPolicyDescription`` and its parts), Service Fabric names and path ids,
the inheritance of policies and suspensions from applications to services to
partitions, and when a schedule is next due.
Validation errors are ``PolicyError`` (HTTP 400, ``E_INVALIDARG``) with a message
that names the field; messages never repeat a secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal, Protocol

# Storage descriptions live in core.storage_spec; they are re-exported here, with
# PolicyError, so that callers keep one import for everything about policies.
from safehold.core.storage_spec import (
    REDACTED,
    AzureBlobStorage,
    FileShareStorage,
    ManagedIdentityAzureBlobStorage,
    PolicyError,
    S3Storage,
    StorageSpec,
    parse_storage,
    redact_storage,
)

__all__ = [
    "REDACTED",
    "AzureBlobStorage",
    "BackupPolicy",
    "BasicRetention",
    "EffectiveConfig",
    "EffectiveConfigs",
    "EntityRef",
    "FileShareStorage",
    "FrequencySchedule",
    "ManagedIdentityAzureBlobStorage",
    "PolicyError",
    "S3Storage",
    "Schedule",
    "StorageSpec",
    "TimeSchedule",
    "check_job_timeout",
    "check_policy_name",
    "effective_config",
    "format_duration",
    "next_due",
    "parse_duration",
    "parse_policy",
    "parse_storage",
    "redact_storage",
]

MAX_INCREMENTAL_BACKUPS = 255
MIN_INTERVAL = timedelta(minutes=1)
MAX_INTERVAL = timedelta(days=15)
DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
Scope = Literal["Application", "Service", "Partition"]


# --- ISO 8601 durations ------------------------------------------------------------

_DURATION_RE = re.compile(
    r"^P(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
# SF reads every duration with .NET's XmlConvert.ToTimeSpan, which counts a year
# as 365 days and a month as 30 days; policies exported from a cluster may use them.
DAYS_PER_YEAR = 365
DAYS_PER_MONTH = 30


def parse_duration(text: object, field: str) -> timedelta:
    """
    Parse an ISO 8601 duration such as ``PT1H30M``, ``P2D`` or ``P1M``.

    As in SF (``XmlConvert.ToTimeSpan``), a year is 365 days and a month 30 days.

    Raises:
        PolicyError: *text* is not such a duration.
    """
    if not isinstance(text, str):
        raise PolicyError(f"{field} must be an ISO 8601 duration string such as 'PT1H'")
    m = _DURATION_RE.match(text.strip().upper())
    if not m or text.strip().upper() in ("P", "PT") or text.strip().upper().endswith("T"):
        raise PolicyError(
            f"{field} {text!r} is not an ISO 8601 duration such as 'PT15M', 'PT1H', 'P1D' or 'P1M'"
        )
    g = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    days = g["y"] * DAYS_PER_YEAR + g["mo"] * DAYS_PER_MONTH + g["d"]
    try:
        return timedelta(weeks=g["w"], days=days, hours=g["h"], minutes=g["m"], seconds=g["s"])
    except OverflowError as exc:
        raise PolicyError(f"{field} {text!r} is far too long") from exc


def format_duration(td: timedelta) -> str:
    """Format *td* as an ISO 8601 duration (``P1DT2H``, ``PT15M``, ``PT0S``)."""
    secs = int(td.total_seconds())
    days, rest = divmod(secs, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    out = "P" + (f"{days}D" if days else "")
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    clock += f"{seconds}S" if seconds else ""
    if clock:
        out += "T" + clock
    return out if out != "P" else "PT0S"


# --- Schedules ---------------------------------------------------------------------


@dataclass(frozen=True)
class FrequencySchedule:
    """``FrequencyBased``: a backup every *interval* (minute resolution, 1 min to 15 days)."""

    interval: timedelta

    def to_json(self) -> dict[str, Any]:
        """Return the API shape."""
        return {"ScheduleKind": "FrequencyBased", "Interval": format_duration(self.interval)}


@dataclass(frozen=True)
class TimeSchedule:
    """``TimeBased``: at each of *run_times* (UTC) on *run_days* (every day when Daily)."""

    frequency: Literal["Daily", "Weekly"]
    run_days: tuple[str, ...]
    run_times: tuple[time, ...]

    def to_json(self) -> dict[str, Any]:
        """Return the API shape; run times carry SF's placeholder date."""
        return {
            "ScheduleKind": "TimeBased",
            "ScheduleFrequencyType": self.frequency,
            "RunDays": list(self.run_days),
            "RunTimes": [f"0001-01-01T{t.strftime('%H:%M:%S')}Z" for t in self.run_times],
        }


Schedule = FrequencySchedule | TimeSchedule


def _parse_run_time(value: object) -> time:
    if not isinstance(value, str):
        raise PolicyError(
            "RunTimes must be a list of date-time strings such as '0001-01-01T09:00:00Z'"
        )
    text = value.strip()
    try:
        if "T" in text:
            # SF ignores the date part; only the time of day (UTC) matters.
            date_part, clock = text.split("T", 1)
            stamp = datetime.fromisoformat(f"2000-01-01T{clock}".replace("Z", "+00:00"))
            del date_part
        else:
            stamp = datetime.fromisoformat(f"2000-01-01T{text}".replace("Z", "+00:00"))
    except ValueError as exc:
        raise PolicyError(f"RunTimes entry {value!r} is not a valid time of day") from exc
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(UTC)
    return time(stamp.hour, stamp.minute)


def parse_schedule(doc: object) -> Schedule:
    """Parse and validate a ``Schedule`` object."""
    if not isinstance(doc, Mapping):
        raise PolicyError("Schedule must be an object with a ScheduleKind")
    kind = doc.get("ScheduleKind")
    if kind == "FrequencyBased":
        if "Interval" not in doc:
            raise PolicyError("Schedule.Interval is required for a FrequencyBased schedule")
        interval = parse_duration(doc["Interval"], "Schedule.Interval")
        interval = timedelta(minutes=int(interval.total_seconds() // 60))  # seconds ignored
        if interval < MIN_INTERVAL:
            raise PolicyError("Minimum time interval supported is 1 minute (Schedule.Interval)")
        if interval > MAX_INTERVAL:
            raise PolicyError("Allowed maximum time interval for Schedule.Interval is 15 days.")
        return FrequencySchedule(interval)
    if kind == "TimeBased":
        freq = doc.get("ScheduleFrequencyType")
        if freq not in ("Daily", "Weekly"):
            raise PolicyError("Schedule.ScheduleFrequencyType must be 'Daily' or 'Weekly'")
        times = doc.get("RunTimes")
        if not isinstance(times, list) or not times:
            raise PolicyError("The RunTimes field is required: a non-empty list of times of day.")
        run_times = tuple(sorted({_parse_run_time(t) for t in times}))
        days_in = doc.get("RunDays") or []
        if not isinstance(days_in, list):
            raise PolicyError("RunDays must be a list of day names")
        for d in days_in:
            if d not in DAYS:
                raise PolicyError(f"RunDays entry {d!r} is not one of {', '.join(DAYS)}")
        if freq == "Weekly" and not days_in:
            raise PolicyError("The RunDays field is required.")
        run_days = tuple(d for d in DAYS if d in days_in) if freq == "Weekly" else ()
        return TimeSchedule(freq, run_days, run_times)
    raise PolicyError(
        f"Schedule.ScheduleKind {kind!r} is not supported: use 'FrequencyBased' or 'TimeBased'"
    )


def next_due(schedule: Schedule, after: datetime) -> datetime:
    """
    Return the first time strictly after *after* at which *schedule* wants a backup.

    A frequency schedule is due *interval* after the reference time; the caller
    passes the last backup (or the time backup was enabled).
    """
    after = after.astimezone(UTC)
    if isinstance(schedule, FrequencySchedule):
        return after + schedule.interval
    day = after.date()
    for offset in range(8):
        d = day + timedelta(days=offset)
        # Python's weekday(): Monday=0; SF's DayOfWeek: Sunday=0.
        name = DAYS[(d.weekday() + 1) % 7]
        if schedule.frequency == "Weekly" and name not in schedule.run_days:
            continue
        for t in schedule.run_times:
            candidate = datetime.combine(d, t, tzinfo=UTC)
            if candidate > after:
                return candidate
    raise AssertionError("a time schedule always has a run within 8 days")  # pragma: no cover


# --- Retention and the policy ------------------------------------------------------


@dataclass(frozen=True)
class BasicRetention:
    """``Basic`` retention: keep backups younger than *duration*, and at least *minimum*."""

    duration: timedelta
    minimum: int = 0

    def to_json(self) -> dict[str, Any]:
        """Return the API shape."""
        return {
            "RetentionPolicyType": "Basic",
            "RetentionDuration": format_duration(self.duration),
            "MinimumNumberOfBackups": self.minimum,
        }


def parse_retention(doc: object) -> BasicRetention | None:
    """Parse and validate a ``RetentionPolicy``; ``None`` when absent."""
    if doc is None:
        return None
    if not isinstance(doc, Mapping):
        raise PolicyError("RetentionPolicy must be an object with a RetentionPolicyType")
    if doc.get("RetentionPolicyType") != "Basic":
        raise PolicyError("RetentionPolicy.RetentionPolicyType must be 'Basic'")
    if "RetentionDuration" not in doc:
        raise PolicyError("RetentionPolicy.RetentionDuration is required")
    duration = parse_duration(doc["RetentionDuration"], "RetentionPolicy.RetentionDuration")
    # SF (BasicRetentionPolicy.FromBasicRetentionPolicyView) truncates the duration to
    # whole hours and refuses it only when that leaves zero: PT90M is kept as PT1H.
    hours = int(duration.total_seconds() // 3600)
    if hours < 1:
        raise PolicyError("RetentionDuration cannot be less than 1 hour.")
    duration = timedelta(hours=hours)
    minimum = doc.get("MinimumNumberOfBackups", 0)
    if minimum is None:
        minimum = 0
    if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < 0:
        raise PolicyError("RetentionPolicy.MinimumNumberOfBackups must be an integer >= 0")
    return BasicRetention(duration, minimum)


MAX_POLICY_NAME = 128  # the catalog's column; SF sets no limit
# SF's BackupPolicy.Name is only [Required]: any string that is not blank. safehold
# also refuses '/' and control characters, which no URL path segment can carry back.
_POLICY_NAME_BAD = re.compile(r"[/\x00-\x1f\x7f]")


def check_policy_name(name: object) -> str:
    """
    Check a backup policy name as SF does: any non-blank string.

    Beyond SF: at most 128 characters, and no ``/`` or control character.

    Raises:
        PolicyError: the name is missing, blank, too long or unaddressable.
    """
    if not isinstance(name, str) or not name.strip():
        raise PolicyError("Name is required: a backup policy name that is not blank")
    if len(name) > MAX_POLICY_NAME or _POLICY_NAME_BAD.search(name):
        raise PolicyError(
            f"Name must be at most {MAX_POLICY_NAME} characters, without '/' or control characters"
        )
    return name


# SF takes BackupTimeout and RestoreTimeout as Int32 minutes and sets no upper bound.
MAX_JOB_TIMEOUT_MINUTES = 2**31 - 1


def check_job_timeout(minutes: object, name: str) -> timedelta:
    """
    Check a ``BackupTimeout``/``RestoreTimeout`` (minutes) as SF reads it: a positive Int32.

    Raises:
        PolicyError: not an integer, below 1 or above Int32's maximum.
    """
    if not isinstance(minutes, int) or isinstance(minutes, bool):
        raise PolicyError(f"{name} must be a whole number of minutes")
    if not 1 <= minutes <= MAX_JOB_TIMEOUT_MINUTES:
        raise PolicyError(
            f"{name} must be between 1 and {MAX_JOB_TIMEOUT_MINUTES} minutes, not {minutes}"
        )
    return timedelta(minutes=minutes)


@dataclass(frozen=True)
class BackupPolicy:
    """A validated ``BackupPolicyDescription``."""

    name: str
    auto_restore_on_data_loss: bool
    max_incremental_backups: int
    schedule: Schedule
    storage: StorageSpec
    retention: BasicRetention | None = None

    def to_json(self, *, redact: bool = True) -> dict[str, Any]:
        """Return the API shape; secrets are ``****`` unless *redact* is false."""
        storage = self.storage.to_json()
        doc: dict[str, Any] = {
            "Name": self.name,
            "AutoRestoreOnDataLoss": self.auto_restore_on_data_loss,
            "MaxIncrementalBackups": self.max_incremental_backups,
            "Schedule": self.schedule.to_json(),
            "Storage": redact_storage(storage) if redact else storage,
        }
        if self.retention is not None:
            doc["RetentionPolicy"] = self.retention.to_json()
        return doc

    def with_storage(self, storage: StorageSpec) -> BackupPolicy:
        """Return a copy with another storage."""
        return replace(self, storage=storage)


def parse_policy(doc: object) -> BackupPolicy:
    """
    Parse and validate a ``BackupPolicyDescription`` (a JSON object).

    Raises:
        PolicyError: a field is missing, of the wrong type or out of range.
    """
    if not isinstance(doc, Mapping):
        raise PolicyError("the backup policy must be a JSON object")
    name = check_policy_name(doc.get("Name"))
    auto = doc.get("AutoRestoreOnDataLoss")
    if not isinstance(auto, bool):
        raise PolicyError("AutoRestoreOnDataLoss is required and must be true or false")
    mib = doc.get("MaxIncrementalBackups")
    if not isinstance(mib, int) or isinstance(mib, bool):
        raise PolicyError("MaxIncrementalBackups is required and must be an integer")
    if not 0 <= mib <= MAX_INCREMENTAL_BACKUPS:
        raise PolicyError(f"MaxIncrementalBackups must be between 0 and 255, not {mib}")
    if "Schedule" not in doc:
        raise PolicyError("Schedule is required")
    if "Storage" not in doc:
        raise PolicyError("Storage is required")
    return BackupPolicy(
        name=name,
        auto_restore_on_data_loss=auto,
        max_incremental_backups=mib,
        schedule=parse_schedule(doc["Schedule"]),
        storage=parse_storage(doc["Storage"]),
        retention=parse_retention(doc.get("RetentionPolicy")),
    )


# --- Names and inheritance ---------------------------------------------------------

_NAME_RE = re.compile(r"^fabric:/[^/~\s][^~\s]*$")


def check_application_name(name: str) -> str:
    """Check an application name such as ``fabric:/Shop``."""
    if not _NAME_RE.match(name) or "/" in name[len("fabric:/") :]:
        raise PolicyError(f"{name!r} is not an application name such as 'fabric:/Shop'")
    return name


def check_service_name(name: str, application: str) -> str:
    """Check a service name such as ``fabric:/Shop/Orders`` inside *application*."""
    if not _NAME_RE.match(name) or not name.startswith(application + "/") or name.endswith("/"):
        raise PolicyError(
            f"{name!r} is not a service name inside {application!r} such as '{application}/Orders'"
        )
    return name


def name_from_id(entity_id: str) -> str:
    """Turn a path id (``Shop~Orders``) into a name (``fabric:/Shop/Orders``)."""
    if not entity_id or entity_id.startswith(("~", "/")):
        raise PolicyError(
            f"{entity_id!r} is not an application or service id such as 'Shop~Orders'"
        )
    return "fabric:/" + entity_id.replace("~", "/")


def id_from_name(name: str) -> str:
    """Turn a name (``fabric:/Shop/Orders``) into a path id (``Shop~Orders``)."""
    return name.removeprefix("fabric:/").replace("/", "~")


@dataclass(frozen=True)
class EntityRef:
    """An application, a service or a partition, as a scope for policies and suspension."""

    kind: Scope
    key: str  # the application name, the service name, or the partition id


@dataclass(frozen=True)
class EffectiveConfig:
    """What applies to an entity, and where it comes from (``Invalid`` = nowhere)."""

    policy_name: str | None
    policy_from: Scope | Literal["Invalid"]
    suspended: bool
    suspended_from: Scope | Literal["Invalid"]


def effective_config(
    chain: list[EntityRef],
    mappings: Mapping[EntityRef, str],
    suspensions: set[EntityRef],
) -> EffectiveConfig:
    """
    Resolve the policy and suspension for the last entity of *chain*.

    *chain* goes from the application down to the entity itself
    (``[app]``, ``[app, service]`` or ``[app, service, partition]``). The lowest
    mapping wins; a suspension anywhere on the chain applies, reported from the
    lowest level where it was made.
    """
    policy: str | None = None
    policy_from: Scope | Literal["Invalid"] = "Invalid"
    suspended_from: Scope | Literal["Invalid"] = "Invalid"
    for entity in chain:
        if entity in mappings:
            policy, policy_from = mappings[entity], entity.kind
        if entity in suspensions:
            suspended_from = entity.kind
    suspended = suspended_from != "Invalid" and policy is not None
    return EffectiveConfig(
        policy, policy_from, suspended, suspended_from if suspended else "Invalid"
    )


class _InChain(Protocol):
    @property
    def partition_id(self) -> str: ...
    @property
    def application(self) -> str: ...
    @property
    def service(self) -> str: ...
    def chain(self) -> list[EntityRef]: ...


class EffectiveConfigs:
    """
    ``effective_config`` for many partitions, each service resolved once.

    Most partitions inherit their protection from their service or application,
    so only those with a mapping or suspension of their own are resolved apart:
    a fleet-wide pass costs a dictionary lookup a partition.
    """

    def __init__(self, mappings: Mapping[EntityRef, str], suspensions: set[EntityRef]) -> None:
        self._mappings, self._suspensions = mappings, suspensions
        self._own = {e.key for e in (*mappings, *suspensions) if e.kind == "Partition"}
        self._by_service: dict[tuple[str, str], EffectiveConfig] = {}

    def of(self, p: _InChain) -> EffectiveConfig:
        """The effective configuration of partition *p*."""
        if p.partition_id in self._own:
            return effective_config(p.chain(), self._mappings, self._suspensions)
        svc = (p.application, p.service)
        found = self._by_service.get(svc)
        if found is None:
            found = effective_config(p.chain()[:2], self._mappings, self._suspensions)
            self._by_service[svc] = found
        return found
