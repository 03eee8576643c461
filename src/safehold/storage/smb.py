"""
The SMB backend: ``smb://HOST[:PORT]/SHARE[/path]``, spoken directly with
``smbprotocol`` (no mount needed).

Objects are files under the share's path; a name's ``/`` separators are
directories. ``put`` writes a temporary file (``.tmp-…``) in the target
directory and renames it over the name, which the server does atomically, so
readers see the whole file or none of it; ``list`` skips temporary files.

smbprotocol waits for answers without a deadline, so every operation here runs
under a watchdog: when no progress is made for ``timeout`` seconds, the
connection is closed under the waiting call, which then fails and is reported
as ``StorageUnavailable``. The next operation opens a new connection.

**Append-only** (``enable_lock(LockPolicy("append-only"))``): the client
records the policy in ``lock-policy`` and then never deletes or replaces a
covered name (lock files stay mutable). Against someone holding the share's
credential, the server keeps it: Samba's ``vfs objects = worm`` refuses every
open for writing, deleting or renaming of a file older than
``worm:grace_period`` seconds. The client cannot see the share's settings, so
it cannot check them; see docs/storage.md.

Errors are translated at this edge, by NT status::

    object or path not found        -> ObjectNotFound (StorageNotFound if the share
                                       path itself is gone)
    bad network name (no share)     -> StorageNotFound
    logon failure, access denied    -> StoragePermissionDenied
    disk full, quota exceeded       -> StorageFull
    closed, reset or timed-out connections, busy server -> StorageUnavailable
    anything else                   -> StorageError
"""

from __future__ import annotations

import errno
import secrets
import stat as stat_mod
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

import smbclient
from smbprotocol.exceptions import (
    SMBAuthenticationError,
    SMBConnectionClosed,
    SMBException,
    SMBOSError,
    SMBResponseException,
)

from safehold.core.errors import UsageError
from safehold.storage._shared import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    check_offsets,
    check_range,
    env_value,
    redact_url,
)
from safehold.storage.base import (
    LOCK_POLICY_NAME,
    Hold,
    LockPolicy,
    ObjectInfo,
    StorageProperties,
    validate_name,
)
from safehold.storage.errors import (
    ImmutabilityUnsupported,
    ObjectLocked,
    ObjectNotFound,
    StorageError,
    StorageFull,
    StorageNotFound,
    StoragePermissionDenied,
    StorageUnavailable,
)

__all__ = ["SMBStorage", "from_url"]

_TMP_PREFIX = ".tmp-"
# Reads and writes go in pieces this big, and each piece re-arms the watchdog,
# so the timeout bounds a stall, not the transfer of a large object.
_CHUNK = 4 << 20

# NT status codes (MS-ERREF 2.3.1), grouped by what they mean to a caller.
_NO_SHARE = frozenset({0xC00000CC})  # STATUS_BAD_NETWORK_NAME
_DENIED = frozenset(
    {
        0xC0000022,  # ACCESS_DENIED
        0xC0000061,  # PRIVILEGE_NOT_HELD
        0xC000006A,  # WRONG_PASSWORD
        0xC000006D,  # LOGON_FAILURE
        0xC000006E,  # ACCOUNT_RESTRICTION
        0xC0000071,  # PASSWORD_EXPIRED
        0xC0000072,  # ACCOUNT_DISABLED
        0xC00000CA,  # NETWORK_ACCESS_DENIED
        0xC0000224,  # PASSWORD_MUST_CHANGE
        0xC0000234,  # ACCOUNT_LOCKED_OUT
    }
)
_FULL = frozenset({0xC000007F, 0xC0000044})  # DISK_FULL, QUOTA_EXCEEDED
_TRANSIENT = frozenset(
    {
        0xC0000043,  # SHARING_VIOLATION: another opener, gone soon
        0xC0000056,  # DELETE_PENDING
        0xC000009A,  # INSUFFICIENT_RESOURCES
        0xC00000B5,  # IO_TIMEOUT
        0xC00000C9,  # NETWORK_NAME_DELETED
        0xC0000203,  # USER_SESSION_DELETED
        0xC0000205,  # INSUFF_SERVER_RESOURCES
        0xC000035C,  # NETWORK_SESSION_EXPIRED
        0xC0000466,  # SERVER_UNAVAILABLE
    }
)


