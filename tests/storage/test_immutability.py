"""
Immutable repositories against an attacker who holds the full credential.

The attacker has what the backup host has: the repository password, and the
storage's own credential (the S3 key, the SMB user, the files' owner). They
try to delete and to overwrite snapshots, packs, index and key files, through
safehold's storage API, the ``safehold`` CLI and the storage's own interface.
Afterwards the repository checks clean and every snapshot restores bit for bit.

Against real servers: moto's S3 Object Lock, Samba's ``vfs_worm`` module, and
ext4's inode flags; Azurite, which keeps no blob immutability, must be refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from safehold.storage import (
    LOCK_POLICY_NAME,
    ImmutabilityUnsupported,
    LockPolicy,
    ObjectLocked,
    ObjectNotFound,
    Storage,
    immutable,
)
from safehold.storage.file import FileStorage
from safehold.storage.memory import MemoryStorage
from tests.storage import servers
from tests.storage.servers import S3Server, unique

PASSWORD = "attacker-knows-this-too"
Cli = Callable[..., subprocess.CompletedProcess[str]]


# ---------------------------------------------------------------- helpers


def _cli(env: dict[str, str]) -> Cli:
    def run(*args: str, expect: int | None = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "safehold", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if expect is not None:
            assert expect == proc.returncode, (
                f"safehold {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    return run


def _env(tmp_path: Path, repo: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAFEHOLD_", "AWS_"))}
    env.update(SAFEHOLD_REPO=repo, SAFEHOLD_PASSWORD=PASSWORD, HOME=str(tmp_path / "home"))
    env.update(extra or {})
    return env


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _back_up(run: Cli, tmp_path: Path) -> tuple[Path, list[str], list[dict[str, bytes]]]:
    """Two snapshots of one tree; the second reuses a file of the first (an older pack)."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "shared.bin").write_bytes(os.urandom(300_000))
    expected = []
    for n in range(2):
        if n:
            # Holds are set to the second: the second snapshot's must end later.
            time.sleep(1.1)
        (src / "sub" / "own.bin").write_bytes(os.urandom(200_000 + n))
        (src / "note.txt").write_text(f"version {n}\n" * 1000)
        run("backup", str(src))
        expected.append(_files(src))
    ids = [s["id"] for s in json.loads(run("snapshots", "--json").stdout)]
    assert 2 == len(ids)
    return src, ids, expected


def _assert_nothing_lost(
    run: Cli, tmp_path: Path, src: Path, ids: list[str], expected: list[dict[str, bytes]]
) -> None:
    """Same snapshots; check --read-data clean; each restores to what it held, byte for byte."""
    assert ids == [s["id"] for s in json.loads(run("snapshots", "--json").stdout)]
    run("check", "--read-data")
    for sid, files in zip(ids, expected, strict=True):
        target = tmp_path / f"restored-{sid[:8]}"
        run("restore", sid, "--target", str(target))
        assert files == _files(target / src.name)


def _attack_with_the_cli(run: Cli) -> None:
    """forget and prune with the full password: they keep every held snapshot and pack."""
    proc = run("forget", "--keep-last", "1", "--prune")
    assert "held (" in proc.stdout
    assert "prune: deleted 0 packs" in proc.stdout


def _until(storage: Storage, name: str) -> datetime:
    cap = immutable(storage)
    assert cap is not None
    hold = cap.hold(name)
    assert hold is not None
    assert hold.until is not None
    return hold.until


def _attack_with_the_storage_api(storage: Storage, names: list[str]) -> None:
    """Delete and overwrite every held object through safehold's own storage layer."""
    for name in names:
        before = storage.get(name)
        with pytest.raises(ObjectLocked):
            storage.delete(name)
        with contextlib.suppress(ObjectLocked):
            storage.put(name, b"ransom note")
        assert before == storage.get(name), name


def _held_names(storage: Storage) -> list[str]:
    return [i.name for i in storage.list() if not i.name.startswith("locks/")]


# ---------------------------------------------------------------- memory (reference)


