"""The faults that matter for a Python worker, on real processes: killed mid-drain (nothing
lost: the control plane takes its jobs back), PostgreSQL restarted mid-drain (the worker
reconnects and finishes), SIGTERM (running jobs finish or are handed back without using an
attempt), a second signal (exit at once), and the maintenance right after an outage (it
presumes no worker dead for one heartbeat timeout)."""

from __future__ import annotations

import asyncio
import collections
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
from conftest import statuses

from soniq import Soniq
from soniq.runner import WorkerRun
from soniq.store import PostgresStore, unreachable
from soniq.testing import wait_until
from soniq.worker import worker_options


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


async def quiet_control_plane(db) -> None:
    """Wait until the control plane has run no round for longer than a tick (2 s): it read
    `soniq.enabled = off`."""
    last = await db.fetchval(
        "SELECT last_run_at FROM soniq.control_plane WHERE subsystem = 'control_plane'"
    )
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 2.5:
        await asyncio.sleep(0.2)
        now = await db.fetchval(
            "SELECT last_run_at FROM soniq.control_plane WHERE subsystem = 'control_plane'"
        )
        if now != last:
            last, quiet_since = now, time.monotonic()


@pytest.fixture
async def control_plane_off(db):
    """Only the worker's maintenance rescues while the test runs."""
    await db.execute("ALTER SYSTEM SET soniq.enabled = off")
    await db.execute("SELECT pg_reload_conf()")
    try:
        await quiet_control_plane(db)
        yield
    finally:
        await db.execute("ALTER SYSTEM RESET soniq.enabled")
        await db.execute("SELECT pg_reload_conf()")


async def test_maintenance_after_an_outage_presumes_no_worker_dead_for_a_heartbeat_timeout(
    make_app, database_url, db, uid, control_plane_off
) -> None:
    """A heartbeat that fails is an outage every worker went through: for one heartbeat
    timeout after it the worker's maintenance presumes no worker dead, then it does again."""
    app = make_app(heartbeat_timeout=1.0, heartbeat_interval=0.1)
    queue = f"outage_{uid}"
    silent = await db.fetchval("SELECT soniq.register_worker(queues => ARRAY[$1])::text", queue)
    held = await db.fetchval(
        "SELECT soniq.enqueue('py.other', queue => $1, retries => 3)::text", queue
    )
    claim = "SELECT count(*) FROM soniq.claim($1::uuid, ARRAY[$2])"
    assert await db.fetchval(claim, silent, queue) == 1
    await db.execute(
        "UPDATE soniq.workers SET last_heartbeat = now() - interval '1 hour' WHERE id = $1::uuid",
        silent,
    )
    status = "SELECT status FROM soniq.jobs WHERE id = $1::uuid"
    registered = "SELECT EXISTS (SELECT FROM soniq.workers WHERE id = $1::uuid)"

    unreachable = "postgresql://nobody@127.0.0.1:1/none"
    down = PostgresStore(
        await asyncpg.create_pool(unreachable, min_size=0, max_size=1), unreachable
    )
    run = WorkerRun(down, app.handlers, app.settings, worker_options(1, [f"own_{uid}"]))
    await run._heartbeat()  # refused: the database is out of reach
    await down.close()
    run.store = await PostgresStore.connect(database_url, 1, 1)
    try:
        await run._maintain()
        assert await db.fetchval(registered, silent)
        assert await db.fetchval(status, held) == "processing"
        await asyncio.sleep(1.1)  # one heartbeat timeout after the outage
        await run._maintain()
        assert not await db.fetchval(registered, silent)
        assert await db.fetchval(status, held) == "queued"
    finally:
        await run.store.close()


async def test_a_refused_heartbeat_is_no_outage(
    make_app, database_url, db, uid, control_plane_off
) -> None:
    """A heartbeat the database answered with a refusal outside the refusal classes (here a
    read-only transaction, 25006) says nothing of the other workers: the maintenance right
    after it still takes back a silent worker's job."""
    app = make_app(heartbeat_timeout=1.0, heartbeat_interval=0.1)
    queue = f"refused_{uid}"
    silent = await db.fetchval("SELECT soniq.register_worker(queues => ARRAY[$1])::text", queue)
    held = await db.fetchval(
        "SELECT soniq.enqueue('py.other', queue => $1, retries => 3)::text", queue
    )
    assert (
        await db.fetchval("SELECT count(*) FROM soniq.claim($1::uuid, ARRAY[$2])", silent, queue)
        == 1
    )
    await db.execute(
        "UPDATE soniq.workers SET last_heartbeat = now() - interval '1 hour' WHERE id = $1::uuid",
        silent,
    )
    read_only = await asyncpg.create_pool(
        database_url,
        min_size=0,
        max_size=1,
        server_settings={"default_transaction_read_only": "on"},
    )
    run = WorkerRun(
        PostgresStore(read_only, database_url),
        app.handlers,
        app.settings,
        worker_options(1, [f"own_{uid}"]),
    )
    run.worker_id = await db.fetchval(
        "SELECT soniq.register_worker(queues => ARRAY[$1])::text", f"own_{uid}"
    )
    await run._heartbeat()  # refused: read-only
    await read_only.close()
    assert run.last_outage is None
    run.store = await PostgresStore.connect(database_url, 1, 1)
    try:
        await run._maintain()
        assert not await db.fetchval(
            "SELECT EXISTS (SELECT FROM soniq.workers WHERE id = $1::uuid)", silent
        )
        assert (
            await db.fetchval("SELECT status FROM soniq.jobs WHERE id = $1::uuid", held) == "queued"
        )
    finally:
        await run.store.close()


async def test_an_error_tells_an_unreachable_database_from_a_refusal(database_url) -> None:
    """The same line as the Rust runner's Error::unreachable, on errors the server really gave."""
    conn = await asyncpg.connect(database_url)
    with pytest.raises(Exception) as refused:
        await conn.fetchval("SELECT 1 / 0")
    assert not unreachable(refused.value)
    with pytest.raises(Exception) as ended:  # the server ends the connection (57P01)
        await conn.fetchval("SELECT pg_terminate_backend(pg_backend_pid())")
    assert unreachable(ended.value), repr(ended.value)
    with pytest.raises(Exception) as closed:  # then the same connection, closed
        await conn.fetchval("SELECT 1")
    assert unreachable(closed.value), repr(closed.value)
    with pytest.raises(Exception) as nowhere:  # nothing listening
        await asyncpg.connect("postgresql://nobody@127.0.0.1:1/none")
    assert unreachable(nowhere.value), repr(nowhere.value)
