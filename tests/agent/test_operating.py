"""
Operating the service: a configuration file, JSON logs with job ids and no secrets,
token-free metrics on their own address, and a remote agent running a partition's hooks.

Real processes: ``safehold serve`` and ``safehold agent`` started with ``--config``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from safehold.cli.config import AgentFile, LogFile, ServeFile, _section, load_file
from safehold.core import logctx
from safehold.testing import free_port
from tests.agent.procs import (
    ADMIN,
    AGENT,
    PASSWORD,
    SAFEHOLD,
    api,
    cli,
    start,
    start_controller,
)

PID = "5e5e5e5e-0000-4000-8000-000000000001"
STORAGE_SECRET = "storage-secret-5e5e-never-logged"


def test_config_file_logs_metrics_and_hooks_on_a_remote_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flags beat the environment, which beats the file; a job's log lines carry its ids."""
    metrics_port = free_port()
    cfg = tmp_path / "safehold.toml"
    cfg.write_text(
        f"""
[serve]
port = 1                                # the --port flag wins
metrics_listen = "127.0.0.1:1"          # SAFEHOLD_SERVE_METRICS_LISTEN wins
embedded_agent = false                  # only the file says so: it applies
schedule_spread = 0                     # the first backup when backup is enabled
[agent]
controller = "http://127.0.0.1:1"       # the --controller flag wins
token_file = "{tmp_path / "agent.token"}"
agent_id = "remote-7"
poll = 0.2
heartbeat = 0.5
[log]
format = "json"
level = "debug"
"""
    )
    (tmp_path / "agent.token").write_text(AGENT + "\n")
    monkeypatch.setenv("SAFEHOLD_SERVE_METRICS_LISTEN", f"127.0.0.1:{metrics_port}")
    data = tmp_path / "ctl"
    controller, url = start_controller(data, extra=["--config", str(cfg)])
    agent = start(["agent", "--config", str(cfg), "--controller", url], tmp_path / "agent.log")
    try:
        src = tmp_path / "src"
        src.mkdir()
        (src / "f.txt").write_text("data")
        trace = tmp_path / "trace"
        cli(
            "partition", "add", "--url", url,
            "--application", "fabric:/Ops", "--service", "fabric:/Ops/Svc",
            "--partition-id", PID, "--source", f"dir:{src}", "--agent", "remote-7",
            "--before", f"echo frozen >> {trace}",
            "--after", f"echo thawed $SAFEHOLD_BACKUP_STATE >> {trace}",
        )  # fmt: skip
        policy = {
            "Name": "ops",
            "AutoRestoreOnDataLoss": False,
            "MaxIncrementalBackups": 2,
            "Schedule": {"ScheduleKind": "FrequencyBased", "Interval": "PT12H"},
            "Storage": {
                "StorageKind": "FileShare",
                "Path": str(tmp_path / "store"),
                "PrimaryUserName": "ops",
                "PrimaryPassword": STORAGE_SECRET,
            },
        }
        (tmp_path / "p.json").write_text(json.dumps(policy))
        cli("policy", "create", "--url", url, str(tmp_path / "p.json"))
        cli("policy", "enable", "ops", "--url", url, "--partition-id", PID)
        # A periodic backup (GetBackupProgress shows on-demand ones only, as SF).
        deadline = time.monotonic() + 60
        while not api(url, "GET", f"/Partitions/{PID}/$/GetBackups")["Items"]:
            assert time.monotonic() < deadline, "no periodic backup"
            time.sleep(0.2)
        assert trace.read_text() == "frozen\nthawed Success\n"

        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert scraped.status_code == 200
        assert 'safehold_backups_total{outcome="Success"}' in scraped.text
        assert httpx.get(f"http://127.0.0.1:{metrics_port}/docs", timeout=10).status_code == 404
        post = httpx.post(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert post.status_code == 405
        assert httpx.get(f"{url}/metrics", timeout=10).status_code == 401
    finally:
        agent.stop()
        controller.stop()

    for log in (data / "serve.log", tmp_path / "agent.log"):
        text = log.read_text()
        for secret in (STORAGE_SECRET, PASSWORD, ADMIN, AGENT):
            assert secret not in text, f"{secret} in {log}"
    lines = [json.loads(line) for line in (tmp_path / "agent.log").read_text().splitlines()]
    job_lines = [x for x in lines if "job_id" in x]
    assert any(x["message"] == "before hook done" for x in job_lines)
    assert any(x["message"] == "after hook done" for x in job_lines)
    assert any("ended: Success" in x["message"] for x in job_lines)
    for x in job_lines:
        assert x["partition_id"] == PID
        assert x["agent_id"] == "remote-7"
        assert x["kind"] == "backup"
    serve_lines = [json.loads(line) for line in (data / "serve.log").read_text().splitlines()]
    requests = [x for x in serve_lines if x["logger"] == "safehold.http"]
    assert any(x["message"].startswith("POST /safehold/partitions 201") for x in requests)
    assert all(len(x["request_id"]) == 16 for x in requests)


def test_bad_configuration_files_stop_with_exit_2(tmp_path: Path) -> None:
    """An unknown key or a wrong type is named; nothing starts."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[serve]\nport = "many"\n')
    r = cli("serve", "--config", str(cfg), check=False)
    assert r.returncode == 2
    assert "[serve] port" in r.stderr
    cfg.write_text("[serve]\nportt = 1\n")
    r = cli("serve", "--config", str(cfg), check=False)
    assert r.returncode == 2
    assert "portt" in r.stderr
    cfg.write_text('[log]\nformat = "xml"\n')
    r = cli("agent", "--config", str(cfg), "--token", "t", check=False)
    assert r.returncode == 2
    assert "format" in r.stderr


def test_log_formats_carry_ids_and_scrub_secrets() -> None:
    """text, json and logfmt lines carry the bound ids; registered secrets become ****."""
    for fmt in ("text", "json", "logfmt"):
        stream = io.StringIO()
        logctx.configure(fmt, "INFO", stream)
        try:
            storage = {"StorageKind": "S3", "SecretAccessKey": "s3-secret-abcdef"}
            with logctx.job_context("job-1", "part-1", "agent-1", "backup", storage):
                logging.getLogger("safehold.test").info('odd "quote" and s3-secret-abcdef')
            logging.getLogger("safehold.test").info("after s3-secret-abcdef")
        finally:
            logging.getLogger().handlers.clear()
        first, second = stream.getvalue().splitlines()
        assert "s3-secret-abcdef" not in first
        assert "****" in first
        assert "s3-secret-abcdef" in second  # forgotten once the job ended
        if fmt == "json":
            doc = json.loads(first)
            assert doc["job_id"] == "job-1"
            assert doc["partition_id"] == "part-1"
            assert doc["message"] == 'odd "quote" and ****'
        else:
            assert "job_id=job-1 partition_id=part-1 agent_id=agent-1 kind=backup" in first
        if fmt == "logfmt":
            assert 'msg="odd \\"quote\\" and ****"' in first


def test_the_example_file_parses_and_every_key_is_documented() -> None:
    """deploy/safehold.toml is valid; docs/service.md names every key of every table."""
    root = Path(__file__).resolve().parents[2]
    doc = load_file(root / "deploy" / "safehold.toml")
    docs = (root / "docs" / "service.md").read_text()
    section = docs[docs.index("## Configuration file") : docs.index("## Logs")]
    for model in (ServeFile, AgentFile, LogFile):
        values = _section(model, doc, root / "deploy" / "safehold.toml")
        assert values, model.table
        for name in model.model_fields:
            key = name.removeprefix("log_") if model is LogFile else name
            assert f"`{key}`" in section, f"[{model.table}] {key} is not documented"


def test_wait_survives_a_controller_restart(tmp_path: Path) -> None:
    """`partition backup --wait` keeps polling while its controller is down and restarts."""
    data = tmp_path / "ctl"
    port = free_port()
    controller, url = start_controller(data, port=port)
    marker = tmp_path / "started"
    code = f"import pathlib, time; pathlib.Path('{marker}').touch(); time.sleep(60)"
    try:
        cli(
            "partition", "add", "--url", url,
            "--application", "fabric:/Rs", "--service", "fabric:/Rs/Svc",
            "--partition-id", PID, "--source", f'command:{sys.executable} -c "{code}"',
        )  # fmt: skip
        waiting = subprocess.Popen(
            [SAFEHOLD, "partition", "backup", PID, "--wait", "--url", url,
             "--storage-path", str(tmp_path / "store")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "SAFEHOLD_TOKEN": ADMIN},
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < deadline, "the backup never started"
            time.sleep(0.05)
        controller.kill()
        controller, _ = start_controller(data, port=port)
        out, err = waiting.communicate(timeout=120)
    finally:
        controller.stop()
    # The job died with the controller's embedded agent: the wait reports that, not
    # "cannot reach the controller".
    assert waiting.returncode == 1, (out, err)
    message = err.replace("\n", "")
    assert "backup Failure" in message
    assert "restarted" in message
    assert "cannot reach" not in err


def test_the_metrics_listener_with_a_scrape_token() -> None:
    """With a token, a scrape without it (or with another) is 401; with it, 200."""
    from prometheus_client import CollectorRegistry, Counter

    from safehold.api.metrics_http import MetricsServer, parse_listen

    registry = CollectorRegistry()
    Counter("safehold_test_scrapes", "A test counter.", registry=registry).inc()
    server = MetricsServer(registry, "127.0.0.1", 0, token="scrape-token-1").start()
    try:
        base = f"http://127.0.0.1:{server.port}/metrics"
        assert httpx.get(base, timeout=10).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.get(base, headers=wrong, timeout=10).status_code == 401
        good = httpx.get(base, headers={"Authorization": "Bearer scrape-token-1"}, timeout=10)
        assert good.status_code == 200
        assert "safehold_test_scrapes_total 1.0" in good.text
    finally:
        server.stop()
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen("9464x")