class _Watchdog:
    """Calls *on_expire* once if not kicked for *seconds*; kicking re-arms it."""

    def __init__(self, seconds: float, on_expire: Callable[[], None]) -> None:
        self._seconds = seconds
        self._on_expire = on_expire
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self.fired = False

    def _expire(self) -> None:
        with self._lock:
            if self._timer is None:
                return
            self.fired = True
        self._on_expire()

    def kick(self) -> None:
        """Start or restart the countdown."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self._seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> None:
        """Stop for good."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None


class SMBStorage:
    """
    A storage in a directory of an SMB share.

    *username* may be ``DOMAIN\\user`` or ``user@domain``; with no username,
    smbprotocol tries Kerberos. Each instance keeps its own connection.
    """

    def __init__(
        self,
        host: str,
        share: str,
        path: str = "",
        *,
        port: int = 445,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        timeout: float = DEFAULT_TIMEOUT,
        connections: int = 4,
    ) -> None:
        if not host or not share:
            raise UsageError("an SMB storage needs a host and a share: smb://HOST/SHARE[/path]")
        self._host = host
        self._port = port
        self._path = path.strip("/")
        self._share = rf"\\{host}\{share}"
        self._root = self._share
        if self._path:
            self._root += "\\" + self._path.replace("/", "\\")
        self._username = username
        self._password = password
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._cache: dict[str, Any] = {}  # smbclient's connection pool, ours alone
        self._lock = threading.Lock()
        self._made_dirs: set[str] = set()
        hostport = host if port == 445 else f"{host}:{port}"
        shown = f"smb://{hostport}/{share}/{self._path}".rstrip("/")
        # put copies each 4 MiB piece as it sends it, so a caller's buffer will do.
        self._props = StorageProperties(location=shown, connections=connections, accepts_views=True)
        self._policy: LockPolicy | None = None
        self._policy_read = False

    @property
    def properties(self) -> StorageProperties:
        """Describe the storage."""
        return self._props

    def _unc(self, name: str) -> str:
        return self._root + "\\" + validate_name(name).replace("/", "\\")

    def _kwargs(self) -> dict[str, Any]:
        return {
            "username": self._username,
            "password": self._password,
            "port": self._port,
            "connection_timeout": self._connect_timeout,
            "connection_cache": self._cache,
        }

    def _drop_connection(self) -> None:
        """Close the connection so that calls waiting on it fail now."""
        # Without self._lock: the watchdog calls this while a stuck call may hold it.
        connections = list(self._cache.values())
        self._cache.clear()
        for connection in connections:
            # Best effort: the connection is being thrown away either way.
            with suppress(Exception):
                # The server closes every handle of a connection that goes away.
                # smbprotocol cannot learn it (closing needs a round trip), and
                # smbclient warns about each handle it thinks open when collected;
                # so record it in the one place smbprotocol keeps it.
                for session in list(connection.session_table.values()):
                    for handle in list(session.open_table.values()):
                        handle._connected = False
                    session.open_table.clear()
            with suppress(Exception):
                # close=False: no logoff round trip to a server that may be gone.
                connection.disconnect(close=False)

    @contextmanager
    def _operation(self, what: str) -> Iterator[_Watchdog]:
        """
        Run one operation under the watchdog and translate its errors.

        Yields the watchdog, for long transfers to kick as they progress.
        """
        dog = _Watchdog(self._timeout, self._drop_connection)
        dog.kick()
        try:
            with self._lock:
                # Registering under the lock: two threads must not both open a connection.
                smbclient.register_session(self._host, **self._kwargs())
            yield dog
        except StorageError:
            raise
        except Exception as exc:
            if dog.fired:
                raise StorageUnavailable(
                    f"{what}: no answer within {self._timeout:g}s from {self._props.location}"
                ) from exc
            self._raise(what, exc)
        finally:
            dog.cancel()

    def _raise(self, what: str, exc: Exception) -> NoReturn:
        where = self._props.location
        status = _status(exc)
        if status in _NO_SHARE:
            raise StorageNotFound(f"{what}: share not found: {where}") from exc
        if status in _DENIED or isinstance(exc, SMBAuthenticationError):
            raise StoragePermissionDenied(
                f"{what}: access denied in {where}{_hex(status)}"
            ) from exc
        if status in _FULL or getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(f"{what}: no space left in {where}") from exc
        if getattr(exc, "errno", None) == errno.ENOENT:
            raise ObjectNotFound(f"{what}: not found in {where}") from exc
        if status in _TRANSIENT:
            if status in (0xC0000203, 0xC000035C, 0xC00000C9):
                self._drop_connection()  # the session is gone; log on afresh next time
            raise StorageUnavailable(f"{what}: server busy in {where}{_hex(status)}") from exc
        if _is_connection_error(exc):
            self._drop_connection()
            raise StorageUnavailable(
                f"{what}: connection to {where} failed ({type(exc).__name__})"
            ) from exc
        # Not understood: do not trust the connection with the next request either.
        self._drop_connection()
        raise StorageError(f"{what}: {type(exc).__name__}{_hex(status)} in {where}") from exc

    def _root_missing(self) -> bool:
        """Tell whether the share path itself is missing, after a not-found error."""
        try:
            with self._operation("check path"):
                smbclient.stat(self._root, **self._kwargs())
        except (ObjectNotFound, StorageNotFound):
            return True
        return False

    @contextmanager
    def _object_missing(self, name: str) -> Iterator[None]:
        """Report a not-found object as StorageNotFound when the share path is gone."""
        try:
            yield
        except ObjectNotFound:
            if self._root_missing():
                raise StorageNotFound(f"{name}: {self._props.location} does not exist") from None
            raise

    def create(self) -> None:
        """Create the directory on the share if it does not exist; the share must exist."""
        try:
            with self._operation("create"):
                # The share first: smbclient's makedirs would walk up past it.
                smbclient.stat(self._share, **self._kwargs())
        except ObjectNotFound:
            raise StorageNotFound(f"create: share not found: {self._props.location}") from None
        if self._path:
            with self._operation("create"):
                smbclient.makedirs(self._root, exist_ok=True, **self._kwargs())

    def stat(self, name: str) -> ObjectInfo:
        """Return the file's size."""
        path = self._unc(name)
        with self._object_missing(name), self._operation(name):
            st = smbclient.stat(path, **self._kwargs())
        if stat_mod.S_ISDIR(st.st_mode):
            raise ObjectNotFound(f"{name}: not found in {self._props.location} (a directory)")
        return ObjectInfo(name, int(st.st_size))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield files whose names start with *prefix*, sorted by name."""
        head, _, _ = prefix.rpartition("/")
        if head:
            validate_name(head)
        try:
            yield from self._walk(head, prefix)
        except ObjectNotFound:
            if self._root_missing():
                raise StorageNotFound(f"{self._props.location} does not exist") from None
            if not head:
                raise
            # The directory that would hold matches does not exist: nothing matches.

    def _walk(self, rel_dir: str, prefix: str) -> Iterator[ObjectInfo]:
        directory = self._root + ("\\" + rel_dir.replace("/", "\\") if rel_dir else "")
        with self._operation(f"list {rel_dir or '/'}"):
            # A directory sorts as "name/", so walking in this order yields full
            # names in global sorted order ("ab-c" < "ab/x"), as the file backend does.
            entries = sorted(
                (
                    (
                        e.name + "/" if e.is_dir(follow_symlinks=False) else e.name,
                        int(e.smb_info.end_of_file),
                    )
                    for e in smbclient.scandir(directory, **self._kwargs())
                    if not e.name.startswith(_TMP_PREFIX)
                ),
            )
        for key, size in entries:
            rel = f"{rel_dir}/{key}" if rel_dir else key
            if key.endswith("/"):
                if rel.startswith(prefix) or prefix.startswith(rel):
                    try:
                        yield from self._walk(rel[:-1], prefix)
                    except ObjectNotFound:
                        continue  # removed while we listed
            elif rel.startswith(prefix):
                yield ObjectInfo(rel, size)

    @contextmanager
    def _open(self, path: str, mode: str) -> Iterator[Any]:
        """Open *path* unbuffered, so that each read or write is one request; always close it."""
        f = smbclient.open_file(path, mode=mode, buffering=0, **self._kwargs())
        try:
            yield f
            f.close()
        finally:
            if not f.closed:
                # After a failure; if the connection is gone, _drop_connection
                # marks the handle closed.
                with suppress(Exception):
                    f.close()

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Read *length* bytes at *offset*; a short read raises ``ReadRangeError``."""
        path = self._unc(name)
        check_offsets(offset, length)
        parts: list[bytes] = []
        got = 0
        with (
            self._object_missing(name),
            self._operation(name) as dog,
            self._open(path, "rb") as f,
        ):
            if offset:
                f.seek(offset)
            while length is None or got < length:
                piece = f.read(_CHUNK if length is None else min(length - got, _CHUNK))
                if not piece:
                    break
                parts.append(piece)
                got += len(piece)
                dog.kick()
        return check_range(name, offset, length, b"".join(parts), self._props.location)

    def put(self, name: str, data: bytes) -> None:
        """
        Write a temporary file next to the name, then rename it over the name.

        In append-only mode a covered name that exists is never replaced:
        the same bytes again succeed, other bytes raise ``ObjectLocked``.
        """
        path = self._unc(name)
        policy = self.lock_policy()
        if policy is not None and policy.covers(name) and self._exists(name):
            if self.get(name) == bytes(data):
                return
            raise ObjectLocked(
                f"{name}: cannot replace: {name} held (append-only) for good "
                f"in {self._props.location}"
            )
        parent = path.rpartition("\\")[0]
        if parent not in self._made_dirs:
            self._make_parent(name, parent)
        tmp = f"{parent}\\{_TMP_PREFIX}{secrets.token_hex(8)}"
        try:
            with self._object_missing(name), self._operation(name) as dog:
                with self._open(tmp, "wb") as f:
                    view = memoryview(data)
                    while view:
                        written = int(f.write(view[:_CHUNK]))
                        if written <= 0:
                            raise StorageUnavailable(f"{name}: the server took no data")
                        view = view[written:]
                        dog.kick()
                smbclient.replace(tmp, path, **self._kwargs())
        except StorageUnavailable:
            raise  # the connection is gone: nothing to clean up that we could reach
        except BaseException:
            self._remove_quietly(tmp)
            raise

    def _make_parent(self, name: str, parent: str) -> None:
        """Create the directories between the storage's directory and *name*."""
        # The storage's own directory must exist already, as with the file
        # backend: a mistyped path fails instead of starting a new repository.
        with self._object_missing(name), self._operation(name):
            smbclient.stat(self._root, **self._kwargs())
            smbclient.makedirs(parent, exist_ok=True, **self._kwargs())
        self._made_dirs.add(parent)

    def _remove_quietly(self, path: str) -> None:
        """Remove a temporary file after a failed put, if the server lets us."""
        try:
            with self._operation("clean up"):
                smbclient.remove(path, **self._kwargs())
        except StorageError:
            pass  # left behind: list skips it, and it is never read

    def delete(self, name: str) -> None:
        """
        Remove the file; a missing file is fine, a missing share path is not.

        In append-only mode a covered file that exists raises ``ObjectLocked``.
        """
        path = self._unc(name)
        hold = self.hold(name)
        if hold is not None:
            raise ObjectLocked(
                f"{name}: cannot delete: {hold.describe()} in {self._props.location}"
            )
        try:
            with self._operation(name):
                smbclient.remove(path, **self._kwargs())
        except ObjectNotFound:
            if self._root_missing():
                raise StorageNotFound(f"{name}: {self._props.location} does not exist") from None

    def close(self) -> None:
        """Close the connection; the server ends the session with it."""
        # No logoff: it is a round trip that could wait on a dead server forever.
        self._drop_connection()

    # ImmutableStorage
    def _exists(self, name: str) -> bool:
        try:
            self.stat(name)
        except ObjectNotFound:
            return False
        return True

    def lock_policy(self) -> LockPolicy | None:
        """Return the policy recorded on the share (read once)."""
        if not self._policy_read:
            try:
                data: bytes | None = self.get(LOCK_POLICY_NAME)
            except ObjectNotFound:
                data = None
            self._policy = LockPolicy.from_bytes(data) if data is not None else None
            self._policy_read = True
        return self._policy

    def enable_lock(self, policy: LockPolicy) -> None:
        """
        Record an append-only policy; the share's ``worm`` module keeps it against others.

        Raises:
            ImmutabilityUnsupported: the mode is not ``append-only``.
        """
        if policy.mode != "append-only":
            raise ImmutabilityUnsupported(
                f"an SMB repository can be append-only, not {policy.mode}: {self._props.location}"
            )
        self.create()
        self.put(LOCK_POLICY_NAME, policy.to_bytes())
        self._policy, self._policy_read = policy, True

    def hold(self, name: str) -> Hold | None:
        """An existing covered object under an append-only policy is held for good."""
        validate_name(name)
        policy = self.lock_policy()
        if policy is None or not policy.covers(name) or not self._exists(name):
            return None
        return Hold(name, policy.mode, None)

    def extend_hold(self, name: str, until: datetime) -> None:
        """Nothing to do: append-only holds never end."""
        del until
        self.stat(name)


