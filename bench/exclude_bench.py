"""
Do excludes slow the walker? (`make bench-excludes`; issue 14.)

A tree of 10,000 small files in 100 directories is backed up into a fresh
repository by the ``safehold`` command, with no exclude, with 20 patterns (none
of which matches, so the same data is stored), and with the same 20 patterns
plus one re-include (``!...``), which takes the slower ordered path. restic, the
anchor, backs up the same tree without and with the same 20 patterns. Every
arm runs once per round, interleaved, in a fresh repository; medians of the
rounds are reported as ratios to each tool's own run without patterns. This
measures, it never asserts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PASSWORD = "exclude bench"
PATTERNS = [
    "*.tmp",
    "*.swp",
    "*.log.gz",
    "*~",
    ".cache/",
    "node_modules",
    "__pycache__",
    "*.pyc",
    "build/",
    "dist/",
    "**/target/*.o",
    "/no/such/root",
    "/var/tmp/*",
    ".git",
    "*.iso",
    "Thumbs.db",
    ".DS_Store",
    "vendor/bundle",
    "coverage/**",
    "*.[oa]",
]


def make_tree(root: Path, files: int, dirs: int) -> None:
    for i in range(files):
        d = root / f"d{i % dirs:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.dat").write_bytes(os.urandom(512) + f"{i}".encode())


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--dirs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    safehold = str(Path(sys.executable).parent / "safehold")
    restic = shutil.which("restic")
    work = Path(tempfile.mkdtemp(prefix="safehold-exclude-bench-"))
    try:
        tree = work / "tree"
        make_tree(tree, args.files, args.dirs)
        excl = [a for p in PATTERNS for a in ("--exclude", p)]
        arms: dict[str, list[str]] = {
            "safehold, no excludes": [],
            "safehold, 20 patterns": excl,
            "safehold, 20 patterns + 1 re-include": [*excl, "--exclude", "!keep.me"],
        }
        times: dict[str, list[float]] = {k: [] for k in arms}
        if restic:
            times["restic, no excludes"] = []
            times["restic, 20 patterns"] = []
        env = {**os.environ, "SAFEHOLD_PASSWORD": PASSWORD, "RESTIC_PASSWORD": PASSWORD}
        for rnd in range(args.rounds):
            for name, extra in arms.items():
                repo = work / f"s{rnd}-{len(times[name])}-{abs(hash(name))}"
                e = {**env, "SAFEHOLD_REPO": str(repo)}
                subprocess.run([safehold, "init"], env=e, check=True, stdout=subprocess.DEVNULL)
                times[name].append(_timed([safehold, "backup", str(tree), *extra], e))
                shutil.rmtree(repo)
            if restic:
                for name, extra in (("restic, no excludes", []), ("restic, 20 patterns", excl)):
                    repo = work / f"r{rnd}-{abs(hash(name))}"
                    e = {**env, "RESTIC_REPOSITORY": str(repo)}
                    subprocess.run([restic, "init"], env=e, check=True, stdout=subprocess.DEVNULL)
                    times[name].append(_timed([restic, "backup", "-q", str(tree), *extra], e))
                    shutil.rmtree(repo)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{args.files} files, {args.rounds} interleaved rounds, medians")
        print("| arm | median s | vs. own run without patterns |")
        print("| --- | --- | --- |")
        for k, v in med.items():
            base = med["restic, no excludes" if k.startswith("restic") else "safehold, no excludes"]
            print(f"| {k} | {v:.2f} | {v / base:.3f} |")
        if restic:
            ratio = med["safehold, no excludes"] / med["restic, no excludes"]
            print(f"\nsafehold / restic, no excludes: {ratio:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
