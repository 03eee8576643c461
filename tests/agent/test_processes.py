"""A controller and agents as real processes: remote agents, crashes, restarts, the demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from safehold.testing import free_port
from tests.agent.procs import (
    AGENT,
    PASSWORD,
    api,
    cli,
    start,
    start_controller,
    wait_backups,
    wait_health,
)

P1 = "f0000000-0000-4000-8000-000000000001"
P2 = "f0000000-0000-4000-8000-000000000002"
P3 = "f0000000-0000-4000-8000-000000000003"


def policy_file(tmp: Path, store: Path) -> Path:
    doc = {
        "Name": "proc",
        "AutoRestoreOnDataLoss": False,
        "MaxIncrementalBackups": 2,
        "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "P1D"},
        "Storage": {"StorageKind": "FileShare", "Path": str(store)},
    }
    path = tmp / "policy.json"
    path.write_text(json.dumps(doc))
    return path


def slow_dump(marker: Path) -> str:
    """A dump command that signals it started, then takes a long time."""
    code = f"import pathlib, time; pathlib.Path('{marker}').touch(); time.sleep(60); print('late')"
    return f'command:{sys.executable} -c "{code}"'


def wait_file(path: Path, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_two_agents_pull_their_partitions_and_a_lost_agent_fails_its_job(tmp_path: Path) -> None:
    """Agents with no inbound port back up what is assigned to them; a killed agent's job fails."""
    controller, url = start_controller(
        tmp_path / "ctl", extra=["--no-embedded-agent", "--agent-timeout", "2"]
    )
    agents = []
    try:
        for name in ("east", "west"):
            agents.append(
                start(
                    [
                        "agent",
                        "--controller",
                        url,
                        "--token",
                        AGENT,
                        "--id",
                        name,
                        "--poll",
                        "0.2",
                        "--heartbeat",
                        "0.3",
                    ],
                    tmp_path / f"{name}.log",
                )
            )
        for pid, name in ((P1, "east"), (P2, "west")):
            src = tmp_path / f"src-{name}"
            src.mkdir()
            (src / "f.txt").write_text(f"owned by {name}")
            cli(
                "partition",
                "add",
                "--url",
                url,
                "--application",
                "fabric:/Multi",
                "--service",
                "fabric:/Multi/Svc",
                "--partition-id",
                pid,
                "--source",
                f"dir:{src}",
                "--agent",
                name,
            )
        cli("policy", "create", "--url", url, str(policy_file(tmp_path, tmp_path / "store")))
        cli("policy", "enable", "proc", "--url", url, "--application", "fabric:/Multi")
        for pid in (P1, P2):
            # The scheduler's first backup, on the partition's agent. (Under heavy load a
            # heartbeat can miss the 2 s agent timeout: the job is retried, and the late
            # backup is recorded too; so at least one, and all of this partition.)
            backups = wait_backups(url, pid)
            assert {b["PartitionInformation"]["Id"] for b in backups} == {pid}
        assert {"east", "west"} <= {a["AgentId"] for a in api(url, "GET", "/safehold/agents")}
        # A partition registered now inherits the policy: its first backup starts at once.
        marker = tmp_path / "started"
        cli(
            "partition",
            "add",
            "--url",
            url,
            "--application",
            "fabric:/Multi",
            "--service",
            "fabric:/Multi/Svc",
            "--partition-id",
            P3,
            "--source",
            slow_dump(marker),
            "--agent",
            "east",
        )
        wait_file(marker)
        cli("policy", "suspend", "--url", url, "--application", "fabric:/Multi")
        # The scheduler's backup of P3 runs on agent east, which dies in the middle.
        agents[0].kill()
        wait_health(url, P3, "agent east disappeared", limit=30)
        agents_seen = {a["AgentId"]: a for a in api(url, "GET", "/safehold/agents")}
        assert not agents_seen["east"]["Alive"]
        assert agents_seen["west"]["Alive"]
        # West still works.
        r = cli("partition", "backup", P2, "--wait", "--url", url)
        assert "stored at" in r.stdout
    finally:
        for a in agents:
            a.stop()
        controller.stop()


def test_controller_killed_mid_backup_restarts_consistent(tmp_path: Path) -> None:
    """A crash mid-backup fails only that job, with the reason; all works after the restart."""
    data = tmp_path / "ctl"
    port = free_port()  # the same port after the restart: the same embedded agent id
    controller, url = start_controller(data, port=port)
    marker = tmp_path / "started"
    store = tmp_path / "store"
    try:
        src = tmp_path / "src"
        src.mkdir()
        (src / "f.txt").write_text("good data")
        cli(
            "partition",
            "add",
            "--url",
            url,
            "--application",
            "fabric:/Crash",
            "--service",
            "fabric:/Crash/Svc",
            "--partition-id",
            P1,
            "--source",
            f"dir:{src}",
        )
        cli(
            "partition",
            "add",
            "--url",
            url,
            "--application",
            "fabric:/Crash",
            "--service",
            "fabric:/Crash/Svc",
            "--partition-id",
            P2,
            "--source",
            slow_dump(marker),
        )
        cli("policy", "create", "--url", url, str(policy_file(tmp_path, store)))
        cli("policy", "enable", "proc", "--url", url, "--partition-id", P1)
        cli("policy", "enable", "proc", "--url", url, "--partition-id", P2)
        wait_backups(url, P1)
        wait_file(marker)  # P2's backup is running in the embedded agent
        controller.kill()
    finally:
        controller.stop()
    controller, url = start_controller(data, port=port)
    try:
        # The embedded agent is back with a new incarnation: the job its dead run
        # held fails at once, with the reason; nothing else was failed.
        wait_health(url, P2, "SAFEHOLD_E_AGENT_RESTARTED", limit=30)
        before = api(url, "GET", f"/Partitions/{P1}/$/GetBackups")["Items"]
        assert len(before) == 1
        r = cli("partition", "backup", P1, "--wait", "--url", url)
        assert "stored at" in r.stdout
        assert len(api(url, "GET", f"/Partitions/{P1}/$/GetBackups")["Items"]) == 2
        (src / "f.txt").write_text("bad")
        cli("partition", "restore", P1, "--latest", "--wait", "--yes", "--url", url)
        assert (src / "f.txt").read_text() == "good data"
    finally:
        controller.stop()
    check = subprocess.run(
        [str(Path(sys.executable).with_name("safehold")), "check", "--repo", str(store)],
        capture_output=True,
        text=True,
        env={**os.environ, "SAFEHOLD_PASSWORD": PASSWORD},
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_demo_script_runs_non_interactively(tmp_path: Path) -> None:
    """scripts/demo.sh registers, enables, backs up and restores, then exits (in test mode)."""

    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "SAFEHOLD_DEMO_DIR": str(tmp_path / "demo"),
        "SAFEHOLD_DEMO_PORT": str(free_port()),
        "SAFEHOLD_DEMO_NONINTERACTIVE": "1",
        "SAFEHOLD_BIN": str(Path(sys.executable).with_name("safehold")),
        "SAFEHOLD_PYTHON": sys.executable,
    }
    env.pop("SAFEHOLD_PASSWORD", None)
    proc = subprocess.Popen(
        ["bash", str(root / "scripts" / "demo.sh")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the script and the server it started
            proc.communicate()
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    assert "demo: backup and restore worked" in out
    token = (tmp_path / "demo" / "admin.token").read_text().strip()
    assert token not in out + err
