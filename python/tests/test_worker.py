"""The worker against the real extension: each job once, retries and the dead letter,
timeouts, sync handlers in threads, JobContext (this module uses `from __future__ import
annotations`: string annotations are recognised), snoozes, hooks, middleware, cancellation,
LISTEN wake-up and the poll fallback without it, and the texts it stores."""

from __future__ import annotations

import asyncio
import collections
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

from conftest import running_worker

from soniq import JobContext, Snooze
from soniq.store import PostgresStore
from soniq.testing import wait_until
from soniq.worker import Worker, worker_options


async def test_run_once_runs_each_job_once_in_batches(make_app, uid) -> None:
    app = make_app()
    runs: collections.Counter[int] = collections.Counter()

    @app.job(name=f"{uid}.count", queue=uid)
    async def count(n: int) -> int:
        runs[n] += 1
        return n * 2

    ids = await app.enqueue_many(count, [{"n": i} for i in range(300)])
    report = await app.run_worker(concurrency=8, run_once=True, queues=[uid])
    assert report.jobs_run == 300 and report.handed_back == 0
    assert sorted(runs) == list(range(300)) and set(runs.values()) == {1}
    assert (await app.queue_stats(uid))["done"] == 300
    assert await app.get_result(ids[21]) == 42


async def test_a_failing_job_retries_then_lands_in_the_dead_letter_with_its_traceback(
    make_app, uid
) -> None:
    app = make_app()
    attempts: list[int] = []

    @app.job(name=f"{uid}.boom", queue=uid, retries=2)
    async def boom(ctx: JobContext) -> None:
        attempts.append(ctx.attempt)
        raise ValueError(f"boom {ctx.attempt}")

    job_id = await app.enqueue(boom)
    await app.run_worker(run_once=True, queues=[uid])
    assert attempts == [1, 2, 3]
    job = await app.get_job(job_id)
    assert job["status"] == "dead_letter" and job["dead_letter_reason"] == "max_retries_exceeded"
    assert job["attempts"] == 3 and job["max_attempts"] == 3
    assert job["last_error"].startswith("ValueError: boom 3\nTraceback (most recent call last):")
    assert 'raise ValueError(f"boom {ctx.attempt}")' in job["last_error"]


async def test_retry_delays_are_the_tasks_published_policy(make_app, uid) -> None:
    app = make_app()
    failures = []

    @app.job(name=f"{uid}.later", queue=uid, retries=3, retry_delay=[0, 3600])
    async def later() -> None:
        failures.append(1)
        raise RuntimeError("not yet")

    job_id = await app.enqueue(later)
    await app.run_worker(run_once=True, queues=[uid])
    job = await app.get_job(job_id)
    assert len(failures) == 2, "the first retry is immediate, the second waits an hour"
    assert job["status"] == "queued" and job["attempts"] == 2
    wait = datetime.fromisoformat(job["scheduled_at"]) - datetime.now(timezone.utc)
    assert 3500 < wait.total_seconds() <= 3600


async def test_timeouts_cancel_async_handlers_and_abandon_sync_ones(make_app, uid) -> None:
    app = make_app()
    cancelled = asyncio.Event()

    @app.job(name=f"{uid}.slow_async", queue=uid, timeout=0.3, retries=0)
    async def slow_async() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    @app.job(name=f"{uid}.slow_sync", queue=uid, timeout=0.2, retries=0)
    def slow_sync() -> None:
        time.sleep(1.0)

    a = await app.enqueue(slow_async)
    s = await app.enqueue(slow_sync)
    await app.run_worker(run_once=True, queues=[uid])
    assert cancelled.is_set()
    for job_id, shown in [(a, "0.3"), (s, "0.2")]:
        job = await app.get_job(job_id)
        assert job["status"] == "dead_letter" and job["dead_letter_reason"] == "timeout"
        assert job["last_error"] == f"Job timed out after {shown}s"


