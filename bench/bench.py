"""
The engine benchmark: safehold against restic and Borg on one mixed data set, in one run.

It makes about 1 GB of data (large random files, compressible log-like text and
10,000 small files), then for each tool times the first backup, a re-backup
with no change, a re-backup after about 1% changed, and a full restore, and
reads each process's peak memory (max RSS from wait4) and the repository size.
It prints the figures and their ratios to safehold's. It measures; it asserts
nothing: the targets are in the README and the issue, the numbers are here.

Rounds are interleaved (each round runs every tool once, in a rotated order) and
every step starts after a ``sync``, so that one tool's dirty pages are not written
back on the next one's clock. Nothing is deleted during a round: ext4 without a
journal (this machine's) skips, one by one, inodes freed in the last minute when
it creates a file, which made a restore that followed a big ``rm -rf`` up to three
times slower (see docs/benchmark.md). A round's files are removed after it, and
every round first waits ``--settle`` seconds. The data set is made in a child
process, so that its memory does not count in the tools' peak RSS (a forked
child's max RSS starts at its parent's). The table shows each step's median over the rounds
and, per tool, the spread (slowest / fastest round).

Run as root, it also makes the rounds steadier, for every tool alike: each round
runs on a fresh ext4 file system on a loop device (``--fresh-fs``), the page cache
is dropped before each tool's turn (``--drop-caches``), and the tools run at
niceness -10 (``--nice``). safehold's modules are compiled to bytecode first, as
an installed wheel has them. The report starts with the load average at each
tool's turn.

Usage: python bench/bench.py [--size-mb 1000] [--rounds 3] [--out bench/out]
       [--tools safehold,restic,borg] [--steps "full restore"]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PASSWORD = "bench-password"
#: ``--baseline-src``: another safehold source tree, run as the tool "safehold-base"
#: (an A/B of old against new code in the same rounds).
BASELINE: dict[str, str] = {}
STEPS = ("first backup", "unchanged re-backup", "re-backup after 1% change", "full restore")


@dataclass
class Result:
    tool: str
    seconds: dict[str, float] = field(default_factory=dict)
    peak_mb: float = 0.0
    repo_mb: float = 0.0
    restore_peak_mb: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # user + system seconds per step
    load: float = 0.0  # the 1-minute load average when the tool's turn began


@dataclass
class Rounds:
    """Every round's result of one tool, and their medians and spreads."""

    tool: str
    rounds: list[Result] = field(default_factory=list)

    def median(self, step: str) -> float:
        return statistics.median(r.seconds[step] for r in self.rounds)

    def spread(self, step: str, *, cpu: bool = False) -> float:
        vals = [(r.cpu if cpu else r.seconds)[step] for r in self.rounds]
        return max(vals) / min(vals)

    def summary(self) -> Result:
        """The medians of every figure, as one result."""
        return Result(
            self.tool,
            {s: self.median(s) for s in self.rounds[0].seconds},
            statistics.median(r.peak_mb for r in self.rounds),
            statistics.median(r.repo_mb for r in self.rounds),
            statistics.median(r.restore_peak_mb for r in self.rounds),
            {s: statistics.median(r.cpu[s] for r in self.rounds) for s in self.rounds[0].cpu},
        )


