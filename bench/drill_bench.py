"""
What a restore drill costs over a plain restore of the same backup.

A ``dir:`` partition of SIZE (default 1 GiB: 256 files of 4 MiB, incompressible)
is backed up once to a file storage. Then, interleaved for ROUNDS rounds:

- ``restore``: the engine restores the backup into a fresh directory (what an
  agent's restore job does, without the swap into place);
- ``drill``: ``agent.drill.run_drill`` of the same backup with no validator
  (sandbox, restore, leftover scan, clean-up);
- ``drill+files``: the same with a Files validator checking a SHA-256 manifest of
  every file (the validators' own cost on top).

Prints the medians and the ratios to ``restore``. It measures; it asserts nothing.

    .venv/bin/python bench/drill_bench.py [--size-mib 1024] [--rounds 3] [--dir /var/tmp/x]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from safehold.agent.drill import run_drill
from safehold.core.progress import NullProgress
from safehold.core.snapshot import SnapshotMeta, format_time
from safehold.core.work import PartitionInfo, WorkItem
from safehold.repo.keys import KdfParams
from safehold.service.engine import RepoEngine
from safehold.storage.file import FileStorage

FILE_MIB = 4


def make_source(root: Path, size_mib: int) -> list[str]:
    """Write incompressible files and a SHA256SUMS manifest; return the manifest lines."""
    root.mkdir(parents=True)
    lines = []
    for i in range(size_mib // FILE_MIB):
        data = os.urandom(FILE_MIB << 20)
        name = f"f{i:04d}.bin"
        (root / name).write_bytes(data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {name}")
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="drill-bench-", dir=args.dir))
    try:
        src = work / "orders"
        make_source(src, args.size_mib)
        storage = FileStorage(work / "storage")
        engine = RepoEngine("bench password", kdf=KdfParams(n=2**10))
        t0 = time.perf_counter()
        snap = engine.backup_dir(
            storage, src, meta=SnapshotMeta(time=datetime.now(UTC)), progress=NullProgress()
        )
        print(f"backup of {args.size_mib} MiB: {time.perf_counter() - t0:.1f} s")

        def item(validators: list[dict[str, object]]) -> WorkItem:
            now = datetime.now(UTC)
            return WorkItem(
                JobId="bench",
                Kind="drill",
                Deadline=format_time(now + timedelta(hours=2)),
                Partition=PartitionInfo(
                    PartitionId="p", ApplicationName="a", ServiceName="s", Source=f"dir:{src}"
                ),
                Params={
                    "drill_id": f"bench-{time.monotonic_ns()}",
                    "snapshot_id": snap.id,
                    "backup_time": format_time(snap.time),
                    "validators": validators,
                    "sandbox_dir": str(work / "sandboxes"),
                },
            )

        def restore() -> None:
            target = work / "restore"
            engine.restore_dir(storage, snap.id, target, progress=NullProgress())
            shutil.rmtree(target)

        def drill(validators: list[dict[str, object]]) -> None:
            out = run_drill(
                item(validators), engine, storage, NullProgress(), lambda: datetime.now(UTC)
            )
            assert out.State == "Success", out

        cases = {
            "restore": restore,
            "drill": lambda: drill([]),
            "drill+files": lambda: drill([{"Kind": "Files", "ChecksumManifest": "SHA256SUMS"}]),
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.rounds):
            for name, fn in cases.items():  # interleaved, so load drifts hit every case
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        base = statistics.median(times["restore"])
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"{name:12s} median {med:6.2f} s  ratio {med / base:5.2f}  rounds {ts}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
