"""Flow control (the extension's soniq.queue_configure) as a Python worker meets it."""

from __future__ import annotations

import time

import asyncpg


async def test_run_once_waits_for_jobs_a_rate_limit_holds_back(make_app, uid, database_url) -> None:
    app = make_app()
    ran: list[int] = []

    @app.job(name=f"{uid}.paced", queue=uid)
    async def paced(n: int) -> None:
        ran.append(n)

    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "SELECT soniq.queue_configure($1, '{\"rate_limit\": 4, \"rate_period\": 1}')", uid
        )
        await app.enqueue_many(paced, [{"n": i} for i in range(10)])
        started = time.monotonic()
        # Four start in each second: the worker must not stop when the first window is full.
        report = await app.run_worker(run_once=True, queues=[uid])
        took = time.monotonic() - started
        assert sorted(ran) == list(range(10)), "run_once stopped with jobs held back"
        assert report is not None
        assert took >= 2.0, f"10 jobs at 4 a second started within {took:.1f} s"
        most = await connection.fetchval(
            "SELECT max((SELECT count(*) FROM soniq.jobs o WHERE o.queue = j.queue"
            "  AND o.started_at > j.started_at - interval '1 second' AND o.started_at <= j.started_at))"
            " FROM soniq.jobs j WHERE j.queue = $1",
            uid,
        )
        assert most <= 4, f"{most} started in one window"
    finally:
        await connection.execute("DELETE FROM soniq.queues WHERE name = $1", uid)
        await connection.close()