def make_data(root: Path, size_mb: int) -> None:
    """Deterministic mixed data: 60% random, 30% log text, 10% in 10,000 small files."""
    if (root / ".complete").exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(42)
    total = size_mb * 1_000_000
    big = root / "images"
    big.mkdir(parents=True)
    for i in range(4):
        with (big / f"disk{i}.img").open("wb") as img:
            # In pieces of a multiple of 4 bytes: the same bytes as one call (the
            # 1 GB set is unchanged), which overflows above 256 MiB.
            left = int(total * 0.6 / 4)
            while left:
                n = min(left, 64 << 20)
                img.write(rng.randbytes(n))
                left -= n
    logs = root / "logs"
    logs.mkdir()
    words = [
        "GET",
        "POST",
        "/api/v1/orders",
        "/api/v1/items",
        "200",
        "404",
        "500",
        "user=",
        "took=",
        "ms",
    ]
    for i in range(6):
        lines = []
        n = 0
        while n < total * 0.3 / 6:
            line = (
                f"2026-11-{1 + i:02}T{rng.randrange(24):02}:{rng.randrange(60):02}:"
                f"{rng.randrange(60):02}Z "
                f"INFO req={rng.randrange(10**9)} {rng.choice(words)} {rng.choice(words)} "
                f"{rng.choice(words)}{rng.randrange(1000)}\n"
            )
            lines.append(line)
            n += len(line)
        (logs / f"app-{i}.log").write_text("".join(lines))
    small = root / "small"
    per_file = int(total * 0.1 / 10_000)
    for d in range(100):
        sub = small / f"d{d:02}"
        sub.mkdir(parents=True)
        for f in range(100):
            size = rng.randrange(per_file // 2, per_file * 3 // 2)
            (sub / f"f{f:03}.dat").write_bytes(rng.randbytes(size // 2) + b"x" * (size - size // 2))
    (root / ".complete").write_text("")


def change_one_percent(root: Path, size_mb: int) -> None:
    """Rewrite about 1% of the data: part of a big file, a log appended, 100 small files."""
    rng = random.Random(7)
    budget = size_mb * 10_000  # 1% in bytes
    with (root / "images" / "disk0.img").open("r+b") as img:
        img.seek(10_000_000)
        img.write(rng.randbytes(budget // 2))
    with (root / "logs" / "app-0.log").open("a") as log:
        log.write("2026-11-22T00:00:00Z INFO appended line\n" * (budget // 4 // 40))
    for n in range(100):
        p = root / "small" / f"d{n:02}" / "f000.dat"
        p.write_bytes(rng.randbytes(budget // 4 // 100))


def run(
    cmd: list[str],
    env: dict[str, str],
    cwd: Path | None = None,
    cpu: list[float] | None = None,
    nice: int = 0,
) -> tuple[float, float]:
    """
    Run *cmd* after a sync, at niceness *nice* (added to ours); return (seconds,
    peak RSS in MB). Fails loudly if it fails.
    """
    os.sync()  # the previous step's dirty pages are written back on nobody's clock
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=(lambda: os.nice(nice)) if nice else None,  # noqa: PLW1509
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"{' '.join(cmd)} failed with {code}: {err[-2000:]}")
    if cpu is not None:  # CPU time is steadier than wall time on a shared machine
        cpu.append(usage.ru_utime + usage.ru_stime)
    return elapsed, usage.ru_maxrss / 1024


DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def drop_page_cache() -> bool:
    """
    Write back, then drop, the page cache (the whole machine's; root only).

    Called before each tool's turn, so that every tool starts with the same
    free memory. When the page cache has filled memory, every page a restore
    writes must first be reclaimed from it: that made the same restore's
    system time vary from 0.6 s to 3.7 s (docs/benchmark.md). Return whether
    it could.
    """
    os.sync()
    try:
        DROP_CACHES.write_text("1\n")
    except OSError:
        return False
    return True


def du(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


@contextlib.contextmanager
def fresh_filesystem(image: Path, mountpoint: Path, size_bytes: int) -> Iterator[Path]:
    """
    Mount a new, empty ext4 file system (a sparse image on a loop device) at
    *mountpoint* for one round, and remove it after.

    Every round, and every tool in it, then starts from the same state: no
    inodes freed recently by anyone (ext4 skips those one by one when it
    creates a file, see docs/benchmark.md), nothing of an earlier round in
    the page cache (unmounting drops it), no fragmentation. The loop device
    uses direct I/O, so pages are cached once, in this file system.
    """
    image.unlink(missing_ok=True)
    with image.open("wb") as f:
        f.truncate(size_bytes)
    # Inode tables written now (not lazily in the background during the round).
    mkfs = ["mkfs.ext4", "-q", "-F", "-N", "300000"]
    mkfs += ["-E", "lazy_itable_init=0,lazy_journal_init=0", str(image)]
    subprocess.run(mkfs, check=True)
    dev = subprocess.run(
        ["losetup", "--find", "--show", "--direct-io=on", str(image)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        mountpoint.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", dev, str(mountpoint)], check=True)
        try:
            yield mountpoint
        finally:
            os.sync()
            subprocess.run(["umount", str(mountpoint)], check=True)
            with contextlib.suppress(OSError):
                mountpoint.rmdir()
    finally:
        subprocess.run(["losetup", "-d", dev], check=True)
        image.unlink(missing_ok=True)


def fresh_filesystem_usable() -> bool:
    """Whether this process can make loop file systems (root, and the tools present)."""
    tools = ("mkfs.ext4", "losetup", "mount", "umount")
    return os.geteuid() == 0 and all(shutil.which(t) for t in tools)


def compile_safehold() -> None:
    """
    Compile safehold's modules to bytecode, as installing a wheel does.

    A checkout run with ``PYTHONDONTWRITEBYTECODE`` (this machine's environment)
    otherwise compiles every module at every start, about 0.1 s per command
    that an installed safehold does not pay (Borg's Debian package is compiled).
    """
    import safehold

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    pkg = str(Path(safehold.__file__).parent)
    subprocess.run([sys.executable, "-m", "compileall", "-q", pkg], env=env, check=True)


def tool_commands(tool: str, repo: Path, data: Path, target: Path) -> dict[str, list[str]]:
    safehold = [sys.executable, "-m", "safehold"]
    if tool in ("safehold", "safehold-base"):
        return {
            "init": [*safehold, "init", "--repo", str(repo)],
            "backup": [*safehold, "backup", "--repo", str(repo), str(data)],
            "restore": [
                *safehold,
                "restore",
                "latest",
                "--repo",
                str(repo),
                "--target",
                str(target),
            ],
        }
    if tool == "restic":
        return {
            "init": ["restic", "init", "--repo", str(repo)],
            "backup": ["restic", "backup", "--repo", str(repo), str(data)],
            "restore": [
                "restic",
                "restore",
                "latest",
                "--repo",
                str(repo),
                "--target",
                str(target),
            ],
        }
    if tool == "borg":
        return {
            "init": ["borg", "init", "--encryption", "repokey", str(repo)],
            "backup": ["borg", "create", f"{repo}::{{now:%Y-%m-%dT%H:%M:%S.%f}}", str(data)],
            "restore": [
                "sh",
                "-c",
                f"mkdir -p {target} && cd {target} && "
                f"borg extract {repo}::$(borg list --last 1 --short {repo})",
            ],
        }
    raise SystemExit(f"unknown tool {tool}")


def bench_tool(
    tool: str,
    out: Path,
    data_src: Path,
    size_mb: int,
    steps: tuple[str, ...] = STEPS,
    *,
    nice: int = 0,
    drop_caches: bool = False,
) -> Result:
    work = out / tool
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if drop_caches:
        drop_page_cache()
    result = Result(tool, load=os.getloadavg()[0])
    data = work / "data"  # removed with the round, not here (see the module docstring)
    # Each tool gets its own copy, so the 1% change starts from the same state.
    shutil.copytree(data_src, data, ignore=shutil.ignore_patterns(".complete"))
    repo, target = work / "repo", work / "restore"
    env = {
        **os.environ,
        "SAFEHOLD_PASSWORD": PASSWORD,
        "RESTIC_PASSWORD": PASSWORD,
        "BORG_PASSPHRASE": PASSWORD,
        "RESTIC_CACHE_DIR": str(work / "restic-cache"),
        "BORG_BASE_DIR": str(work / "borg-base"),
    }
    if tool == "safehold-base":
        env["PYTHONPATH"] = BASELINE["src"]
    cmds = tool_commands(tool, repo, data, target)
    run(cmds["init"], env)
    peaks = []
    for step in STEPS:
        if step == "re-backup after 1% change":
            if step not in steps:
                continue
            change_one_percent(data, size_mb)
        if step != "first backup" and step not in steps:
            continue  # the first backup is always needed; the others only when asked for
        cmd = cmds["restore"] if step == "full restore" else cmds["backup"]
        spent: list[float] = []
        seconds, peak = run(cmd, env, cpu=spent, nice=nice)
        result.seconds[step] = seconds
        result.cpu[step] = spent[0]
        peaks.append(peak)
        if step == "full restore":
            result.restore_peak_mb = peak
    result.peak_mb = max(peaks)
    result.repo_mb = du(repo)
    return result


def bench_object_stores(out: Path, data_src: Path, size_mb: int, file_result: Result) -> str:
    """Back up and restore the data set on Azurite and on moto's S3 server, for MB/s figures."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.storage import servers  # the same real servers the test suite starts

    work = out / "object-stores"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    azurite = servers.azurite(work)
    moto = servers.moto(work)
    rows = [
        f"| file | {size_mb / file_result.seconds['first backup']:.0f} MB/s | "
        f"{size_mb / file_result.seconds['full restore']:.0f} MB/s |"
    ]
    env = {**os.environ, "SAFEHOLD_PASSWORD": PASSWORD}
    try:
        azurite.start()
        moto.start()
        stores = {
            "azure (Azurite)": (
                "azure://bench",
                {"AZURE_STORAGE_CONNECTION_STRING": servers.azurite_connection_string(azurite)},
            ),
            "s3 (moto server)": (
                "s3://bench",
                {
                    "AWS_ACCESS_KEY_ID": "bench",
                    "AWS_SECRET_ACCESS_KEY": "bench",
                    "AWS_ENDPOINT_URL": f"http://{servers.HOST}:{moto.port}",
                },
            ),
        }
        for label, (url, extra) in stores.items():
            e = {**env, **extra}
            cmd = [sys.executable, "-m", "safehold"]
            run([*cmd, "init", "--repo", url], e)
            backup, _ = run([*cmd, "backup", "--repo", url, str(data_src)], e)
            target = work / "restore"
            restore_s, _ = run(
                [*cmd, "restore", "latest", "--repo", url, "--target", str(target)], e
            )
            shutil.rmtree(target, ignore_errors=True)
            rows.append(
                f"| {label} | {size_mb / backup:.0f} MB/s | {size_mb / restore_s:.0f} MB/s |"
            )
    finally:
        azurite.stop()
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)
    head = [
        "",
        "## safehold on each storage",
        "",
        "| storage | backup | restore |",
        "| --- | --- | --- |",
    ]
    return "\n".join(head + rows)


def report(all_rounds: list[Rounds], size_mb: int, conditions: str = "") -> str:
    results = [r.summary() for r in all_rounds]
    steps = [s for s in STEPS if s in results[0].seconds]
    base = next(r for r in results if r.tool == "safehold")
    others = [r for r in results if r.tool != "safehold"]
    n = len(all_rounds[0].rounds)
    lines = [
        f"# safehold benchmark: {size_mb} MB mixed data, {os.cpu_count()} cores, "
        f"median of {n} interleaved round{'s' if n > 1 else ''}",
        "",
    ]
    loads = sorted(x.load for r in all_rounds for x in r.rounds)
    lines += [
        f"Load average (1 min) at each tool's turn: {loads[0]:.1f} to {loads[-1]:.1f} "
        f"(median {statistics.median(loads):.1f}). {conditions}",
        "",
    ]
    head = (
        "| measure | "
        + " | ".join(r.tool for r in results)
        + " | "
        + " | ".join(f"{r.tool} / safehold" for r in others)
        + " |"
    )
    lines += [head, "|" + " --- |" * (1 + len(results) + len(others))]
    for step in steps:
        vals = " | ".join(f"{r.seconds[step]:.2f} s" for r in results)
        ratios = " | ".join(f"{r.seconds[step] / base.seconds[step]:.2f}×" for r in others)
        lines.append(f"| {step} | {vals} | {ratios} |")
    vals = " | ".join(f"{r.repo_mb:.0f} MB" for r in results)
    ratios = " | ".join(f"{r.repo_mb / base.repo_mb:.3f}×" for r in others)
    lines.append(f"| repository size | {vals} | {ratios} |")
    vals = " | ".join(f"{r.peak_mb:.0f} MB" for r in results)
    ratios = " | ".join(f"{r.peak_mb / base.peak_mb:.2f}×" for r in others)
    lines.append(f"| peak memory | {vals} | {ratios} |")
    if "full restore" in steps:
        vals = " | ".join(f"{r.restore_peak_mb:.0f} MB" for r in results)
        ratios = " | ".join(f"{r.restore_peak_mb / base.restore_peak_mb:.2f}×" for r in others)
        lines.append(f"| restore peak memory | {vals} | {ratios} |")
    lines += ["", "CPU seconds (user + system, median; steadier than wall time when shared):", ""]
    lines += ["| step | " + " | ".join(r.tool for r in results) + " | "]
    lines[-1] += " | ".join(f"{r.tool} / safehold" for r in others) + " |"
    lines += ["|" + " --- |" * (1 + len(results) + len(others))]
    for step in steps:
        vals = " | ".join(f"{r.cpu[step]:.2f} s" for r in results)
        ratios = " | ".join(f"{r.cpu[step] / base.cpu[step]:.2f}×" for r in others)
        lines.append(f"| {step} | {vals} | {ratios} |")
    lines += ["", "Spread across rounds (slowest / fastest; each round's seconds):", ""]
    lines += ["| step | " + " | ".join(r.tool for r in all_rounds) + " |"]
    lines += ["|" + " --- |" * (1 + len(all_rounds))]
    for step in steps:
        cells = [
            f"{r.spread(step):.2f} ({', '.join(f'{x.seconds[step]:.2f}' for x in r.rounds)})"
            for r in all_rounds
        ]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    for step in steps:
        cells = [
            f"{r.spread(step, cpu=True):.2f} ({', '.join(f'{x.cpu[step]:.2f}' for x in r.rounds)})"
            for r in all_rounds
        ]
        lines.append(f"| {step}, CPU seconds | " + " | ".join(cells) + " |")
    ours = next(r for r in all_rounds if r.tool == "safehold")
    lines += ["", "Each round's ratio (the other tool's time / safehold's, same round):", ""]
    for step in steps:
        for rr in (r for r in all_rounds if r.tool != "safehold"):
            pairs = zip(rr.rounds, ours.rounds, strict=True)
            per = [o.seconds[step] / b.seconds[step] for o, b in pairs]
            lines.append(
                f"- {step}, {rr.tool}: {', '.join(f'{x:.2f}×' for x in per)} "
                f"(median {statistics.median(per):.2f}×)"
            )
    first = base.seconds["first backup"]
    lines += [
        "",
        f"safehold first backup: {size_mb / first:.0f} MB/s; restore: "
        f"{size_mb / base.seconds.get('full restore', float('inf')):.0f} MB/s",
        "Ratios above 1 mean the other tool took longer, used more memory or stored more.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-mb", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("bench/out"))
    ap.add_argument("--tools", default="safehold,restic,borg")
    ap.add_argument("--rounds", type=int, default=3, help="Interleaved rounds (median shown).")
    ap.add_argument(
        "--settle",
        type=float,
        default=None,
        help="Seconds to wait before each round, after files were removed (ext4 "
        "without a journal skips inodes freed in the last 60 s, slowly); "
        "default 0 on a fresh file system, else 65.",
    )
    ap.add_argument(
        "--fresh-fs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Run each round on a new ext4 file system on a loop device (default: "
        "when running as root); every round and tool then starts from the same state.",
    )
    ap.add_argument(
        "--drop-caches",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Drop the page cache before each tool's turn (default: when running as root).",
    )
    ap.add_argument(
        "--nice",
        type=int,
        default=None,
        help="Niceness added to every tool's process (default: -10 as root, else 0): "
        "the other work on a shared machine then takes less of the timed steps' CPU.",
    )
    ap.add_argument("--make-data-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--steps",
        default=",".join(STEPS),
        help="Comma-separated steps to time (the first backup always runs).",
    )
    ap.add_argument("--no-object-stores", action="store_true", help="Skip Azurite and moto.")
    ap.add_argument(
        "--baseline-src",
        type=Path,
        help="A copy of an older src/ directory: adds the tool safehold-base, run from it.",
    )
    args = ap.parse_args()
    if args.baseline_src is not None:
        BASELINE["src"] = str(args.baseline_src.resolve())
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        argv = [sys.executable, "-m", "compileall", "-q", BASELINE["src"]]
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / f"dataset-{args.size_mb}"
    if args.make_data_only:
        make_data(data, args.size_mb)
        return
    if not (data / ".complete").exists():  # in a child: its memory is not ours
        argv = [sys.executable, __file__, "--make-data-only", "--size-mb", str(args.size_mb)]
        subprocess.run([*argv, "--out", str(args.out)], check=True)
    tools = args.tools.split(",")
    steps = tuple(s.strip() for s in args.steps.split(","))
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise SystemExit(f"unknown steps {sorted(unknown)}; choose from {list(STEPS)}")
    fresh = fresh_filesystem_usable() if args.fresh_fs is None else args.fresh_fs
    root = os.geteuid() == 0
    drop = root if args.drop_caches is None else args.drop_caches
    nice = (-10 if root else 0) if args.nice is None else args.nice
    conditions = (
        f"Fresh file system per round: {'yes' if fresh else 'no'}; page cache dropped "
        f"before each tool: {'yes' if drop else 'no'}; tools run at niceness {nice:+d}."
    )
    print(conditions, file=sys.stderr)
    settle = args.settle if args.settle is not None else (0.0 if fresh else 65.0)
    if "safehold" in tools:
        compile_safehold()
    all_rounds = [Rounds(t) for t in tools]
    for i in range(args.rounds):
        order = all_rounds[i % len(tools) :] + all_rounds[: i % len(tools)]
        round_dir = args.out / f"round-{i + 1}"
        with contextlib.ExitStack() as stack:
            if fresh:  # room for every tool's copy of the data, repository and restore
                image = args.out / f"round-{i + 1}.img"
                size = args.size_mb * 1_000_000 * (3 * len(tools) + 1) + 2_000_000_000
                stack.enter_context(fresh_filesystem(image, round_dir, size))
            os.sync()
            time.sleep(settle)  # after the previous round's deletions, or anyone's
            for rr in order:
                res = bench_tool(
                    rr.tool, round_dir, data, args.size_mb, steps, nice=nice, drop_caches=drop
                )
                rr.rounds.append(res)
                print(f"round {i + 1} {rr.tool}: {res.seconds}", file=sys.stderr, flush=True)
            if not fresh:
                shutil.rmtree(round_dir, ignore_errors=True)
    text = report(all_rounds, args.size_mb, conditions)
    results = [r.summary() for r in all_rounds]
    ours = next((r for r in results if r.tool == "safehold"), None)
    if ours is not None and not args.no_object_stores and "full restore" in steps:
        text += "\n" + bench_object_stores(args.out, data, args.size_mb, ours)
    print(text)
    (args.out / "results.md").write_text(text + "\n")
    rounds_json = [{"tool": r.tool, "rounds": [x.__dict__ for x in r.rounds]} for r in all_rounds]
    (args.out / "results.json").write_text(json.dumps(rounds_json, indent=2))


if __name__ == "__main__":
    main()