async def test_sync_handlers_run_in_threads_side_by_side(make_app, uid) -> None:
    app = make_app()
    lock = threading.Lock()
    state = {"now": 0, "most": 0}
    threads = set()
    release = threading.Event()

    @app.job(name=f"{uid}.blocking", queue=uid)
    def blocking() -> str:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            threads.add(threading.current_thread().name)
            if state["most"] == 4:
                release.set()
        release.wait(10)  # all four at once, or none finishes early
        with lock:
            state["now"] -= 1
        return threading.current_thread().name

    await app.enqueue_many(blocking, [{} for _ in range(4)])
    await app.run_worker(concurrency=4, run_once=True, queues=[uid])
    assert state["most"] == 4 and release.is_set()
    assert threading.main_thread().name not in threads


async def test_job_context_is_injected_by_annotation(make_app, uid) -> None:
    app = make_app()
    seen: list[JobContext] = []

    @app.job(name=f"{uid}.ctx", queue=uid, retries=4)
    async def with_context(order_id: int, ctx: JobContext) -> None:
        seen.append(ctx)

    job_id = await app.enqueue(with_context, order_id=7)
    await app.run_worker(run_once=True, queues=[uid])
    (ctx,) = seen
    assert ctx.job_id == job_id and ctx.job_name == f"{uid}.ctx" and ctx.queue == uid
    assert ctx.attempt == 1 and ctx.max_attempts == 5
    assert uuid.UUID(ctx.worker_id) and ctx.created_at is not None and ctx.scheduled_at is None


async def test_a_snooze_runs_again_later_without_using_an_attempt(make_app, uid) -> None:
    app = make_app()
    runs: list[int] = []

    @app.job(name=f"{uid}.snoozy", queue=uid, retries=0)
    async def snoozy(ctx: JobContext) -> object:
        runs.append(ctx.attempt)
        return Snooze(0.3, "rate limited") if len(runs) == 1 else "done"

    job_id = await app.enqueue(snoozy)
    await app.run_worker(run_once=True, queues=[uid])
    job = await app.get_job(job_id)
    assert (
        job["status"] == "queued"
        and job["attempts"] == 0
        and job["last_error"] == "snoozed: rate limited"
    )
    async with running_worker(app, queues=[uid]):
        await wait_until(lambda: len(runs) == 2)
        await wait_until(lambda: _status(app, job_id, "done"))
    assert runs == [1, 1], "both runs were attempt 1: the snooze used none"


async def _status(app, job_id: str, status: str) -> bool:
    job = await app.get_job(job_id)
    return job is not None and job["status"] == status


async def test_hooks_and_middleware_never_break_a_job(make_app, uid) -> None:
    app = make_app()
    events: list[tuple] = []

    @app.before_job
    async def before(job_name: str, job_id: str, attempt: int) -> None:
        events.append(("before", job_name, attempt))

    @app.before_job
    def broken(job_name: str, job_id: str, attempt: int) -> None:
        raise ConnectionError("metrics are down")

    @app.after_job
    def after(job_name: str, job_id: str, duration_ms: float) -> None:
        assert duration_ms >= 0
        events.append(("after", job_name))

    @app.on_error
    async def on_error(job_name: str, job_id: str, error: str, attempt: int) -> None:
        events.append(("error", job_name, error.splitlines()[0], attempt))

    @app.middleware
    async def outer(ctx: JobContext, call_next) -> object:
        events.append(("outer in", ctx.job_name))
        result = await call_next()
        return {"wrapped": result}

    @app.middleware
    async def inner(ctx: JobContext, call_next) -> object:
        events.append(("inner in", ctx.job_name))
        return await call_next()

    @app.job(name=f"{uid}.ok", queue=uid)
    async def ok() -> int:
        return 1

    @app.job(name=f"{uid}.bad", queue=uid, retries=0)
    async def bad() -> None:
        raise KeyError("k")

    good = await app.enqueue(ok)
    await app.run_worker(run_once=True, queues=[uid])
    assert await app.get_result(good) == {"wrapped": 1}
    await app.enqueue(bad)
    await app.run_worker(run_once=True, queues=[uid])
    ok_name, bad_name = f"{uid}.ok", f"{uid}.bad"
    assert events == [
        ("before", ok_name, 1), ("outer in", ok_name), ("inner in", ok_name), ("after", ok_name),
        ("before", bad_name, 1), ("outer in", bad_name), ("inner in", bad_name),
        ("error", bad_name, "KeyError: 'k'", 1),
    ]  # fmt: skip


