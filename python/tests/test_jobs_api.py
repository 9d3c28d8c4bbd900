"""Reading and managing jobs: get_job, get_result, list_jobs, cancel_job, delete_job,
queue_stats; and registration: options published with soniq.register_task, so a job
enqueued from SQL gets the same defaults."""

from __future__ import annotations

import dataclasses

import pydantic
import pytest

from soniq import Soniq, SoniqError
from soniq.registry import derive_task_name


async def test_get_list_cancel_delete_and_stats(make_app, uid) -> None:
    app = make_app()

    @app.job(name=f"{uid}.job", queue=uid)
    async def job(n: int) -> dict:
        return {"n": n, "name": "x"}

    ids = [await app.enqueue(job, n=i) for i in range(4)]
    assert await app.cancel_job(ids[0]) is True
    assert await app.cancel_job(ids[0]) is False, "already cancelled"
    assert await app.delete_job(ids[1]) is True
    assert await app.delete_job(ids[1]) is False
    assert await app.get_job(ids[1]) is None
    await app.run_worker(run_once=True, queues=[uid])
    assert await app.cancel_job(ids[2]) is False, "done"
    assert [j["id"] for j in await app.list_jobs(queue=uid)] == [ids[3], ids[2], ids[0]]
    assert [j["id"] for j in await app.list_jobs(queue=uid, status="cancelled")] == [ids[0]]
    assert len(await app.list_jobs(queue=uid, limit=1, offset=1)) == 1
    assert await app.queue_stats(uid) == {
        "total": 3,
        "queued": 0,
        "processing": 0,
        "done": 2,
        "cancelled": 1,
        "dead_letter": 0,
    }
    assert await app.get_result(ids[0]) is None, "not done"

    class Out(pydantic.BaseModel):
        n: int

    @dataclasses.dataclass
    class Plain:
        n: int
        name: str

    assert await app.get_result(ids[2], result_model=Out) == Out(n=2)
    assert await app.get_result(ids[2], result_model=Plain) == Plain(2, "x")
    unknown = "00000000-0000-0000-0000-000000000000"
    assert await app.get_job(unknown) is None and await app.cancel_job(unknown) is False
    with pytest.raises(ValueError, match="job id must be a UUID, got 'nope'"):
        await app.get_job("nope")
    with pytest.raises(ValueError, match="status must be one of"):
        await app.list_jobs(status="dead")


async def test_options_are_published_for_every_producer(make_app, uid, db) -> None:
    app = make_app()

    @app.job(
        name=f"{uid}.invoice", queue=uid, retries=7, priority=20, timeout=45, retry_delay=[1, 5]
    )
    async def invoice(order_id: int) -> None: ...

    await app.ensure_initialized()
    from_sql = await db.fetchval(
        "SELECT soniq.enqueue($1, '{\"order_id\": 1}')::text", f"{uid}.invoice"
    )
    from_python = await app.enqueue(invoice, order_id=2)
    for job_id in (from_sql, from_python):
        job = await app.get_job(job_id)
        assert (job["queue"], job["priority"], job["max_attempts"]) == (uid, 20, 8)
    timeout = await db.fetchval(
        "SELECT extract(epoch FROM timeout) FROM soniq.get_job($1::uuid)", from_sql
    )
    assert float(timeout) == 45


def test_job_options_are_checked_at_decoration() -> None:
    app = Soniq.in_memory()
    with pytest.raises(TypeError, match="unknown option.*retry\\b"):
        app.job(retry=5)
    with pytest.raises(TypeError, match="write @app.job\\(\\) with parentheses"):

        @app.job  # type: ignore[arg-type]
        async def bare() -> None: ...

    for options, message in [
        ({"priority": 0}, "priority must be a whole number from 1 to 1000"),
        ({"retries": 1001}, "retries must be"),
        ({"max_retries": -1}, "retries must be"),
        ({"timeout": -1}, "timeout must be"),
        ({"retry_delay": [1, "x"]}, "each retry_delay"),
        ({"retry_delay": [1, 2], "retry_backoff": True}, "cannot be combined"),
        ({"unique": "yes"}, "unique must be True or False"),
        ({"name": "Bad Name"}, "does not match SONIQ_TASK_NAME_PATTERN"),
        ({"validate": dict}, "validate= must be a pydantic model"),
    ]:
        with pytest.raises(SoniqError, match=message):
            app.job(**options)(handler)
    app.job(name="dup.name")(handler)
    with pytest.raises(SoniqError, match="registered twice"):
        app.job(name="dup.name")(handler)


def handler() -> None: ...


def test_derived_names_are_module_and_qualname() -> None:
    def inner() -> None: ...

    assert derive_task_name(inner) == f"{__name__}.test_derived_names_are_module_and_qualname.inner"
    app = Soniq.in_memory()
    app.job(max_retries=5, retries=1)(inner)
    task = app.registry.of_function(inner)
    assert task is not None and task.options.retries == 5, "max_retries wins, as in the reference"
