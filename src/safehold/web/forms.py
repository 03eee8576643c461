"""
The policy form: HTML form fields to Service Fabric's ``BackupPolicyDescription`` and back.

Validation is SF's own (``core.policy.parse_policy`` through the use cases);
``field_of`` finds which form field an error message is about, so the page can
show it beside that field. Secrets are write-only: the form never carries a
stored secret; an empty secret field on an edit is sent as ``****``, which the
update use case replaces with the stored value.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

__all__ = ["FIELDS", "SECRETS", "field_of", "form_from_policy", "parse_form", "policy_from_form"]

SECRETS = ("PrimaryPassword", "ConnectionString", "SecretAccessKey")
REDACTED = "****"

# Form field → the words SF's messages use for it (most specific first).
FIELDS: dict[str, tuple[str, ...]] = {
    "MaxIncrementalBackups": ("MaxIncrementalBackups",),
    "Interval": ("Interval",),
    "ScheduleFrequencyType": ("ScheduleFrequencyType",),
    "RunDays": ("RunDays",),
    "RunTimes": ("RunTimes",),
    "ScheduleKind": ("ScheduleKind", "Schedule"),
    "Path": ("Path",),
    "PrimaryUserName": ("PrimaryUserName",),
    "PrimaryPassword": ("PrimaryPassword",),
    "ConnectionString": ("ConnectionString",),
    "ContainerName": ("ContainerName",),
    "BucketName": ("BucketName",),
    "Region": ("Region",),
    "EndpointUrl": ("EndpointUrl",),
    "Prefix": ("Prefix",),
    "AccessKeyId": ("AccessKeyId",),
    "SecretAccessKey": ("SecretAccessKey",),
    "StorageKind": ("StorageKind", "Storage"),
    "RetentionDuration": ("RetentionDuration",),
    "MinimumNumberOfBackups": ("MinimumNumberOfBackups",),
    "Name": ("Name", "policy name"),
}

STORAGE_FIELDS = {
    "FileShare": ("FriendlyName", "Path", "PrimaryUserName", "PrimaryPassword"),
    "AzureBlobStore": ("FriendlyName", "ConnectionString", "ContainerName"),
    "S3": (
        "FriendlyName",
        "BucketName",
        "Prefix",
        "Region",
        "EndpointUrl",
        "AccessKeyId",
        "SecretAccessKey",
    ),
}


def parse_form(raw: bytes) -> dict[str, str]:
    """Parse an ``application/x-www-form-urlencoded`` body (the last value of each name)."""
    parsed = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in parsed.items()}


def _int_or_text(value: str) -> Any:
    value = value.strip()
    try:
        return int(value)
    except ValueError:
        return value  # SF's parser reports a non-integer with its own message


def _list(value: str) -> list[str]:
    return [x.strip() for x in value.replace(";", ",").split(",") if x.strip()]


def policy_from_form(form: dict[str, str], *, editing: bool) -> dict[str, Any]:
    """Return the ``BackupPolicyDescription`` a submitted policy form describes."""
    kind = form.get("ScheduleKind", "")
    schedule: dict[str, Any] = {"ScheduleKind": kind}
    if kind == "FrequencyBased":
        schedule["Interval"] = form.get("Interval", "").strip()
    elif kind == "TimeBased":
        schedule["ScheduleFrequencyType"] = form.get("ScheduleFrequencyType", "")
        schedule["RunTimes"] = _list(form.get("RunTimes", ""))
        if schedule["ScheduleFrequencyType"] == "Weekly":
            schedule["RunDays"] = _list(form.get("RunDays", ""))
    storage_kind = form.get("StorageKind", "")
    storage: dict[str, Any] = {"StorageKind": storage_kind}
    for name in STORAGE_FIELDS.get(storage_kind, ()):
        value = form.get(name, "").strip()
        if name in SECRETS and not value:
            if editing:
                storage[name] = REDACTED  # keep what is stored
            continue
        if value:
            storage[name] = value
    doc: dict[str, Any] = {
        "Name": form.get("Name", "").strip(),
        "AutoRestoreOnDataLoss": form.get("AutoRestoreOnDataLoss") == "on",
        "MaxIncrementalBackups": _int_or_text(form.get("MaxIncrementalBackups", "")),
        "Schedule": schedule,
        "Storage": storage,
    }
    duration = form.get("RetentionDuration", "").strip()
    if duration:
        doc["RetentionPolicy"] = {
            "RetentionPolicyType": "Basic",
            "RetentionDuration": duration,
            "MinimumNumberOfBackups": _int_or_text(form.get("MinimumNumberOfBackups", "0") or "0"),
        }
    return doc


def form_from_policy(doc: dict[str, Any]) -> dict[str, str]:
    """Return the form values of a (redacted) policy; secrets are never filled in."""
    schedule = doc.get("Schedule", {})
    storage = doc.get("Storage", {})
    retention = doc.get("RetentionPolicy") or {}
    form = {
        "Name": str(doc.get("Name", "")),
        "AutoRestoreOnDataLoss": "on" if doc.get("AutoRestoreOnDataLoss") else "",
        "MaxIncrementalBackups": str(doc.get("MaxIncrementalBackups", "")),
        "ScheduleKind": str(schedule.get("ScheduleKind", "")),
        "Interval": str(schedule.get("Interval", "")),
        "ScheduleFrequencyType": str(schedule.get("ScheduleFrequencyType", "")),
        "RunDays": ", ".join(schedule.get("RunDays") or []),
        "RunTimes": ", ".join(schedule.get("RunTimes") or []),
        "StorageKind": str(storage.get("StorageKind", "")),
        "RetentionDuration": str(retention.get("RetentionDuration", "")),
        "MinimumNumberOfBackups": str(retention.get("MinimumNumberOfBackups", "")),
    }
    for fields in STORAGE_FIELDS.values():
        for name in fields:
            if name not in SECRETS:
                form[name] = str(storage.get(name, ""))
    return form


def stored_secrets(doc: dict[str, Any]) -> set[str]:
    """The secret fields a (redacted) policy has a value for."""
    storage = doc.get("Storage", {})
    return {k for k in SECRETS if storage.get(k)}


def field_of(message: str) -> str | None:
    """Return the form field an SF validation message is about, if one is named."""
    for field, words in FIELDS.items():
        if any(w in message for w in words):
            return field
    return None
