"""The in-memory app: handlers unit-tested without PostgreSQL, through the same enqueue
checks and the same execution as the worker; and the pytest plugin's fixture."""

from __future__ import annotations

import json

import pytest

from soniq import JobContext, Snooze, Soniq, SoniqError
from soniq.errors import NOT_SUPPORTED
from soniq.testing import assert_enqueued, assert_not_enqueued, drain, enqueued


async def test_drain_runs_what_was_enqueued_with_the_same_rules() -> None:
    app = Soniq.in_memory()
    calls: list[tuple[int, int]] = []

    @app.job(name="mem.flaky", retries=2, priority=50)
    async def flaky(n: int, ctx: JobContext) -> int:
        calls.append((n, ctx.attempt))
        if n == 0 and ctx.attempt < 3:
            raise RuntimeError("flaky")
        return n

    @app.job(name="mem.sync")
    def sync(n: int) -> int:
        return n * 10

    await app.enqueue(flaky, n=0)
    await app.enqueue(flaky, n=1, priority=10)
    await app.enqueue(sync, n=2)
    assert_enqueued(app, flaky, count=2)
    assert_enqueued(app, flaky, args={"n": 1}, priority=10, queue="default", status="queued")
    assert_not_enqueued(app, flaky, args={"n": 9})
    with pytest.raises(
        AssertionError, match="expected a job of mem.flaky with args {'n': 9}; found 0"
    ):
        assert_enqueued(app, flaky, args={"n": 9})
    results = await drain(app)
    assert results == [1, 0, 20], "priority order; the immediate retries ran within the drain"
    assert calls == [(1, 1), (0, 1), (0, 2), (0, 3)]
    assert await app.queue_stats() == {
        "total": 3,
        "queued": 0,
        "processing": 0,
        "done": 3,
        "cancelled": 0,
        "dead_letter": 0,
    }


async def test_dead_letter_delays_snoozes_and_unique_in_memory() -> None:
    app = Soniq.in_memory()

    @app.job(name="mem.doomed", retries=1)
    async def doomed() -> None:
        raise ValueError("never")

    @app.job(name="mem.later", retries=3, retry_delay=60)
    async def later() -> None:
        raise ValueError("later")

    @app.job(name="mem.snooze")
    async def snooze() -> Snooze:
        return Snooze(30, "busy")

    dead = await app.enqueue(doomed)
    delayed = await app.enqueue(later)
    snoozed = await app.enqueue(snooze)
    assert await app.enqueue(doomed, unique=True) != dead
    assert await app.enqueue(later, dedup_key="k") == await app.enqueue(later, dedup_key="k")
    await drain(app, max_jobs=4)
    job = await app.get_job(dead)
    assert (
        job["status"] == "dead_letter"
        and job["attempts"] == 2
        and job["last_error"].startswith("ValueError: never")
    )
    assert [d["id"] for d in await app.dead_letter.list()][-1] == dead
    assert (await app.get_job(delayed))["status"] == "queued" and (await app.get_job(delayed))[
        "scheduled_at"
    ]
    assert (await app.get_job(snoozed))["last_error"] == "snoozed: busy"
    replayed = await app.dead_letter.replay(dead)
    with pytest.raises(SoniqError, match="does not exist"):
        await app.dead_letter.replay("00000000-0000-0000-0000-000000000000")
    assert enqueued(app, doomed, status="queued")[-1]["id"] == replayed


async def test_the_dead_letter_in_memory(tmp_path) -> None:
    """list/get/replay/export/purge on the memory queue, as on PostgreSQL; stats and tags,
    which the extension computes, refused by name (never an attempt to reach PostgreSQL)."""
    app = Soniq.in_memory()

    @app.job(name="mem.dead", retries=0)
    async def dead(n: int) -> None:
        raise ValueError(f"no {n}")

    ids = [await app.enqueue(dead, n=n) for n in range(3)]
    await drain(app)
    got = await app.dead_letter.get(ids[0])
    assert got is not None and got["dead_letter_reason"] == "max_retries_exceeded"
    assert got["last_error"].startswith("ValueError: no 0") and got["moved_to_dead_letter_at"]
    assert got == next(d for d in await app.dead_letter.list() if d["id"] == ids[0])
    await app.dead_letter.replay(ids[0])
    assert (await app.dead_letter.get(ids[0]))["resurrection_count"] == 1
    assert [d["id"] for d in await app.dead_letter.list(replayed=True)] == [ids[0]]
    assert await app.dead_letter.list(tags=["vip"]) == []
    out = tmp_path / "dead.json"
    assert await app.dead_letter.export(out) == 3
    assert sorted(r["id"] for r in json.loads(out.read_text())) == sorted(ids)
    for refused in (app.dead_letter.stats(), app.dead_letter.tag(ids[1], ["vip"])):
        with pytest.raises(SoniqError, match="in-memory app") as e:
            await refused
        assert e.value.code == NOT_SUPPORTED
    assert await app.dead_letter.purge(3600) == 0, "none an hour old"
    assert await app.dead_letter.purge() == 3 and await app.dead_letter.list() == []
    assert await app.dead_letter.get(ids[1]) is None


async def test_misuse_in_memory_is_refused_as_on_postgres() -> None:
    app = Soniq.in_memory()

    @app.job(name="mem.strict")
    async def strict(to: str) -> None: ...

    with pytest.raises(SoniqError, match="missing a required argument: 'to'"):
        await app.enqueue(strict)
    with pytest.raises(SoniqError, match="not registered in this app"):
        await app.enqueue("mem.other", args={})
    with pytest.raises(SoniqError, match="in-memory app runs its jobs with soniq.testing.drain"):
        await app.run_worker(run_once=True)
    assert enqueued(app) == []


@pytest.mark.soniq(app="apps.shop:app")
async def test_the_plugin_twins_a_real_app_in_memory(soniq_memory: Soniq) -> None:
    from apps import shop

    assert soniq_memory.is_memory and soniq_memory is not shop.app
    await soniq_memory.enqueue(shop.send_receipt, order_id=5)
    await soniq_memory.enqueue(shop.send_receipt, order_id=-1)
    assert await drain(soniq_memory) == ["receipt 5"]
    assert shop.sent[-3:] == ["5@1", "-1@1", "-1@2"]
    assert_enqueued(
        soniq_memory, "shop.send_receipt", args={"order_id": -1}, status="dead_letter", queue="shop"
    )


def test_the_plugin_gives_a_fresh_memory_app(soniq_memory: Soniq) -> None:
    assert soniq_memory.is_memory and not soniq_memory.registry.tasks
