"""
The database benchmark: safehold against pgBackRest on one pgbench cluster, in one run.

It makes a PostgreSQL cluster (``initdb`` on a free port, under ``--work``),
fills it with ``pgbench -i -s SCALE`` and archives its WAL with both tools at
once (``archive_command`` runs safehold's hook, then ``pgbackrest archive-push``).
Then, interleaved and in rotated order per round:

- full backup: safehold (a fresh repository each round, so nothing deduplicates
  against an earlier round), pgBackRest with its defaults (gz, one process) and
  pgBackRest with zst and two processes;

and once, on the last round's repositories:

- 1,000 random updates (one transaction each), then a backup: the bytes each
  repository grew by (safehold: a base backup; pgBackRest: ``--type=incr``);
- restore + ready for queries (to the backup's consistent point), timed until
  ``pg_is_in_recovery()`` is false;
- PITR: ``pgbench`` writes about ``--pitr-wal-mb`` of WAL, then both restore to
  a time near its end: the same target, timed until ready, and checked to hold
  the same number of history rows;
- WAL archiving: the archived segments pushed again, one process per segment
  as PostgreSQL does, into fresh archives: acknowledgement rate, and the lag
  until safehold's spool is empty (pgBackRest pushes synchronously);
- one segment fetched: ``archive-get`` by each tool (safehold from the
  repository, and from its prefetch spool), median of several.

Peak memory is each process's max RSS (wait4). It measures; it asserts nothing.

Usage: python bench/db_bench.py [--scale 70] [--rounds 3] [--pitr-wal-mb 400] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safehold.db import LocalServer, WalArchive, free_port, stanza_for
from safehold.db.server import find_bindir
from safehold.repo import Repository
from safehold.storage.file import FileStorage

PASSWORD = "bench-password"
LAST_CPU = [0.0]  # user + system seconds of the last ``timed`` command
SRC = Path(__file__).resolve().parents[1] / "src"


def python_argv() -> list[str]:
    """The interpreter the postgres OS user can run, with safehold importable."""
    probe = ["runuser", "-u", "postgres", "--", sys.executable, "-c", "pass"]
    if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return [sys.executable]
    site = sysconfig.get_paths()["purelib"]
    return ["env", f"PYTHONPATH={site}:{SRC}", "/usr/bin/python3"]


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """
    Run *argv*; return (seconds, peak RSS in MB, stdout). Raises on failure.

    The peak RSS comes from ``/usr/bin/time``, a small process: a child forked
    from this one would start its max RSS at this process's size.
    """
    import tempfile

    with tempfile.NamedTemporaryFile() as rss, tempfile.TemporaryFile() as out:
        t = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%U %S %M", "-o", rss.name, *argv],
            stdout=out,
            stderr=subprocess.PIPE,
            check=False,
            env={**os.environ, **env} if env else None,
        )
        elapsed = time.perf_counter() - t
        if proc.returncode:
            raise RuntimeError(f"{argv[:6]} failed ({proc.returncode}): {proc.stderr[-800:]!r}")
        out.seek(0)
        user, system, maxrss = Path(rss.name).read_text().split()[-3:]
        LAST_CPU[0] = float(user) + float(system)
        return elapsed, int(maxrss) / 1024, out.read().decode()


def cpu_loop(script: str) -> tuple[float, float]:
    """Run a shell loop as the postgres user; return (wall seconds, CPU seconds user+sys)."""
    before = os.times()
    t = time.perf_counter()
    subprocess.run(as_pg("sh", "-c", script), check=True)
    wall = time.perf_counter() - t
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu


def med_spread(v: list[float]) -> str:
    """Median of the rounds and their spread (slowest / fastest)."""
    return f"{statistics.median(v):.2f} s (spread {max(v) / min(v):.2f}×)"


def spread(v: list[tuple[float, float, int]]) -> float:
    """Slowest round over fastest."""
    return max(x for x, _, _ in v) / min(x for x, _, _ in v)


def as_pg(*argv: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv]


def du(path: Path) -> int:
    """Bytes under *path*, without a safehold repository's WAL archive (``wal/``)."""
    wal = path / "wal"
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and wal not in p.parents)


