"""The reference documentation's examples, run as tests: the quickstart, the jobs API page,
the worker page, the hooks page and the transactional-enqueue patterns. Each is the page's
code changed only in its import and database URL; the assertions check what it did."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime, timezone

import asyncpg
import pytest
from conftest import sqlalchemy_url, statuses

from soniq import JobStatus, Soniq
from soniq.testing import wait_until

QUICKSTART = """
# jobs.py
import asyncio
from soniq import Soniq

app = Soniq(database_url="{url}")

@app.job()
async def send_welcome(to: str):
    print(f"Sending welcome email to {{to}}")

if __name__ == "__main__":
    asyncio.run(app.enqueue(send_welcome, to="dev@example.com"))
"""


def python(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, **kwargs
    )


async def test_quickstart(tmp_path, env_for_subprocess, database_url) -> None:
    (tmp_path / "jobs.py").write_text(QUICKSTART.format(url=database_url))
    env = {**env_for_subprocess, "SONIQ_JOBS_MODULES": "jobs"}
    for _ in range(2):  # 3. soniq setup: idempotent
        setup = python("-m", "soniq", "setup", env=env, cwd=tmp_path)
        assert setup.returncode == 0, setup.stderr
    worker = subprocess.Popen(
        [sys.executable, "-u", "-m", "soniq", "worker", "--concurrency", "4"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        enqueue = python("jobs.py", env=env, cwd=tmp_path)
        assert enqueue.returncode == 0, enqueue.stderr
        line = await asyncio.wait_for(asyncio.to_thread(_line_with, worker, "Sending welcome"), 30)
        assert line.strip() == "Sending welcome email to dev@example.com"
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0


def _line_with(process: subprocess.Popen[str], text: str) -> str:
    assert process.stdout is not None
    for line in process.stdout:
        if text in line:
            return line
    raise AssertionError(f"the worker exited without printing {text!r}")


async def test_jobs_page(db, orders_table) -> None:
    sys.path.insert(
        0, os.path.join(os.path.dirname(__file__), "docs")
    )  # the page's module is `users`
    import users
    from users import (
        app,
        cleanup,
        fulfill_order,
        process_payment,
        send_email,
        send_email_ref,
        send_password_reset,
        send_report,
    )  # fmt: skip

    # enqueue(): three input shapes
    job_id = await app.enqueue(send_email, to="a@b.com", subject="Hi", body="Hello")
    job_id2 = await app.enqueue(
        "users.send_email",
        args={"to": "a@b.com", "subject": "Hi", "body": "Hello"},
    )
    job_id3 = await app.enqueue(
        send_email_ref, args={"to": "a@b.com", "subject": "Hi", "body": "Hello"}
    )
    reset = await app.enqueue(send_password_reset, to="a@b.com", token="t")
    payment = await app.enqueue(process_payment, order_id=1, amount=9.5)
    for j in (job_id, job_id2, job_id3):
        job = await app.get_job(j)
        assert job["job_name"] == "users.send_email" and job["status"] == JobStatus.QUEUED
    assert (await app.get_job(reset))["queue"] == "urgent" and (await app.get_job(reset))[
        "max_attempts"
    ] == 6
    assert (await app.get_job(payment))["priority"] == 10

    # Transactional enqueue
    order_id = int(datetime.now().timestamp() * 1000) % 2_000_000_000
    await app.ensure_initialized()
    async with app.backend.acquire() as conn:
        async with conn.transaction():
            await conn.execute("INSERT INTO orders (id) VALUES ($1)", order_id)
            fulfilled = await app.enqueue(fulfill_order, connection=conn, order_id=order_id)
    assert (await app.get_job(fulfilled))["args"] == {"order_id": order_id}

    # schedule()
    from datetime import datetime as dt
    from datetime import timezone as tz

    scheduled = await app.schedule(
        send_report,
        run_at=dt(2025, 1, 1, 9, 0, tzinfo=tz.utc),
        user_id=42,
    )
    assert (await app.get_job(scheduled))["scheduled_at"].startswith("2025-01-01T09:00:00")

    # @app.periodic(): published as schedules when the app connected
    names = {s["name"]: s for s in await app.scheduler.list()}
    assert names["reports.daily"]["cron"] == "0 9 * * *"
    assert names["cleanup"]["cron"] == "*/10 * * * *" and names["cleanup"]["queue"] == "maintenance"
    assert names["metrics.flush"]["every"] == 30

    # Imperative scheduling: app.scheduler
    await app.scheduler.add(
        target=cleanup,  # callable, task-name string, or pass name=
        cron="0 9 * * *",  # OR: every=timedelta(...)
        args={"region": "US"},
        queue="reports",
        priority=10,
    )
    await app.scheduler.pause("reports.daily")
    await app.scheduler.resume("reports.daily")
    await app.scheduler.remove("reports.daily")
    schedules = await app.scheduler.list(status="active")
    sched = await app.scheduler.get("reports.daily")
    assert sched is None and "users.cleanup" in [s["name"] for s in schedules]

    # JobContext: the worker runs process_order
    ctx_job = await app.enqueue(users.process_order, order_id=5)
    report = await app.run_worker(run_once=True, queues=["default", "urgent"])
    assert report.jobs_run >= 6
    assert (await app.get_job(ctx_job))["status"] == "done"
    assert await statuses(
        app, [job_id, job_id2, job_id3, reset, payment, fulfilled, scheduled]
    ) == {"done": 7}
    for name in ("cleanup", "metrics.flush", "users.cleanup"):
        await app.scheduler.remove(name)
    await app.close()


async def test_worker_page(tmp_path, env_for_subprocess, database_url, uid) -> None:
    module = tmp_path / f"{uid}_jobs.py"
    module.write_text(textwrap.dedent(f'''
        import os
        from soniq import Soniq
        app = Soniq()
        @app.job(name="{uid}.emails", queue="emails")
        async def emails(n: int):
            print("email", n, flush=True)
        @app.job(name="{uid}.billing", queue="billing")
        async def billing(n: int):
            print("billing", n, flush=True)
        @app.job(name="{uid}.other", queue="other")
        async def other(n: int):
            print("other", n, flush=True)
    '''))  # fmt: skip
    env = {**env_for_subprocess, "SONIQ_JOBS_MODULES": module.stem}
    producer = Soniq(database_url, enqueue_validation="none")
    ids = [
        await producer.enqueue(f"{uid}.{t}", args={"n": 1}, queue=t)
        for t in ("emails", "billing", "other")
    ]

    # soniq worker --run-once  /  --concurrency 8 --queues emails,billing
    scoped = python(
        "-m",
        "soniq",
        "worker",
        "--concurrency",
        "8",
        "--queues",
        "emails,billing",
        "--run-once",
        env=env,
        cwd=tmp_path,
    )
    assert scoped.returncode == 0, scoped.stderr
    assert await statuses(producer, ids[:2]) == {"done": 2} and await statuses(
        producer, ids[2:]
    ) == {"queued": 1}
    assert python("-m", "soniq", "worker", "--run-once", env=env, cwd=tmp_path).returncode == 0
    assert await statuses(producer, ids) == {"done": 3}
    missing = python(
        "-m", "soniq", "worker", "--run-once", env={**env, "SONIQ_JOBS_MODULES": ""}, cwd=tmp_path
    )
    assert missing.returncode == 1 and "SONIQ_JOBS_MODULES is not set" in missing.stderr

    # run_worker(): the in-process entry point, until SIGTERM
    app = Soniq(database_url=database_url, heartbeat_interval=0.3, heartbeat_timeout=2)

    @app.job(name=f"{uid}.inproc")
    async def inproc() -> None: ...

    job = await app.enqueue(inproc)

    async def signal_when_done() -> None:
        await wait_until(lambda: _done(app, job))
        os.kill(os.getpid(), signal.SIGTERM)

    stopper = asyncio.create_task(signal_when_done())
    await app.run_worker(
        concurrency=4,
        run_once=False,
        queues=None,
    )
    await stopper
    await app.close()
    await producer.close()


async def _done(app: Soniq, job_id: str) -> bool:
    job = await app.get_job(job_id)
    return job is not None and job["status"] == "done"


async def test_hooks_page(database_url, uid, capsys, caplog) -> None:
    app = Soniq(database_url=database_url)

    @app.before_job
    async def log_start(job_name: str, job_id: str, attempt: int):
        print(f"Starting {job_name} ({job_id}), attempt {attempt}")

    @app.after_job
    async def log_success(job_name: str, job_id: str, duration_ms: float):
        print(f"Completed {job_name} ({job_id}) in {duration_ms}ms")

    @app.on_error
    async def log_failure(job_name: str, job_id: str, error: str, attempt: int):
        print(f"Failed {job_name} ({job_id}): {error} (attempt {attempt})")

    # Sync hook works too
    @app.before_job
    def sync_hook(job_name, job_id, attempt):
        print("sync hook", job_name)

    @app.before_job
    def broken(job_name, job_id, attempt):
        raise ConnectionError("down")

    @app.job(name=f"{uid}.ok")
    async def ok() -> None: ...

    @app.job(name=f"{uid}.bad", retries=0)
    async def bad() -> None:
        raise ValueError("nope")

    caplog.set_level(logging.INFO)
    good_id, bad_id = await app.enqueue(ok), await app.enqueue(bad)
    await app.run_worker(run_once=True)
    out = capsys.readouterr().out
    assert (
        f"Starting {uid}.ok ({good_id}), attempt 1" in out
        and f"Completed {uid}.ok ({good_id}) in " in out
    )
    assert f"Failed {uid}.bad ({bad_id}): ValueError: nope" in out and "(attempt 1)" in out
    assert f"sync hook {uid}.ok" in out
    assert any(
        r.levelname == "WARNING"
        and "Hook before_job failed: ConnectionError('down')" in r.getMessage()
        for r in caplog.records
    )
    assert (await app.get_job(good_id))["status"] == "done"
    await app.close()


async def test_transactional_enqueue_patterns(database_url, uid, db, orders_table) -> None:
    eq = Soniq(database_url=database_url)
    sent: list[int] = []

    @eq.job(name=f"{uid}.send_invoice", queue="invoices", max_retries=5)
    async def send_invoice(order_id: int):
        sent.append(order_id)

    base = int(datetime.now(timezone.utc).timestamp() * 1000) % 1_000_000_000

    # Pattern 1: Raw asyncpg via Soniq's pool
    order_id, total = base + 1, 10
    await eq.ensure_initialized()
    async with eq.backend.acquire() as conn:
        async with conn.transaction():
            await conn.execute("INSERT INTO orders (id, total) VALUES ($1, $2)", order_id, total)
            await eq.enqueue(send_invoice, connection=conn, order_id=order_id)
    # ... and a rolled-back one
    with pytest.raises(asyncpg.UniqueViolationError):
        async with eq.backend.acquire() as conn:
            async with conn.transaction():
                await eq.enqueue(send_invoice, connection=conn, order_id=-1)
                await conn.execute(
                    "INSERT INTO orders (id, total) VALUES ($1, $2)", order_id, total
                )

    # Pattern 2: Bring your own asyncpg pool
    db_pool = await asyncpg.create_pool(database_url)
    async with db_pool.acquire() as conn:
        async with conn.transaction():
            order_id2 = await conn.fetchval(
                "INSERT INTO orders (id, total) VALUES ($1, $2) RETURNING id",
                base + 2,
                20,
            )
            await eq.enqueue(send_invoice, connection=conn, order_id=order_id2)
    await db_pool.close()

    # Pattern 3: SQLAlchemy async
    from sqlalchemy import Column, Integer, Numeric
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
    from sqlalchemy.orm import declarative_base

    Base = declarative_base()

    class Order(Base):
        __tablename__ = "orders"
        id = Column(Integer, primary_key=True)
        total = Column(Numeric)

    engine = create_async_engine(sqlalchemy_url(database_url))
    async with AsyncSession(engine) as db_session:
        db = db_session
        async with db.begin():
            order = Order(id=base + 3, total=30)
            db.add(order)
            await db.flush()  # populate order.id without committing
            # Reach down to the raw asyncpg connection.
            raw_conn = await db.connection()
            asyncpg_conn = raw_conn.sync_connection.connection.driver_connection
            await eq.enqueue(send_invoice, connection=asyncpg_conn, order_id=order.id)
        # SQLAlchemy commits here. The job becomes visible to workers at the same moment.
    await engine.dispose()

    jobs = await eq.list_jobs(queue="invoices")
    mine = sorted(j["args"]["order_id"] for j in jobs if j["task_name"] == f"{uid}.send_invoice")
    assert mine == [base + 1, base + 2, base + 3], "the rolled-back order left no job"
    await eq.run_worker(run_once=True, queues=["invoices"])
    assert sorted(sent) == [base + 1, base + 2, base + 3]
    await eq.close()
