"""Enqueue: the three target shapes, every per-call option, transactional enqueue on
asyncpg, psycopg and SQLAlchemy, and each misuse raising the documented error with nothing
written."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import psycopg
import pydantic
import pytest
from conftest import sqlalchemy_url
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from soniq import Soniq, SoniqError, TaskRef, task_ref
from soniq.errors import INVALID_OPTION, INVALID_TASK_NAME, TASK_ARGS_INVALID, UNKNOWN_TASK_NAME


def app_with_job(make_app, uid):
    app = make_app()

    @app.job(name=f"{uid}.send", queue=uid)
    async def send(to: str, subject: str = "hi") -> None: ...

    return app, send


async def test_three_shapes_and_the_options_each_call_may_set(make_app, uid) -> None:
    app, send = app_with_job(make_app, uid)
    by_function = await app.enqueue(send, to="a@b.c")
    by_name = await app.enqueue(f"{uid}.send", args={"to": "d@e.f"}, priority=7)
    ref = TaskRef(f"{uid}.send")
    by_ref = await app.enqueue(ref, args={"to": "g@h.i"}, retries=9, timeout=12.5)
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    scheduled = await app.enqueue(send, to="x", scheduled_at=later, queue=f"{uid}_other")
    jobs = {j: await app.get_job(j) for j in (by_function, by_name, by_ref, scheduled)}
    assert jobs[by_function]["args"] == {"to": "a@b.c"}
    assert jobs[by_function]["queue"] == uid and jobs[by_function]["priority"] == 100
    assert jobs[by_name]["priority"] == 7
    assert jobs[by_ref]["max_attempts"] == 10
    assert jobs[scheduled]["queue"] == f"{uid}_other"
    assert datetime.fromisoformat(jobs[scheduled]["scheduled_at"]) == later.replace(
        microsecond=later.microsecond
    )
    # seconds from now, and a timedelta
    soon = await app.schedule(send, 30, to="y")
    assert datetime.fromisoformat((await app.get_job(soon))["scheduled_at"]) > datetime.now(
        timezone.utc
    )


async def test_unique_and_dedup_key_return_the_queued_job(make_app, uid) -> None:
    app, send = app_with_job(make_app, uid)
    first = await app.enqueue(send, to="a", unique=True)
    assert await app.enqueue(send, to="a", unique=True) == first
    assert await app.enqueue(send, to="b", unique=True) != first
    keyed = await app.enqueue(send, to="c", dedup_key=f"{uid}-k")
    assert await app.enqueue(send, to="other", dedup_key=f"{uid}-k") == keyed
    assert (await app.queue_stats(uid))["queued"] == 3


async def test_enqueue_many_in_order_and_all_or_nothing(make_app, uid) -> None:
    app, send = app_with_job(make_app, uid)
    ids = await app.enqueue_many(send, [{"to": str(i)} for i in range(50)], priority=3)
    assert [(await app.get_job(i))["args"]["to"] for i in ids] == [str(i) for i in range(50)]
    assert await app.enqueue_many(send, []) == []
    with pytest.raises(SoniqError, match=r"args_list\[1\]: Invalid arguments") as e:
        await app.enqueue_many(send, [{"to": "ok"}, {"too": "bad"}])
    assert e.value.code == TASK_ARGS_INVALID
    with pytest.raises(TypeError, match=r"args_list\[1\] must be a dict, got int"):
        await app.enqueue_many(send, [{"to": "ok"}, 3])
    with pytest.raises(TypeError, match="must be a list, got tuple"):
        await app.enqueue_many(send, ({"to": "ok"},))
    assert (await app.queue_stats(uid))["total"] == 50


class Invoice(pydantic.BaseModel):
    order_id: int


async def test_misuse_raises_the_documented_error_and_writes_nothing(make_app, uid) -> None:
    app, send = app_with_job(make_app, uid)

    @app.job(name=f"{uid}.validated", queue=uid, validate=Invoice)
    async def validated(order_id: int) -> None: ...

    cases = [
        (lambda: app.enqueue(send, to=object()), SoniqError, "must be JSON-serializable"),
        (lambda: app.enqueue(send, to=float("nan")), SoniqError, "must be JSON-serializable"),
        (
            lambda: app.enqueue(send, to="a", nobody="x"),
            SoniqError,
            "unexpected keyword argument 'nobody'",
        ),
        (lambda: app.enqueue(send), SoniqError, "missing a required argument: 'to'"),
        (
            lambda: app.enqueue(f"{uid}.send", args=["a"]),
            TypeError,
            "args must be a dict, got list",
        ),
        (
            lambda: app.enqueue(send, args={"to": "a"}, subject="b"),
            TypeError,
            "cannot mix args=dict",
        ),
        (
            lambda: app.enqueue(f"{uid}.send", to="a"),
            TypeError,
            "takes the job's arguments as args=dict",
        ),
        (
            lambda: app.enqueue(TaskRef(f"{uid}.send"), to="a"),
            TypeError,
            "takes the job's arguments as args=dict",
        ),
        (
            lambda: app.enqueue(42),
            TypeError,
            "target must be a job function, a task name or a TaskRef; got int",
        ),
        (
            lambda: app.enqueue("Bad Name!", args={}, queue=uid),
            SoniqError,
            "does not match SONIQ_TASK_NAME_PATTERN",
        ),
        (
            lambda: app.enqueue(f"{uid}.unknown", args={}, queue=uid),
            SoniqError,
            "is not registered in this app",
        ),
        (
            lambda: app.enqueue(validated, order_id="seven"),
            SoniqError,
            "Invalid arguments for task",
        ),
        (
            lambda: app.enqueue(send, to="a", priority=0),
            SoniqError,
            "priority must be a whole number from 1 to 1000",
        ),
        (lambda: app.enqueue(send, to="a", retries=-1), SoniqError, "retries must be"),
        (lambda: app.enqueue(send, to="a", timeout=-5), SoniqError, "timeout must be"),
        (
            lambda: app.enqueue(send, to="a", dedup_key=""),
            SoniqError,
            "dedup_key must be a non-empty string",
        ),
        (
            lambda: app.enqueue(send, to="a", scheduled_at=datetime(2030, 1, 1)),
            ValueError,
            "must be timezone-aware",
        ),
        (lambda: app.enqueue(send, to="a", queue="no spaces allowed"), SoniqError, "queue"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            await call()
    codes = {}
    for call, code in [
        (lambda: app.enqueue("Bad Name!", args={}), INVALID_TASK_NAME),
        (lambda: app.enqueue(f"{uid}.unknown", args={}), UNKNOWN_TASK_NAME),
        (lambda: app.enqueue(send, to=object()), TASK_ARGS_INVALID),
        (lambda: app.enqueue(send, to="a", priority=5000), INVALID_OPTION),
    ]:
        with pytest.raises(SoniqError) as e:
            await call()
        codes[code] = e.value.code
    assert all(k == v for k, v in codes.items()), codes
    assert (await app.queue_stats(uid))["total"] == 0
    assert await app.list_jobs(queue="no_spaces_allowed") == []


async def test_validation_warn_and_none_let_unknown_names_through(make_app, uid, caplog) -> None:
    warn = make_app(enqueue_validation="warn")
    await warn.enqueue(f"{uid}.elsewhere", args={"a": 1}, queue=uid)
    await warn.enqueue(f"{uid}.elsewhere", args={"a": 2}, queue=uid)
    assert sum("is not registered in this app" in r.getMessage() for r in caplog.records) == 1
    none = make_app(enqueue_validation="none")
    await none.enqueue(f"{uid}.elsewhere", args={}, queue=uid)
    assert (await warn.queue_stats(uid))["queued"] == 3


async def test_task_ref_validates_with_its_model_and_routes_to_its_queue(make_app, uid) -> None:
    app = make_app()
    ref = task_ref(f"{uid}.billing.send_invoice", Invoice, default_queue=uid)
    job = await app.enqueue(ref, args={"order_id": 7})
    assert (await app.get_job(job))["queue"] == uid
    with pytest.raises(SoniqError, match="Invalid arguments"):
        await app.enqueue(ref, args={"order_id": "x"})
    with pytest.raises(SoniqError, match="does not match"):
        task_ref("Not A Name")


async def test_transactional_enqueue_on_asyncpg_commits_and_rolls_back_with_the_caller(
    make_app, uid, db
) -> None:
    app, send = app_with_job(make_app, uid)
    async with db.transaction():
        kept = await app.enqueue(send, connection=db, to="kept")
    with pytest.raises(RuntimeError):
        async with db.transaction():
            await app.enqueue(send, connection=db, to="gone")
            await app.enqueue_many(send, [{"to": "gone too"}], connection=db)
            raise RuntimeError("the business write failed")
    jobs = await app.list_jobs(queue=uid)
    assert [j["id"] for j in jobs] == [kept]


async def test_transactional_enqueue_on_psycopg_and_sqlalchemy(make_app, uid, database_url) -> None:
    app, send = app_with_job(make_app, uid)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await app.enqueue(send, connection=conn, to="psycopg rolled back")
        await conn.rollback()
        kept_psycopg = await app.enqueue(
            send, connection=conn, to="psycopg", priority=5, scheduled_at=1.0
        )
        await conn.commit()
    engine = create_async_engine(sqlalchemy_url(database_url))
    async with AsyncSession(engine) as session:
        async with session.begin():
            await session.execute(text("SELECT 1"))
            kept_session = await app.enqueue(send, connection=session, to="session")
        async with session.begin():
            await app.enqueue(send, connection=session, to="session rolled back")
            await session.rollback()
    await engine.dispose()
    jobs = {j["args"]["to"]: j for j in await app.list_jobs(queue=uid)}
    assert set(jobs) == {"psycopg", "session"}
    assert jobs["psycopg"]["id"] == kept_psycopg and jobs["psycopg"]["priority"] == 5
    assert jobs["session"]["id"] == kept_session
    with pytest.raises(SoniqError, match="connection= takes an asyncpg connection"):
        await app.enqueue(send, connection=object(), to="x")


async def test_an_in_memory_app_refuses_a_connection(db) -> None:
    app = Soniq.in_memory()

    @app.job(name="memory.only")
    async def only() -> None: ...

    with pytest.raises(SoniqError, match="this app is in memory"):
        await app.enqueue(only, connection=db)


async def test_args_travel_as_json_exactly(make_app, uid) -> None:
    app, send = app_with_job(make_app, uid)
    odd = {
        "to": 'é\u2028 "quoted" \\ back',
        "subject": json.dumps({"nested": [1, 2.5, None, True]}),
    }
    job = await app.enqueue(send, **odd)
    assert (await app.get_job(job))["args"] == odd