def sql(server: LocalServer, q: str) -> Any:
    with server.connect() as c:
        cur = c.execute(q)
        return cur.fetchall() if cur.description else None


@dataclass
class Bench:
    work: Path
    scale: int
    rounds: int
    pitr_wal_mb: int
    chunk_size: int = 16384
    baseline: str | None = None  # --baseline-src: an older src/, run as "safehold-base"
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.py = python_argv()
        self.conf = self.work / "pgbackrest.conf"
        self.pw = self.work / "password"
        self.bindir = find_bindir()

    # -- setup ---------------------------------------------------------------

    def safehold(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "safehold", *args, "--password-file", str(self.pw)]

    def hook(self, repo: Path, spool: Path) -> str:
        return " ".join(
            [
                *self.py,
                "-m",
                "safehold.db.hook",
                "push",
                "%p",
                "--spool",
                str(spool),
                "--repo",
                str(repo),
                "--password-file",
                str(self.pw),
            ]
        )

    def new_repo(self, name: str) -> Path:
        path = self.work / name
        Repository.init(FileStorage(path), PASSWORD).close()
        subprocess.run(["chown", "-R", "postgres:postgres", str(path)], check=True)
        return path

    def pgbr(self, *args: str, conf: Path | None = None) -> list[str]:
        return as_pg("pgbackrest", f"--config={conf or self.conf}", "--stanza=bench", *args)

    def set_archive(self, repo: Path, spool: Path) -> None:
        pgbr = f"pgbackrest --config={self.conf} --stanza=bench archive-push %p"
        cmd = f"{self.hook(repo, spool)} && {pgbr}"
        sql(self.pg, f"ALTER SYSTEM SET archive_command = '{cmd}'")
        sql(self.pg, "SELECT pg_reload_conf()")

    def setup(self) -> None:
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        self.work.chmod(0o755)
        self.pw.write_text(PASSWORD)
        self.pw.chmod(0o600)
        self.pg = LocalServer(self.work / "pg", free_port(), self.bindir)
        self.conf.write_text(
            "[global]\n"
            f"repo1-path={self.work / 'pgbr'}\nlog-path={self.work / 'pgbr-log'}\n"
            f"lock-path={self.work / 'pgbr-lock'}\nspool-path={self.work / 'pgbr-spool'}\n"
            "log-level-console=warn\nlog-level-file=off\nstart-fast=y\n"
            "[bench]\n"
            f"pg1-path={self.pg.datadir}\npg1-port={self.pg.port}\n"
            f"pg1-socket-path={self.work / 'pg.sock'}\n"
        )
        for d in ("pgbr", "pgbr-log", "pgbr-lock", "pgbr-spool"):
            (self.work / d).mkdir()
        subprocess.run(["chown", "-R", "postgres:postgres", str(self.work)], check=True)
        self.pg.initdb(
            "wal_level = replica",
            "archive_mode = on",
            "archive_command = '/bin/true'",
            "max_wal_size = '2GB'",
            "shared_buffers = '128MB'",
            "track_commit_timestamp = on",
            "fsync = on",
            "synchronous_commit = off",
            "max_wal_senders = 4",
        )
        self.pg.start()
        t = time.perf_counter()
        self.pg.run(
            "pgbench",
            "-i",
            "-q",
            "-s",
            str(self.scale),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.pg.port),
            "postgres",
            timeout=3600,
        )
        size = sql(self.pg, "SELECT pg_database_size('postgres')")[0][0]
        self.db_mb = size / 1e6
        self.notes.append(
            f"pgbench -s {self.scale}: database {self.db_mb:.0f} MB "
            f"(made in {time.perf_counter() - t:.0f} s)"
        )
        self.repo = self.new_repo("repo-0")
        self.spool = self.work / "spool-0"
        self.set_archive(self.repo, self.spool)
        subprocess.run(self.pgbr("stanza-create"), check=True, capture_output=True)
        self.sysid = sql(self.pg, "SELECT system_identifier FROM pg_control_system()")[0][0]

    # -- steps ---------------------------------------------------------------

    def full_backups(self) -> None:
        results: dict[str, list[tuple[float, float, int]]] = {}
        cpu: dict[str, list[float]] = {}
        tools = ["safehold", "pgbackrest-gz", "pgbackrest-zst2"]
        tools += ["safehold-base"] if self.baseline else []
        for r in range(self.rounds):
            order = tools[r % len(tools) :] + tools[: r % len(tools)]
            for tool in order:
                subprocess.run(["sync"], check=True)
                if tool.startswith("safehold"):
                    env = {"PYTHONPATH": self.baseline} if tool == "safehold-base" else {}
                    self.repo = self.new_repo(f"repo-{r + 1}{tool[8:]}")
                    self.spool = self.work / f"spool-{r + 1}{tool[8:]}"
                    self.set_archive(self.repo, self.spool)
                    before = du(self.repo)
                    secs, rss, _ = timed(
                        self.safehold(
                            "pg",
                            "backup",
                            self.pg.url,
                            "--repo",
                            str(self.repo),
                            "--chunk-size",
                            str(self.chunk_size),
                        ),
                        env,
                    )
                    grown = du(self.repo) - before
                else:
                    extra = (
                        ["--compress-type=zst", "--process-max=2"] if tool.endswith("zst2") else []
                    )
                    before = du(self.work / "pgbr" / "backup")
                    secs, rss, _ = timed(self.pgbr("--type=full", *extra, "backup"))
                    grown = du(self.work / "pgbr" / "backup") - before
                results.setdefault(tool, []).append((secs, rss, grown))
                cpu.setdefault(tool, []).append(LAST_CPU[0])
                print(
                    f"round {r + 1}: {tool} full backup {secs:.2f} s, CPU {LAST_CPU[0]:.2f} s, "
                    f"{grown / 1e6:.1f} MB, {rss:.0f} MB RSS",
                    flush=True,
                )
        med = {t: statistics.median(x for x, _, _ in v) for t, v in results.items()}

        def cell(t: str) -> str:
            v = results[t]
            stored = statistics.median(g for _, _, g in v) / 1e6
            rss = max(m for _, m, _ in v)
            return f"{med[t]:.2f} s (spread {spread(v):.2f}×), {stored:.1f} MB, RSS {rss:.0f} MB"

        self.notes.append(
            "full backup CPU seconds (user + system, median): "
            + ", ".join(f"{t} {statistics.median(v):.2f} s" for t, v in cpu.items())
        )
        for t, label in (
            ("pgbackrest-gz", "pgBackRest defaults, gz"),
            ("pgbackrest-zst2", "pgBackRest zst, 2 processes"),
            *((("safehold-base", "safehold-base, --baseline-src"),) if self.baseline else ()),
        ):
            self.rows.append(
                (
                    f"full backup ({label})",
                    cell("safehold"),
                    cell(t),
                    f"{med[t] / med['safehold']:.2f}× ({t} / safehold time)",
                )
            )

    def updates(self) -> None:
        sql(
            self.pg,
            "DO $$ DECLARE r int; BEGIN FOR i IN 1..1000 LOOP "
            f"r := 1 + floor(random() * {self.scale * 100000})::int; "
            "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = r; "
            "COMMIT; END LOOP; END $$",
        )
        subprocess.run(["sync"], check=True)
        b = du(self.repo)
        s1, _, _ = timed(
            self.safehold(
                "pg",
                "backup",
                self.pg.url,
                "--repo",
                str(self.repo),
                "--chunk-size",
                str(self.chunk_size),
            )
        )
        sh_grow = du(self.repo) - b
        b = du(self.work / "pgbr" / "backup")
        s2, _, _ = timed(
            self.pgbr("--type=incr", "--compress-type=zst", "--process-max=2", "backup")
        )
        br_grow = du(self.work / "pgbr" / "backup") - b
        self.rows.append(
            (
                "backup after 1,000 random updates",
                f"safehold {s1:.2f} s, +{sh_grow / 1e6:.2f} MB",
                f"pgBackRest incr (zst, 2) {s2:.2f} s, +{br_grow / 1e6:.2f} MB",
                f"{br_grow / max(sh_grow, 1):.1f}× more stored by pgBackRest",
            )
        )

    def _pgbr_restore(self, target: Path, *opts: str) -> float:
        t = time.perf_counter()
        target.mkdir(mode=0o700)
        subprocess.run(["chown", "postgres:postgres", str(target)], check=True)
        subprocess.run(
            self.pgbr(f"--pg1-path={target}", "restore", *opts), check=True, capture_output=True
        )
        srv = LocalServer(target, free_port(), self.bindir)
        srv.append_config(f"port = {srv.port}", "archive_mode = off")
        srv.start(wait=False)
        srv.wait_ready()
        secs = time.perf_counter() - t
        self._last_server = srv
        return secs

    def _sh_restore(self, target: Path, *opts: str) -> float:
        port = free_port()
        secs, _, _ = timed(
            self.safehold(
                "pg", "restore", str(target), "--repo", str(self.repo), "--port", str(port), *opts
            )
        )
        self._last_server = LocalServer(target, port, self.bindir)
        return secs

    def restores(self) -> None:
        subprocess.run(["sync"], check=True)
        latest = subprocess.run(
            self.safehold("snapshots", "--repo", str(self.repo), "--json"),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        import json

        snap = json.loads(latest)
        snap_id = (snap[-1] if isinstance(snap, list) else snap["snapshots"][-1])["id"]

        def sh(i: int) -> float:
            secs = self._sh_restore(self.work / f"r-sh{i}", "--backup", snap_id)
            self._last_server.stop("immediate")
            return secs

        def br(i: int) -> float:
            secs = self._pgbr_restore(
                self.work / f"r-br{i}", "--type=immediate", "--target-action=promote"
            )
            self._last_server.stop("immediate")
            return secs

        a, b = self._pairs(sh, br)
        self.rows.append(
            (
                "restore + ready for queries",
                f"safehold {med_spread(a)}",
                f"pgBackRest {med_spread(b)}",
                f"{statistics.median(b) / statistics.median(a):.2f}× (pgBackRest / safehold)",
            )
        )

    def pitr(self) -> None:
        start = sql(self.pg, "SELECT pg_current_wal_lsn()")[0][0]
        target_time = None
        wal_mb = 0.0
        t0 = time.perf_counter()
        while wal_mb < self.pitr_wal_mb:
            self.pg.run(
                "pgbench",
                "-n",
                "-T",
                "5",
                "-c",
                "2",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.pg.port),
                "postgres",
                timeout=600,
            )
            wal_mb = (
                float(
                    sql(self.pg, f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{start}')")[0][0]
                )
                / 1e6
            )
            if wal_mb >= self.pitr_wal_mb * 0.9 and target_time is None:
                target_time = datetime.now(UTC)
                count = sql(self.pg, "SELECT count(*) FROM pgbench_history")[0][0]
        gen_s = time.perf_counter() - t0
        assert target_time is not None
        # Recovery stops at the first commit after the target: there must be one.
        self.pg.run("pgbench", "-n", "-T", "2", "-c", "2", "-h", "127.0.0.1",
                    "-p", str(self.pg.port), "postgres", timeout=600)  # fmt: skip
        sql(self.pg, "SELECT pg_switch_wal()")
        self._wait_archived()
        iso = target_time.isoformat()
        subprocess.run(["sync"], check=True)
        rows: dict[str, int] = {}

        def sh(i: int) -> float:
            secs = self._sh_restore(self.work / f"p-sh{i}", "--time", iso)
            rows["safehold"] = sql(self._last_server, "SELECT count(*) FROM pgbench_history")[0][0]
            self._last_server.stop("immediate")
            return secs

        def br(i: int) -> float:
            secs = self._pgbr_restore(
                self.work / f"p-br{i}",
                "--type=time",
                f"--target={target_time:%Y-%m-%d %H:%M:%S.%f+00}",
                "--target-action=promote",
            )
            rows["pgbackrest"] = sql(self._last_server, "SELECT count(*) FROM pgbench_history")[0][
                0
            ]
            self._last_server.stop("immediate")
            return secs

        a, b = self._pairs(sh, br)
        rows_a, rows_b = rows["safehold"], rows["pgbackrest"]
        self.notes.append(
            f"PITR: {wal_mb:.0f} MB of WAL written by pgbench in {gen_s:.0f} s; "
            f"history rows at the target: safehold {rows_a}, pgBackRest {rows_b}, "
            f"source at the target time {count}"
        )
        self.rows.append(
            (
                f"PITR, about {wal_mb:.0f} MB of WAL",
                f"safehold {med_spread(a)}",
                f"pgBackRest {med_spread(b)}",
                f"{statistics.median(b) / statistics.median(a):.2f}× (pgBackRest / safehold)",
            )
        )

    def _pairs(
        self, sh: Callable[[int], float], br: Callable[[int], float]
    ) -> tuple[list[float], list[float]]:
        """Run both *rounds* times, alternating which goes first; return their times."""
        a: list[float] = []
        b: list[float] = []
        for i in range(self.rounds):
            for tool in ("sh", "br") if i % 2 == 0 else ("br", "sh"):
                subprocess.run(["sync"], check=True)
                (a if tool == "sh" else b).append((sh if tool == "sh" else br)(i))
        return a, b

    def _wait_archived(self) -> None:
        last = sql(self.pg, "SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0]
        archive_dir = self.spool / stanza_for(self.sysid) / "out"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = sql(self.pg, "SELECT last_archived_wal FROM pg_stat_archiver")[0][0] or ""
            if done >= last[:24] and not any(archive_dir.glob("0*")):
                return
            time.sleep(0.2)

    def wal_archiving(self, count: int = 24) -> None:
        with Repository.open(FileStorage(self.repo), PASSWORD) as repo:
            archive = WalArchive(repo, stanza_for(self.sysid))
            names = sorted(n for n in archive.list() if len(n) == 24)[-count:]
            src = self.work / "walsrc"
            src.mkdir()
            for n in names:
                (src / n).write_bytes(archive.get(n))
        subprocess.run(["chown", "-R", "postgres:postgres", str(src)], check=True)
        # safehold: a fresh repository and spool; the hook as archive_command runs it
        repo = self.new_repo("repo-wal")
        spool = self.work / "spool-wal"
        hook = self.hook(repo, spool).split()
        # Both loops run as the postgres user in one shell, as PostgreSQL's
        # archiver runs archive_command: no runuser per segment on the clock.
        files = " ".join(str(src / n) for n in names)
        loop = " ".join(hook).replace("%p", '"$f"')
        t = time.perf_counter()
        acked, sh_cpu = cpu_loop(f"for f in {files}; do {loop} || exit 1; done")
        out = spool / stanza_for(self.sysid) / "out"
        while any(out.glob("0*")):
            time.sleep(0.02)
        drained = time.perf_counter() - t
        lag = drained - acked
        # pgBackRest: a fresh repository, synchronous archive-push (its default)
        conf2 = self.work / "pgbackrest-wal.conf"
        conf2.write_text(
            self.conf.read_text().replace(
                f"repo1-path={self.work / 'pgbr'}", f"repo1-path={self.work / 'pgbr-wal'}"
            )
        )
        (self.work / "pgbr-wal").mkdir()
        subprocess.run(["chown", "-R", "postgres:postgres", str(self.work)], check=True)
        subprocess.run(self.pgbr("stanza-create", conf=conf2), check=True, capture_output=True)
        push = " ".join(self.pgbr("--compress-type=zst", "archive-push", '"$f"', conf=conf2)[4:])
        br, br_cpu = cpu_loop(f"for f in {files}; do {push} || exit 1; done")
        mb, n = len(names) * 16, len(names)
        self.rows.append(
            (
                f"WAL archiving, {n} segments, one process each",
                f"safehold hook {mb / acked:.0f} MB/s acknowledged "
                f"({acked / n * 1000:.0f} ms, CPU {sh_cpu / n * 1000:.0f} ms a segment); "
                f"archive complete {lag:.2f} s after the last",
                f"pgBackRest (sync, zst) {mb / br:.0f} MB/s "
                f"({br / n * 1000:.0f} ms, CPU {br_cpu / n * 1000:.0f} ms a segment)",
                f"{br / acked:.2f}× (safehold rate / pgBackRest rate)",
            )
        )
        # one segment fetched
        dest = self.work / "got"
        (self.work / "gotbr").mkdir()
        subprocess.run(["chown", "postgres:postgres", str(self.work / "gotbr")], check=True)
        dest_br = self.work / "gotbr" / "segment"
        sh_cold, sh_spool, br_get = [], [], []
        for n in names[:5]:
            t = time.perf_counter()
            subprocess.run(
                self.safehold(
                    "pg",
                    "archive-get",
                    n,
                    str(dest),
                    "--repo",
                    str(repo),
                    "--stanza",
                    stanza_for(self.sysid),
                ),
                check=True,
            )
            sh_cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run(self.pgbr("archive-get", n, str(dest_br), conf=conf2), check=True)
            br_get.append(time.perf_counter() - t)
        # from the prefetch spool: one fetch brings the next 8; the hook serves them
        first = names[len(names) // 3]
        subprocess.run(
            self.safehold(
                "pg",
                "archive-get",
                first,
                str(dest),
                "--repo",
                str(repo),
                "--spool",
                str(spool),
                "--stanza",
                stanza_for(self.sysid),
                "--prefetch",
                "8",
            ),
            check=True,
        )
        for n in names[len(names) // 3 + 1 : len(names) // 3 + 6]:
            t = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "safehold.db.hook",
                    "get",
                    n,
                    str(dest),
                    "--spool",
                    str(spool),
                    "--stanza",
                    stanza_for(self.sysid),
                ],
                check=True,
            )
            sh_spool.append(time.perf_counter() - t)
        # safehold restore's own restore_command: a shell script over the spool
        # that its prefetcher fills (here filled beforehand, as the prefetcher does).
        from safehold.db.prefetch import write_restore_script

        rs = self.work / "restore-spool"
        script = write_restore_script(rs)
        sh_script = []
        for n in names[:5]:
            shutil.copy(src / n, rs / "in" / n)
            t = time.perf_counter()
            subprocess.run([str(script), n, str(dest)], check=True)
            sh_script.append(time.perf_counter() - t)
        m = statistics.median
        self.rows.append(
            (
                "one segment fetched (archive-get)",
                f"safehold {m(sh_cold):.3f} s from the repository, "
                f"{m(sh_spool):.3f} s prefetched (hook), "
                f"{m(sh_script):.3f} s prefetched (restore's script)",
                f"pgBackRest {m(br_get):.3f} s",
                f"{m(br_get) / m(sh_script):.1f}× script, {m(br_get) / m(sh_spool):.2f}× hook, "
                f"{m(br_get) / m(sh_cold):.2f}× cold (pgBackRest / safehold time)",
            )
        )

    def report(self) -> str:
        lines = [
            f"## Database run ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, pgbench -s {self.scale}, "
            f"{self.rounds} rounds, safehold chunk {self.chunk_size} B)",
            "",
            "| measure | safehold | pgBackRest | ratio |",
            "| --- | --- | --- | --- |",
        ]
        for name, a, b, r in self.rows:
            lines.append(f"| {name} | {a} | {b} | {r} |")
        lines += ["", *(f"- {n}" for n in self.notes)]
        return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, default=70)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pitr-wal-mb", type=int, default=400)
    ap.add_argument("--work", type=Path, default=Path("/tmp/safehold-db-bench"))
    ap.add_argument("--out", type=Path, default=Path("bench/out/db-results.md"))
    ap.add_argument("--steps", default="full updates restore pitr wal")
    ap.add_argument("--chunk-size", type=int, default=16384, help="safehold's page chunk")
    ap.add_argument("--baseline-src", help="an older src/ directory, run as safehold-base")
    a = ap.parse_args()
    if not shutil.which("pgbackrest"):
        sys.exit("pgbackrest is not installed (make bench-db installs it)")
    b = Bench(a.work, a.scale, a.rounds, a.pitr_wal_mb, a.chunk_size, a.baseline_src)
    b.setup()
    try:
        steps = a.steps.split()
        if "full" in steps:
            b.full_backups()
        if "updates" in steps:
            b.updates()
        if "restore" in steps:
            b.restores()
        if "pitr" in steps:
            b.pitr()
        if "wal" in steps:
            b.wal_archiving()
    finally:
        text = b.report()
        print(text)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
        b.pg.stop("immediate")
        shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