def test_a_hold_ends_and_then_the_object_can_go() -> None:
    """Until the retain-until date delete is refused, naming the date; after it, it works."""
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    store = MemoryStorage(clock=lambda: now[0])
    store.enable_lock(LockPolicy("governance", 7))
    store.put("data/aa/aa01", b"pack")
    with pytest.raises(ObjectLocked, match="until 2030-01-08 00:00 UTC"):
        store.delete("data/aa/aa01")
    now[0] += timedelta(days=7, seconds=1)
    assert store.hold("data/aa/aa01") is None
    store.delete("data/aa/aa01")
    with pytest.raises(ObjectNotFound):
        store.get("data/aa/aa01")


def test_lock_policies_are_checked() -> None:
    """A timed mode needs days; append-only takes none."""
    from safehold.core.errors import UsageError

    with pytest.raises(UsageError):
        LockPolicy("compliance", 0)
    with pytest.raises(UsageError):
        LockPolicy("append-only", 3)
    assert LockPolicy.from_bytes(LockPolicy("governance", 9).to_bytes()) == LockPolicy(
        "governance", 9
    )


# ---------------------------------------------------------------- S3 Object Lock (moto)


def _s3_env(tmp_path: Path, s3: S3Server, url: str) -> dict[str, str]:
    return _env(
        tmp_path,
        url,
        {
            "AWS_ACCESS_KEY_ID": s3.access_key_id,
            "AWS_SECRET_ACCESS_KEY": s3.secret_access_key,
            "AWS_ENDPOINT_URL": s3.endpoint,
            "AWS_REGION": "us-east-1",
        },
    )


def _boto(s3: S3Server) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key,
        region_name="us-east-1",
    )


def test_s3_compliance_lock_survives_an_attacker_with_the_key(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """Delete markers, new versions, version deletes, forget and prune: nothing is lost."""
    from botocore.exceptions import ClientError

    from safehold.storage.s3 import S3Storage

    bucket = unique("lk-")
    run = _cli(_s3_env(tmp_path, s3_server, f"s3://{bucket}/repo"))
    run("init", "--lock", "compliance", "--lock-days", "1")
    src, ids, expected = _back_up(run, tmp_path)
    storage = S3Storage(
        bucket,
        "repo",
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
        endpoint_url=s3_server.endpoint,
    )

    # forget says what it keeps because it is held, and until when.
    proc = run("forget", "--keep-last", "1", "--json")
    (group,) = json.loads(proc.stdout)["groups"]
    assert ids == group["keep"]
    assert [] == group["remove"]
    (held,) = group["held"]
    assert f"snapshots/{ids[0]}" == held["name"]
    assert "compliance" == held["mode"]
    until = datetime.fromisoformat(held["until"].replace("Z", "+00:00"))
    assert timedelta(hours=23) < until - datetime.now(UTC) <= timedelta(days=1)

    # The first backup's packs, reused by the second snapshot, end their hold
    # before it; prune moves every pack's hold to the newest snapshot's.
    newest = max(_until(storage, i.name) for i in storage.list("snapshots/"))
    packs = [i.name for i in storage.list("data/")]
    assert min(_until(storage, p) for p in packs) < newest
    _attack_with_the_cli(run)
    assert min(_until(storage, p) for p in packs) >= newest

    client = _boto(s3_server)
    versions = client.list_object_versions(Bucket=bucket, Prefix="repo/")["Versions"]
    originals = [(v["Key"], v["VersionId"]) for v in versions if not v["Key"].endswith("/")]
    held = [(k, v) for k, v in originals if "/locks/" not in k]
    assert any("/data/" in k for k, _ in held)
    assert any("/snapshots/" in k for k, _ in held)
    for key, version in held:
        with pytest.raises(ClientError, match="AccessDenied"):
            client.delete_object(Bucket=bucket, Key=key, VersionId=version)
        with pytest.raises(ClientError, match="AccessDenied"):
            client.delete_object(
                Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True
            )
        client.put_object(Bucket=bucket, Key=key, Body=b"encrypted by ransomware")
        client.delete_object(Bucket=bucket, Key=key)  # a delete marker over it all
    batch = client.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": k, "VersionId": v} for k, v in held]},
    )
    assert len(held) == len(batch.get("Errors", ()))
    with pytest.raises(ClientError, match="BucketNotEmpty"):
        client.delete_bucket(Bucket=bucket)

    storage = S3Storage(
        bucket,
        "repo",
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
        endpoint_url=s3_server.endpoint,
    )
    assert LockPolicy("compliance", 1) == storage.lock_policy()  # read past the delete marker
    _attack_with_the_storage_api(storage, _held_names(storage))
    _assert_nothing_lost(run, tmp_path, src, ids, expected)