async def test_a_running_job_is_stopped_when_its_cancellation_is_requested(make_app, uid) -> None:
    app = make_app()
    started = asyncio.Event()

    @app.job(name=f"{uid}.forever", queue=uid)
    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    job_id = await app.enqueue(forever)
    async with running_worker(app, queues=[uid]):
        await asyncio.wait_for(started.wait(), 10)
        assert await app.cancel_job(job_id) is True
        await wait_until(lambda: _status(app, job_id, "cancelled"))
    assert (await app.get_job(job_id))["last_error"] == "cancelled on request"


async def test_an_idle_worker_is_woken_by_listen_not_by_polling(make_app, uid) -> None:
    app = make_app(poll_interval=60)
    done: list[int] = []

    @app.job(name=f"{uid}.wake", queue=uid)
    async def wake(n: int) -> None:
        done.append(n)

    async with running_worker(app, queues=[uid]):
        await app.enqueue(wake, n=1)
        await wait_until(lambda: done == [1], timeout=20)
        # Now the worker is idle until a notification (or a poll 60 s away).
        await app.enqueue(wake, n=2)
        await wait_until(
            lambda: done == [1, 2], timeout=10, message="the notification did not wake the worker"
        )


async def test_errors_are_cut_to_8192_bytes_and_odd_args_fail_as_invalid(make_app, uid, db) -> None:
    app = make_app()

    @app.job(name=f"{uid}.long", queue=uid, retries=0)
    async def long_error(n: int) -> None:
        raise ValueError("é" * 10000)

    job_id = await app.enqueue(long_error, n=1)
    bad_args = await db.fetchval("SELECT soniq.enqueue($1, '{\"wrong\": 1}')::text", f"{uid}.long")
    await app.run_worker(run_once=True, queues=[uid])
    error = (await app.get_job(job_id))["last_error"]
    assert len(error.encode()) <= 8192 and len(error.encode()) > 8000
    assert ("ValueError: " + "é" * 10000).startswith(error)
    invalid = await app.get_job(bad_args)
    assert invalid["dead_letter_reason"] == "invalid_arguments"
    assert invalid["queue"] == uid, "a job enqueued from SQL took the task's published queue"
    assert (
        invalid["last_error"]
        == "arguments do not match the handler: missing a required argument: 'n'"
    )


async def test_results_are_json_or_their_text(make_app, uid) -> None:
    app = make_app()

    @app.job(name=f"{uid}.results", queue=uid)
    async def results(kind: str) -> object:
        return {"none": None, "dict": {"a": [1, 2]}, "odd": uuid.UUID(int=1)}[kind]

    ids = {k: await app.enqueue(results, kind=k) for k in ("none", "dict", "odd")}
    await app.run_worker(run_once=True, queues=[uid])
    assert await app.get_result(ids["none"]) is None
    assert await app.get_result(ids["dict"]) == {"a": [1, 2]}
    assert await app.get_result(ids["odd"]) == str(uuid.UUID(int=1))


async def test_without_listen_the_worker_polls(make_app, uid, caplog) -> None:
    """LISTEN unavailable (the listener's connections refused, as behind a pooler that
    refuses it): the worker still picks jobs up, within the poll interval."""
    app = make_app(poll_interval=1.0)
    done: list[int] = []

    @app.job(name=f"{uid}.polled", queue=uid)
    async def polled(n: int) -> None:
        done.append(n)

    await app.ensure_initialized()
    with socket.socket() as closed:  # bound, not listening: connecting is refused
        closed.bind(("127.0.0.1", 0))
        refused = f"postgresql://postgres@127.0.0.1:{closed.getsockname()[1]}/nowhere"
        worker = Worker(PostgresStore(app.backend.pool, refused), app.registry, app.settings)
        stop = asyncio.Event()
        run = asyncio.create_task(worker.start(worker_options(2, [uid]), stop))
        try:
            await wait_until(lambda: "polling until it reconnects" in caplog.text, timeout=10)
            for n in (1, 2):  # each while the worker is idle in its poll wait
                enqueued = time.monotonic()
                await app.enqueue(polled, n=n)
                await wait_until(lambda n=n: n in done, timeout=5, poll=0.01)
                assert time.monotonic() - enqueued < 1.0 + 1.5, "picked up by the next poll"
        finally:
            stop.set()
            await asyncio.wait_for(run, 30)
    assert done == [1, 2]
