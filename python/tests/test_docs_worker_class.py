"""The worker page's `Worker` class (advanced), as the page shows it: built from an app's
backend, a JobRegistry, SoniqSettings and a dict of hooks; run_once(max_jobs=), run()."""

from __future__ import annotations

import asyncio
import os
import signal

from conftest import statuses

from soniq import Soniq
from soniq.testing import wait_until


async def test_worker_class(database_url, uid) -> None:
    from soniq.core.registry import JobRegistry
    from soniq.settings import SoniqSettings
    from soniq.worker import Worker

    app = Soniq(database_url=database_url)
    ran: list[int] = []

    @app.job(name=f"{uid}.work", queue=uid)
    async def work(n: int) -> None:
        ran.append(n)

    started: list[str] = []
    await app.ensure_initialized()
    backend = app.backend
    registry = app._get_job_registry()
    settings = SoniqSettings(database_url=database_url, poll_interval=0.5, heartbeat_interval=0.3)
    hooks = {"before_job": [lambda job_name, job_id, attempt: started.append(job_id)]}

    worker = Worker(
        backend=backend,  # A StorageBackend instance
        registry=registry,  # A JobRegistry with registered jobs
        settings=settings,  # SoniqSettings (optional, uses global defaults)
        hooks=hooks,  # Dict of hook lists (optional)
    )
    assert isinstance(registry, JobRegistry)
    ids = await app.enqueue_many(work, [{"n": i} for i in range(5)])

    # run_once(max_jobs=2): two of the five, then return
    assert await worker.run_once(queues=[uid], max_jobs=2) is True
    assert await statuses(app, ids) == {"done": 2, "queued": 3} and len(ran) == 2
    # run(run_once=True): the rest; then nothing is left
    assert await worker.run(concurrency=4, run_once=True, queues=[uid]) is True
    assert sorted(ran) == [0, 1, 2, 3, 4] and sorted(started) == sorted(ids)
    assert await worker.run_once(queues=[uid]) is False

    # run(): continuous (LISTEN wakes it) until SIGTERM
    late = await app.enqueue(work, n=5)

    async def terminate_when_done() -> None:
        await wait_until(lambda: _done(app, late))
        os.kill(os.getpid(), signal.SIGTERM)

    stopper = asyncio.create_task(terminate_when_done())
    assert await asyncio.wait_for(worker.run(queues=[uid]), 30) is True
    await stopper
    assert ran[-1] == 5 and late in started
    await app.close()


async def _done(app: Soniq, job_id: str) -> bool:
    job = await app.get_job(job_id)
    return job is not None and job["status"] == "done"
