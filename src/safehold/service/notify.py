"""
Alert delivery: webhooks (a generic JSON body, or Alertmanager's webhook format) and e-mail.

Channels come from a JSON file the controller is given::

    {"Webhooks": [{"Url": "https://hooks.example/safehold", "Format": "json",
                   "Secret": "…", "TimeoutSeconds": 10},
                  {"Url": "http://alertmanager-bridge:9095/hook", "Format": "alertmanager"}],
     "Email": {"Host": "smtp.example", "Port": 587, "StartTls": true, "CaFile": null,
               "Username": "safehold", "Password": "…",
               "From": "safehold@example", "To": ["ops@example"]}}

A webhook with a ``Secret`` is signed: ``X-Safehold-Timestamp: <unix seconds>`` and
``X-Safehold-Signature: sha256=<hex>``, the HMAC-SHA256 with the secret of
``<timestamp>.<body>``, so a receiver can check both origin and freshness.
E-mail goes over SMTP with STARTTLS (refused if the server does not offer it,
unless ``StartTls`` is false) and the certificate is verified (``CaFile`` for a
private CA). Each send is tried three times with exponential backoff; what still
fails is reported to ``service.alerts``, which tries again later. Secrets are
never logged nor shown (``repr`` hides them).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import httpx
import tenacity

from safehold.core.errors import SafeholdError, UsageError
from safehold.core.snapshot import format_time
from safehold.service.drill_records import AlertRecord

__all__ = [
    "Channels",
    "DeliveryError",
    "EmailChannel",
    "Webhook",
    "alertmanager_body",
    "deliver",
    "json_body",
    "load_channels",
    "parse_channels",
    "sign",
]

log = logging.getLogger("safehold.alerts")

SIGNATURE_HEADER = "X-Safehold-Signature"
TIMESTAMP_HEADER = "X-Safehold-Timestamp"
_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "no end" for a firing alert


class DeliveryError(SafeholdError):
    """An alert could not be delivered to a channel."""

    code = "SAFEHOLD_E_ALERT_DELIVERY"


@dataclass(frozen=True)
class Webhook:
    """An HTTP(S) endpoint that takes a POST per batch of alerts."""

    url: str
    format: Literal["json", "alertmanager"] = "json"
    secret: str | None = field(default=None, repr=False)
    timeout: float = 10.0


@dataclass(frozen=True)
class EmailChannel:
    """An SMTP server and the recipients of the alert e-mails."""

    host: str
    sender: str
    to: tuple[str, ...]
    port: int = 587
    starttls: bool = True
    ca_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0


@dataclass(frozen=True)
class Channels:
    """Where alerts go."""

    webhooks: tuple[Webhook, ...] = ()
    email: EmailChannel | None = None

    @property
    def empty(self) -> bool:
        """No channel at all."""
        return not self.webhooks and self.email is None


def _str(doc: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise UsageError(f"{where}.{key} must be a non-empty string")
    return value


def parse_channels(doc: object) -> Channels:
    """
    Parse the alert channels document.

    Raises:
        UsageError: it is malformed; the message names the field (never a secret).
    """
    if not isinstance(doc, Mapping):
        raise UsageError("the alert channels must be a JSON object")
    hooks = []
    for i, h in enumerate(doc.get("Webhooks") or []):
        where = f"Webhooks[{i}]"
        if not isinstance(h, Mapping):
            raise UsageError(f"{where} must be an object")
        url = _str(h, "Url", where)
        assert url is not None
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"{where}.Url must be an http(s) URL")
        fmt = h.get("Format", "json")
        if fmt not in ("json", "alertmanager"):
            raise UsageError(f"{where}.Format must be 'json' or 'alertmanager'")
        timeout = float(h.get("TimeoutSeconds", 10))
        hooks.append(Webhook(url, fmt, _str(h, "Secret", where, required=False), timeout))
    email = None
    if doc.get("Email"):
        e = doc["Email"]
        if not isinstance(e, Mapping):
            raise UsageError("Email must be an object")
        to = e.get("To")
        if not isinstance(to, list) or not to or not all(isinstance(x, str) for x in to):
            raise UsageError("Email.To must be a non-empty list of addresses")
        host, sender = _str(e, "Host", "Email"), _str(e, "From", "Email")
        assert host is not None
        assert sender is not None
        email = EmailChannel(
            host=host,
            sender=sender,
            to=tuple(to),
            port=int(e.get("Port", 587)),
            starttls=bool(e.get("StartTls", True)),
            ca_file=_str(e, "CaFile", "Email", required=False),
            username=_str(e, "Username", "Email", required=False),
            password=_str(e, "Password", "Email", required=False),
            timeout=float(e.get("TimeoutSeconds", 10)),
        )
    return Channels(tuple(hooks), email)


def load_channels(path: Path) -> Channels:
    """Read the alert channels from a JSON file."""
    try:
        return parse_channels(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the alert channels file {path}: {exc}") from exc


# --- Bodies --------------------------------------------------------------------------


def _alert_json(a: AlertRecord) -> dict[str, Any]:
    return {
        "Key": a.key,
        "Event": a.event,
        "Subject": a.subject,
        "Severity": a.severity,
        "State": a.state,
        "Message": a.message,
        "StartsAt": format_time(a.started_at),
        "ChangedAt": format_time(a.changed_at),
    }


def json_body(alerts: Sequence[AlertRecord]) -> dict[str, Any]:
    """safehold's own webhook body."""
    return {"Source": "safehold", "Alerts": [_alert_json(a) for a in alerts]}