def test_s3_a_bucket_without_object_lock_gets_it_or_is_refused(s3_server: S3Server) -> None:
    """enable_lock on an existing plain bucket turns Object Lock on (as AWS allows)."""
    from botocore.exceptions import ClientError

    from safehold.storage.s3 import S3Storage

    bucket = unique("lk-")
    storage = S3Storage(
        bucket,
        "",
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
        endpoint_url=s3_server.endpoint,
    )
    storage.create()
    with pytest.raises(ImmutabilityUnsupported):
        storage.enable_lock(LockPolicy("append-only"))
    storage.enable_lock(LockPolicy("governance", 1))
    storage.put("snapshots/s", b"x")
    with pytest.raises(ObjectLocked, match=r"snapshots/s held \(governance\) until"):
        storage.delete("snapshots/s")
    # Governance holds against a delete of the version itself, unless the caller
    # may bypass it (s3:BypassGovernanceRetention, which "s3:*" grants): see docs.
    client = _boto(s3_server)
    (version,) = client.list_object_versions(Bucket=bucket, Prefix="snapshots/s")["Versions"]
    with pytest.raises(ClientError, match="AccessDenied"):
        client.delete_object(Bucket=bucket, Key="snapshots/s", VersionId=version["VersionId"])


# ---------------------------------------------------------------- Azure (Azurite)


def test_azurite_refuses_a_lock_it_cannot_keep(azurite_server: servers.Server) -> None:
    """Azurite accepts immutability headers and keeps nothing: enable_lock must say so."""
    from safehold.storage.azure import AzureStorage

    storage = AzureStorage(
        unique(), "r", connection_string=servers.azurite_connection_string(azurite_server)
    )
    with pytest.raises(ImmutabilityUnsupported, match="immutability"):
        storage.enable_lock(LockPolicy("compliance", 1))
    assert storage.lock_policy() is None
    with pytest.raises(ObjectNotFound):
        storage.stat(LOCK_POLICY_NAME)
    with pytest.raises(ImmutabilityUnsupported):
        storage.enable_lock(LockPolicy("append-only"))


# ---------------------------------------------------------------- append-only file repository

_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602


def _clear_flags(root: Path) -> None:
    """chattr -R -ia: so that the test can remove what it made."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            buf = bytearray(4)
            fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buf)
            flags = struct.unpack("i", buf)[0] & ~0x30
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i", flags))
        finally:
            os.close(fd)


@pytest.fixture
def append_only_repo(tmp_path: Path) -> Iterator[Path]:
    """Where an append-only file repository can go (skipped without inode flags)."""
    probe = tmp_path / "probe"
    try:
        FileStorage(probe).enable_lock(LockPolicy("append-only"))
    except ImmutabilityUnsupported as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    finally:
        if probe.exists():
            _clear_flags(probe)
    repo = tmp_path / "repo"
    yield repo
    if repo.exists():
        _clear_flags(repo)


def test_append_only_file_repository_survives_an_attacker(
    tmp_path: Path, append_only_repo: Path
) -> None:
    """The files' owner (root, even) cannot delete, rename, truncate or rewrite an object."""
    repo = append_only_repo
    run = _cli(_env(tmp_path, str(repo)))
    run("init", "--lock", "append-only")
    src, ids, expected = _back_up(run, tmp_path)

    _attack_with_the_cli(run)

    objects = [p for p in repo.rglob("*") if p.is_file() and "locks" not in p.parts]
    objects = [p for p in objects if ".tmp-staging" not in p.parts]
    assert any("data" in p.parts for p in objects)
    assert any("snapshots" in p.parts for p in objects)
    evil = tmp_path / "evil"
    for path in objects:
        evil.write_bytes(b"encrypted by ransomware")
        for attack in (
            lambda p=path: p.unlink(),
            lambda p=path: os.replace(evil, p),
            lambda p=path: os.rename(p, p.with_name("gone")),
            lambda p=path: os.truncate(p, 0),
            lambda p=path: p.open("r+b").close(),
            lambda p=path: os.chmod(p, 0o000),
        ):
            with pytest.raises(PermissionError):
                attack()
    for directory in ("data", "snapshots", "index", "keys"):
        with pytest.raises(PermissionError):
            os.rename(repo / directory, repo / f"{directory}.old")
    with pytest.raises(PermissionError):
        shutil.rmtree(repo)
    with pytest.raises(PermissionError):
        os.rename(repo, tmp_path / "moved")

    _attack_with_the_storage_api(FileStorage(repo), _held_names(FileStorage(repo)))
    _assert_nothing_lost(run, tmp_path, src, ids, expected)


