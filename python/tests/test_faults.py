"""The faults that matter for a Python worker, on real processes: killed mid-drain (nothing
lost: the control plane takes its jobs back), PostgreSQL restarted mid-drain (the worker
reconnects and finishes), SIGTERM (running jobs finish or are handed back without using an
attempt) and a second signal (exit at once)."""

from __future__ import annotations

import collections
import os
import pwd
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import statuses

from soniq import Soniq
from soniq.testing import wait_until


def start_worker(
    env: dict[str, str], queue: str, *extra: str, **more_env: str
) -> subprocess.Popen[str]:
    """A worker process; its log goes to <queue>.log in the current directory (a file: a
    pipe nobody reads would block it once full)."""
    return subprocess.Popen(
        [sys.executable, "-m", "soniq", "worker", "--jobs-modules", "apps.faults", "--queues", queue, *extra],
        env={**env, **more_env}, stdout=subprocess.DEVNULL, stderr=open(f"{queue}.log", "w"), text=True,
    )  # fmt: skip


def runs(log: Path) -> collections.Counter[str]:
    return collections.Counter(log.read_text().split()) if log.exists() else collections.Counter()


async def enqueue_work(app: Soniq, queue: str, log: Path, n: int, seconds: float) -> list[str]:
    args = [{"path": str(log), "token": f"j{i}", "seconds": seconds} for i in range(n)]
    return await app.enqueue_many("faults.work", args, queue=queue)


async def done(app: Soniq, queue: str, n: int) -> bool:
    try:
        return (await app.queue_stats(queue))["done"] == n
    except (OSError, Exception):  # the database is restarting: not yet
        return False


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture
async def producer(database_url):
    app = Soniq(database_url, enqueue_validation="none")
    yield app
    await app.close()


async def test_a_worker_killed_mid_drain_loses_no_job(
    producer, uid, tmp_path, env_for_subprocess
) -> None:
    log = tmp_path / "runs.log"
    ids = await enqueue_work(producer, uid, log, 300, 0.01)
    first = start_worker(env_for_subprocess, uid, "--concurrency", "4")
    await wait_until(lambda: sum(runs(log).values()) >= 50, timeout=60)
    first.kill()
    first.wait(10)
    killed_at = sum(runs(log).values())
    assert killed_at < 300, "the kill came mid-drain"
    second = start_worker(env_for_subprocess, uid, "--concurrency", "4")
    try:
        await wait_until(
            lambda: done(producer, uid, 300),
            timeout=90,
            message="the killed worker's jobs were not taken back",
        )
    finally:
        second.terminate()
        assert second.wait(30) == 0
    counted = runs(log)
    assert set(counted) == {f"j{i}" for i in range(300)}, "no job lost"
    repeated = [t for t, n in counted.items() if n > 1]
    assert len(repeated) <= 4, f"only the jobs the killed worker held ran twice: {repeated}"
    assert await statuses(producer, ids) == {"done": 300}


def pg_ctl() -> list[str]:
    bindir = (
        os.environ.get("SONIQ_PG_BINDIR")
        or subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    command = [os.path.join(bindir, "pg_ctl")]
    if pwd.getpwuid(os.geteuid()).pw_name != "postgres":  # the cluster is the postgres user's
        command = ["sudo", "-u", "postgres", *command]
    return command


async def test_a_postgresql_restart_mid_drain_is_survived(
    producer, uid, tmp_path, env_for_subprocess
) -> None:
    pgdata = os.environ.get("SONIQ_TEST_PGDATA")
    if not pgdata:
        pytest.fail(
            "SONIQ_TEST_PGDATA is not set: the data directory of the test cluster, to restart it"
        )
    log = tmp_path / "runs.log"
    ids = await enqueue_work(producer, uid, log, 300, 0.01)
    worker = start_worker(env_for_subprocess, uid, "--concurrency", "4")
    try:
        await wait_until(lambda: sum(runs(log).values()) >= 50, timeout=60)
        server_log = str(Path(pgdata).parent / "postgres.log")
        restart = subprocess.run([*pg_ctl(), "-D", pgdata, "-l", server_log, "-w", "-m", "fast", "restart"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)  # fmt: skip
        assert restart.returncode == 0, restart.stderr
        assert sum(runs(log).values()) < 300, "the restart came mid-drain"
        await wait_until(
            lambda: done(producer, uid, 300),
            timeout=120,
            message="the worker did not finish after the restart",
        )
        assert worker.poll() is None, "the worker survived the restart"
    finally:
        worker.terminate()
        assert worker.wait(30) == 0
    assert set(runs(log)) == {f"j{i}" for i in range(300)}
    assert await statuses(producer, ids) == {"done": 300}


async def test_sigterm_finishes_short_jobs_and_hands_long_ones_back(
    producer, uid, tmp_path, env_for_subprocess
) -> None:
    log = tmp_path / "runs.log"
    short = (await enqueue_work(producer, uid, log, 1, 0.5))[0]
    long = await producer.enqueue(
        "faults.work", args={"path": str(log), "token": "long", "seconds": 60}, queue=uid
    )
    worker = start_worker(env_for_subprocess, uid, "--concurrency", "2", SONIQ_SHUTDOWN_TIMEOUT="2")
    await wait_until(lambda: _both_processing(producer, short, long), timeout=30)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert runs(log) == {"j0": 1}, "the short job finished within the shutdown timeout"
    job = await producer.get_job(long)
    assert (job["status"], job["attempts"]) == ("queued", 0), "handed back without using an attempt"
    assert job["last_error"] == "snoozed: handed back unfinished at shutdown"
    assert (await producer.get_job(short))["status"] == "done"


async def _both_processing(app: Soniq, *ids: str) -> bool:
    return await statuses(app, list(ids)) == {"processing": len(ids)}


async def test_a_second_signal_exits_at_once(producer, uid, tmp_path, env_for_subprocess) -> None:
    log = tmp_path / "runs.log"
    job_id = await producer.enqueue(
        "faults.work", args={"path": str(log), "token": "x", "seconds": 60}, queue=uid
    )
    worker = start_worker(env_for_subprocess, uid, SONIQ_SHUTDOWN_TIMEOUT="60")
    await wait_until(lambda: _both_processing(producer, job_id), timeout=30)
    worker.send_signal(signal.SIGTERM)
    # The second signal only once the first was taken (two at once may arrive as one).
    await wait_until(
        lambda: "shutting down gracefully" in Path(f"{uid}.log").read_text(), timeout=30
    )
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(10) == 130
    # The job it held is taken back by the control plane once the heartbeats stop.
    await wait_until(lambda: _queued(producer, job_id), timeout=30)
    assert not runs(log)


async def _queued(app: Soniq, job_id: str) -> bool:
    return (await app.get_job(job_id))["status"] == "queued"