def alertmanager_body(alerts: Sequence[AlertRecord], external_url: str = "") -> dict[str, Any]:
    """Alertmanager's webhook body (version 4), one entry per alert."""
    entries = []
    for a in alerts:
        labels = {
            "alertname": a.event,
            "severity": a.severity,
            "subject": a.subject,
            "service": "safehold",
        }
        entries.append(
            {
                "status": a.state,
                "labels": labels,
                "annotations": {"summary": a.message},
                "startsAt": format_time(a.started_at),
                "endsAt": format_time(a.changed_at) if a.state == "resolved" else _ZERO_TIME,
                "generatorURL": external_url,
                "fingerprint": hashlib.sha256(a.key.encode()).hexdigest()[:16],
            }
        )
    firing = any(a.state == "firing" for a in alerts)
    return {
        "version": "4",
        "groupKey": '{}:{service="safehold"}',
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": "safehold",
        "groupLabels": {"service": "safehold"},
        "commonLabels": {"service": "safehold"},
        "commonAnnotations": {},
        "externalURL": external_url,
        "alerts": entries,
    }


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for *body* sent at *timestamp*."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


# --- Sending -------------------------------------------------------------------------


def _retrying() -> tenacity.Retrying:
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_exponential(multiplier=0.2, max=2),
        retry=tenacity.retry_if_exception_type((httpx.HTTPError, OSError, smtplib.SMTPException)),
        reraise=True,
    )


def _post(hook: Webhook, alerts: Sequence[AlertRecord]) -> None:
    doc = alertmanager_body(alerts) if hook.format == "alertmanager" else json_body(alerts)
    body = json.dumps(doc).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "safehold-alerts"}
    if hook.secret:
        stamp = str(int(time.time()))
        headers[TIMESTAMP_HEADER] = stamp
        headers[SIGNATURE_HEADER] = sign(hook.secret, stamp, body)
    with httpx.Client(timeout=hook.timeout) as client:
        resp = client.post(hook.url, content=body, headers=headers)
        resp.raise_for_status()


def _mail(ch: EmailChannel, alerts: Sequence[AlertRecord]) -> None:
    firing = [a for a in alerts if a.state == "firing"]
    resolved = [a for a in alerts if a.state == "resolved"]
    msg = EmailMessage()
    head = alerts[0]
    msg["Subject"] = (
        f"[safehold] {len(firing)} firing, {len(resolved)} resolved: {head.event} {head.subject}"
    )
    msg["From"] = ch.sender
    msg["To"] = ", ".join(ch.to)
    lines = [
        f"{a.state.upper()} {a.severity} {a.event} {a.subject}: {a.message} "
        f"(since {format_time(a.started_at)})"
        for a in alerts
    ]
    msg.set_content("\n".join(lines) + "\n")
    with smtplib.SMTP(ch.host, ch.port, timeout=ch.timeout) as smtp:
        smtp.ehlo()
        if ch.starttls:
            smtp.starttls(context=ssl.create_default_context(cafile=ch.ca_file))
            smtp.ehlo()
        if ch.username:
            smtp.login(ch.username, ch.password or "")
        smtp.send_message(msg)


def _origin(url: str) -> str:
    u = httpx.URL(url)
    return f"{u.scheme}://{u.host}" + (f":{u.port}" if u.port else "")


def deliver(channels: Channels, alerts: Sequence[AlertRecord]) -> list[str]:
    """
    Send *alerts* to every channel; return one line per channel that failed.

    Each channel is tried three times (exponential backoff) before it counts as
    failed. The lines name the channel and the error, never a secret.
    """
    errors: list[str] = []
    if not alerts:
        return errors
    for hook in channels.webhooks:
        try:
            _retrying()(_post, hook, alerts)
        except (httpx.HTTPError, OSError) as exc:
            # A webhook URL may carry a token: only its origin is named, never the
            # path or query, nor httpx's message (which quotes the URL).
            why = (
                f"HTTP {exc.response.status_code}"
                if isinstance(exc, httpx.HTTPStatusError)
                else type(exc).__name__
            )
            errors.append(f"webhook {_origin(hook.url)}: {why}")
    if channels.email is not None:
        try:
            _retrying()(_mail, channels.email, alerts)
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            errors.append(f"e-mail via {channels.email.host}: {type(exc).__name__}: {exc}")
    for line in errors:
        log.warning("alert delivery failed: %s", line)
    return errors