def test_init_refuses_a_lock_the_storage_cannot_keep(tmp_path: Path) -> None:
    """compliance on a file repository: exit 15, nothing created."""
    run = _cli(_env(tmp_path, str(tmp_path / "repo")))
    proc = run("init", "--lock", "compliance", "--lock-days", "3", expect=15)
    assert "append-only" in proc.stderr
    proc = run("init", "--lock", "compliance", expect=2)
    assert "--lock-days" in proc.stderr


# ---------------------------------------------------------------- SMB with Samba's vfs_worm


@pytest.fixture
def worm_samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Samba]:
    """An smbd whose ``worm`` share refuses changes to files older than one second."""
    samba = servers.Samba(tmp_path_factory.mktemp("worm"))
    worm = samba.share_dir.parent / "worm"
    worm.mkdir()
    samba.conf.write_text(
        samba.conf.read_text()
        + f"[worm]\n  path = {worm}\n  read only = no\n  valid users = {samba.user}\n"
        "  vfs objects = worm\n  worm:grace_period = 3\n"
    )
    samba.server.start()
    yield samba
    samba.server.stop()


def test_smb_worm_share_survives_an_attacker(worm_samba: servers.Samba) -> None:
    """With the share's user and password: no delete, overwrite or rename of an object."""
    import smbclient
    from smbprotocol.exceptions import SMBOSError

    from safehold.storage.smb import SMBStorage

    def storage() -> SMBStorage:
        return SMBStorage(
            servers.HOST,
            "worm",
            "repo",
            port=worm_samba.port,
            username=worm_samba.user,
            password=worm_samba.password,
        )

    store = storage()
    store.enable_lock(LockPolicy("append-only"))
    objects = {f"data/{i:02x}/{i:02x}{'0' * 62}": os.urandom(10_000 + i) for i in range(4)}
    objects["snapshots/" + "ab" * 32] = b"manifest"
    for name, data in objects.items():
        store.put(name, data)
    store.put("locks/l1", b"lock")
    store.delete("locks/l1")  # lock files stay mutable within the grace period

    kw: dict[str, Any] = {
        "username": worm_samba.user,
        "password": worm_samba.password,
        "port": worm_samba.port,
    }
    root = rf"\\{servers.HOST}\worm\repo"
    canary = root + "\\" + LOCK_POLICY_NAME
    deadline = time.monotonic() + 30
    while True:  # until the server's grace period for the newest object is over
        time.sleep(1.1)
        try:
            with smbclient.open_file(canary, mode="ab", **kw) as f:
                f.write(b"")
        except SMBOSError as exc:
            refused = exc
            break
        assert time.monotonic() < deadline, "the worm share never refused a write"
    assert "ACCESS_DENIED" in str(refused)
    time.sleep(3.1)  # the grace period of the objects written after the canary
    try:
        for i, name in enumerate(objects):
            unc = root + "\\" + name.replace("/", "\\")
            evil = root + rf"\data\.tmp-evil{i}"
            with smbclient.open_file(evil, mode="wb", **kw) as f:
                f.write(b"ransom")
            for attack in (
                lambda u=unc: smbclient.remove(u, **kw),
                lambda u=unc: smbclient.open_file(u, mode="wb", **kw).close(),
                lambda u=unc, e=evil: smbclient.replace(e, u, **kw),
                lambda u=unc: smbclient.rename(u, u + "-gone", **kw),
            ):
                with pytest.raises(SMBOSError, match="ACCESS_DENIED"):
                    attack()
        _attack_with_the_storage_api(storage(), list(objects))
        fresh = storage()
        for name, data in objects.items():
            assert data == fresh.get(name)
    finally:
        smbclient.reset_connection_cache()


