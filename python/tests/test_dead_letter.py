"""The dead letter: list with filters, get, replay, tag, delete, purge, stats, export."""

from __future__ import annotations

import csv
import json

import pytest

from soniq import SoniqError


async def dead_jobs(make_app, uid, n: int):
    app = make_app()

    @app.job(name=f"{uid}.doomed", queue=uid, retries=0)
    async def doomed(n: int) -> None:
        raise RuntimeError(f"no {n}")

    ids = await app.enqueue_many(doomed, [{"n": i} for i in range(n)])
    await app.run_worker(run_once=True, queues=[uid])
    return app, doomed, ids


async def test_list_get_replay_tag_delete(make_app, uid) -> None:
    app, doomed, ids = await dead_jobs(make_app, uid, 3)
    listed = await app.dead_letter.list(queue=uid)
    assert sorted(d["id"] for d in listed) == sorted(ids)
    assert all(d["dead_letter_reason"] == "max_retries_exceeded" for d in listed)
    assert await app.dead_letter.list(queue=uid, reason="timeout") == []
    assert len(await app.dead_letter.list(task_name=f"{uid}.doomed", limit=2)) == 2
    got = await app.dead_letter.get(ids[0])  # soniq.dead_letter_get: the keys list gives
    assert got == next(d for d in listed if d["id"] == ids[0])
    assert got["last_error"].startswith("RuntimeError: no 0") and got["resurrection_count"] == 0
    assert await app.dead_letter.get(await app.enqueue(doomed, n=9)) is None, "a live job"

    new_id = await app.dead_letter.replay(ids[0], new_queue=f"{uid}_replay", new_max_attempts=3)
    job = await app.get_job(new_id)
    assert (job["status"], job["queue"], job["max_attempts"], job["args"]) == (
        "queued",
        f"{uid}_replay",
        3,
        {"n": 0},
    )
    assert [d["id"] for d in await app.dead_letter.list(queue=uid, replayed=True)] == [ids[0]]
    assert await app.dead_letter.tag(ids[1], ["billing", "vip"]) == ["billing", "vip"]
    assert [d["id"] for d in await app.dead_letter.list(queue=uid, tags=["vip"])] == [ids[1]]
    assert (
        await app.dead_letter.delete(ids[2]) is True
        and await app.dead_letter.delete(ids[2]) is False
    )
    with pytest.raises(SoniqError, match="does not exist"):
        await app.dead_letter.replay("00000000-0000-0000-0000-000000000000")
    with pytest.raises(ValueError, match="reason must be one of"):
        await app.dead_letter.list(reason="bored")


async def test_stats_export_and_purge(make_app, uid, tmp_path) -> None:
    app, doomed, ids = await dead_jobs(make_app, uid, 4)
    stats = await app.dead_letter.stats()
    assert stats["by_task"][f"{uid}.doomed"] == 4 and stats["by_queue"][uid] == 4
    assert stats["total"] >= 4 and "by_reason" in stats and "by_day" in stats
    as_json = tmp_path / "dead.json"
    assert await app.dead_letter.export(as_json, queue=uid) == 4
    records = json.loads(as_json.read_text())
    assert (
        sorted(r["id"] for r in records) == sorted(ids)
        and records[0]["task_name"] == f"{uid}.doomed"
    )
    as_csv = tmp_path / "dead.csv"
    assert await app.dead_letter.export(as_csv, format="csv", queue=uid) == 4
    rows = list(csv.DictReader(as_csv.open()))
    assert len(rows) == 4 and json.loads(rows[0]["args"])["n"] in range(4)
    empty = tmp_path / "none.csv"
    assert await app.dead_letter.export(empty, format="csv", queue=f"{uid}_empty") == 0
    assert empty.read_text().startswith("id,task_name"), "a header even with no rows"
    await app.dead_letter.purge(3600)  # dead jobs of earlier runs may go; these are new
    assert len(await app.dead_letter.list(queue=uid)) == 4, "none of them is an hour old"
    assert await app.dead_letter.purge(0) >= 4
    assert await app.dead_letter.list(queue=uid) == []
