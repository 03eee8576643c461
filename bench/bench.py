"""
The engine benchmark: safehold against restic and Borg on one mixed data set, in one run.

It makes about 1 GB of data (large random files, compressible log-like text and
10,000 small files), then for each tool times the first backup, a re-backup
with no change, a re-backup after about 1% changed, and a full restore, and
reads each process's peak memory (max RSS from wait4) and the repository size.
It prints the figures and their ratios to safehold's. It measures; it asserts
nothing: the targets are in the README and the issue, the numbers are here.

Usage: python bench/bench.py [--size-mb 1000] [--out bench/out] [--tools safehold,restic,borg]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PASSWORD = "bench-password"
STEPS = ("first backup", "unchanged re-backup", "re-backup after 1% change", "full restore")


@dataclass
class Result:
    tool: str
    seconds: dict[str, float] = field(default_factory=dict)
    peak_mb: float = 0.0
    repo_mb: float = 0.0


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
        (big / f"disk{i}.img").write_bytes(rng.randbytes(int(total * 0.6 / 4)))
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
    with (root / "images" / "disk0.img").open("r+b") as f:
        f.seek(10_000_000)
        f.write(rng.randbytes(budget // 2))
    with (root / "logs" / "app-0.log").open("a") as f:
        f.write("2026-11-22T00:00:00Z INFO appended line\n" * (budget // 4 // 40))
    for f in range(100):
        p = root / "small" / f"d{f:02}" / "f000.dat"
        p.write_bytes(rng.randbytes(budget // 4 // 100))


def run(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float]:
    """Run *cmd*; return (seconds, peak RSS in MB). Fails loudly if the tool fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"{' '.join(cmd)} failed with {code}: {err[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024


def du(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def tool_commands(tool: str, repo: Path, data: Path, target: Path) -> dict[str, list[str]]:
    safehold = [sys.executable, "-m", "safehold"]
    if tool == "safehold":
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


def bench_tool(tool: str, out: Path, data_src: Path, size_mb: int) -> Result:
    work = out / tool
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = work / "data"
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
    cmds = tool_commands(tool, repo, data, target)
    result = Result(tool)
    run(cmds["init"], env)
    peaks = []
    for step in STEPS:
        if step == "re-backup after 1% change":
            change_one_percent(data, size_mb)
        cmd = cmds["restore"] if step == "full restore" else cmds["backup"]
        seconds, peak = run(cmd, env)
        result.seconds[step] = seconds
        peaks.append(peak)
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


def report(results: list[Result], size_mb: int) -> str:
    base = next(r for r in results if r.tool == "safehold")
    others = [r for r in results if r.tool != "safehold"]
    lines = [f"# safehold benchmark: {size_mb} MB mixed data, {os.cpu_count()} cores", ""]
    head = (
        "| measure | "
        + " | ".join(r.tool for r in results)
        + " | "
        + " | ".join(f"{r.tool} / safehold" for r in others)
        + " |"
    )
    lines += [head, "|" + " --- |" * (1 + len(results) + len(others))]
    for step in STEPS:
        vals = " | ".join(f"{r.seconds[step]:.2f} s" for r in results)
        ratios = " | ".join(f"{r.seconds[step] / base.seconds[step]:.2f}×" for r in others)
        lines.append(f"| {step} | {vals} | {ratios} |")
    vals = " | ".join(f"{r.repo_mb:.0f} MB" for r in results)
    ratios = " | ".join(f"{r.repo_mb / base.repo_mb:.3f}×" for r in others)
    lines.append(f"| repository size | {vals} | {ratios} |")
    vals = " | ".join(f"{r.peak_mb:.0f} MB" for r in results)
    ratios = " | ".join(f"{r.peak_mb / base.peak_mb:.2f}×" for r in others)
    lines.append(f"| peak memory | {vals} | {ratios} |")
    first = base.seconds["first backup"]
    lines += [
        "",
        f"safehold first backup: {size_mb / first:.0f} MB/s; restore: "
        f"{size_mb / base.seconds['full restore']:.0f} MB/s",
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
    ap.add_argument("--no-object-stores", action="store_true", help="Skip Azurite and moto.")
    args = ap.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / f"dataset-{args.size_mb}"
    make_data(data, args.size_mb)
    results = [bench_tool(t, args.out, data, args.size_mb) for t in args.tools.split(",")]
    text = report(results, args.size_mb)
    ours = next((r for r in results if r.tool == "safehold"), None)
    if ours is not None and not args.no_object_stores:
        text += "\n" + bench_object_stores(args.out, data, args.size_mb, ours)
    print(text)
    (args.out / "results.md").write_text(text + "\n")
    (args.out / "results.json").write_text(json.dumps([r.__dict__ for r in results], indent=2))
    for t in args.tools.split(","):
        shutil.rmtree(args.out / t, ignore_errors=True)


if __name__ == "__main__":
    main()