def test_forget_keeps_a_held_incremental_and_its_chain() -> None:
    """hold_back keeps a held snapshot with the reason and the parents it needs."""
    from safehold.core.retention import KeepPolicy, apply_policy, hold_back
    from safehold.core.snapshot import Snapshot

    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    full = Snapshot("f" * 64, t0, "h", "u", ("/d",), "0" * 64)
    inc = Snapshot(
        "e" * 64, t0 + timedelta(hours=1), "h", "u", ("/d",), "0" * 64,
        backup_type="incremental", parent=full.id,
    )  # fmt: skip
    new = Snapshot("d" * 64, t0 + timedelta(hours=2), "h", "u", ("/d",), "0" * 64)
    decision = apply_policy([full, inc, new], KeepPolicy(last=1), t0 + timedelta(days=1))
    assert [new] == decision.keep
    until = t0 + timedelta(days=30)
    held = hold_back(decision, {inc.id: until})
    assert [full, inc, new] == held.keep
    assert [] == held.remove
    assert ["held until 2030-01-31 00:00 UTC"] == held.reasons[inc.id]
    assert any("parent of kept" in r for r in held.reasons[full.id])
    assert ["held for good"] == hold_back(decision, {full.id: None}).reasons[full.id]


def test_prune_keeps_held_packs_and_the_packs_a_held_index_lists(tmp_path: Path) -> None:
    """prune deletes nothing held, says what and until when, and frees it once the hold ends."""
    from safehold.repo import Repository, backup_paths, check, forget, prune
    from tests.conftest import FAST_KDF

    now = [datetime.now(UTC)]
    store = MemoryStorage(clock=lambda: now[0])
    store.enable_lock(LockPolicy("governance", 1))
    repo = Repository.init(store, PASSWORD, pack_size=256 * 1024, kdf=FAST_KDF)
    sources = [tmp_path / "src0", tmp_path / "src1"]
    for src in sources:
        src.mkdir()
        (src / "f.bin").write_bytes(os.urandom(400_000))
    first_id = backup_paths(repo, [sources[0]]).snapshot.id
    old_packs = [i.name for i in store.list("data/")]
    (old_index,) = [i.name for i in store.list("index/")]
    backup_paths(repo, [sources[1]])
    now[0] += timedelta(days=2)  # every hold has ended
    store.extend_hold(old_index, now[0] + timedelta(days=5))
    store.extend_hold(old_packs[0], now[0] + timedelta(days=10))
    assert 1 == forget(repo, [first_id])

    result = prune(repo)
    assert 0 == result.packs_deleted
    held = {h.name: h for h in result.held}
    assert set(old_packs) | {old_index} == set(held)
    assert held[old_packs[-1]].mode == f"listed in held {old_index}"
    assert held[old_packs[-1]].until == now[0] + timedelta(days=5)
    assert held[old_packs[0]].until == now[0] + timedelta(days=10)
    assert check(repo, read_data=True).ok

    now[0] += timedelta(days=6)  # the index file's hold has ended, one pack's has not
    result = prune(repo)
    assert [old_packs[0]] == [h.name for h in result.held]
    assert [old_packs[0]] == [p for p in old_packs if store.raw().get(p) is not None]
    now[0] += timedelta(days=5)
    assert [] == prune(repo).held
    assert not any(store.raw().get(p) for p in old_packs)
    assert check(repo, read_data=True).ok