def _status(exc: BaseException) -> int | None:
    """Return the NT status an smbprotocol error carries, if any."""
    if isinstance(exc, SMBOSError):
        return int(exc.ntstatus)
    if isinstance(exc, SMBResponseException):
        return int(exc.status)
    return None


def _hex(status: int | None) -> str:
    return f" (NT status 0x{status:08x})" if status is not None else ""


def _is_connection_error(exc: BaseException) -> bool:
    """Tell whether *exc* means the connection failed, rather than the request."""
    if isinstance(exc, SMBConnectionClosed):
        return True
    if isinstance(exc, OSError) and not isinstance(exc, SMBOSError):
        return True  # refused, reset, broken pipe, socket timeout
    if isinstance(exc, ValueError) and isinstance(exc.__cause__, OSError):
        return True  # smbprotocol reports a failed connect as ValueError from the OSError
    if type(exc) is SMBException:
        # A bare SMBException is how smbprotocol reports a negotiate that timed
        # out or a connection it lost; its other failures have their own types.
        text = str(exc).lower()
        return "timeout" in text or "connection" in text
    return False


def from_url(url: str, env: Mapping[str, str]) -> SMBStorage:
    """
    Open ``smb://[USER@]HOST[:PORT]/SHARE[/path]`` with credentials from *env*.

    Reads ``SAFEHOLD_SMB_USER`` (unless the URL names the user) and
    ``SAFEHOLD_SMB_PASSWORD``. A password in the URL is refused.

    Raises:
        UsageError: the URL is malformed or holds a password.
    """
    parts = urlsplit(url)
    shown = redact_url(url)
    if parts.password is not None or parts.query:
        raise UsageError(f"{shown}: put the SMB password in SAFEHOLD_SMB_PASSWORD, not in the URL")
    try:
        port = parts.port or 445
    except ValueError:
        raise UsageError(f"{shown}: the port is not a number") from None
    host = parts.hostname or ""
    share, _, path = unquote(parts.path).strip("/").partition("/")
    if not host or not share:
        raise UsageError(f"{shown}: expected smb://HOST[:PORT]/SHARE[/path]")
    username = unquote(parts.username) if parts.username else env_value(env, "SAFEHOLD_SMB_USER")
    return SMBStorage(
        host,
        share,
        path,
        port=port,
        username=username,
        password=env_value(env, "SAFEHOLD_SMB_PASSWORD"),
    )
