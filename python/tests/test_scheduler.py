"""Schedules: app.scheduler and @app.periodic, fired by the extension's control plane
(no scheduler process), and the cron DSL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import running_worker

from soniq import Soniq, SoniqError, cron, daily, every, monthly, weekly
from soniq.testing import wait_until


def test_the_dsl_builds_cron_strings() -> None:
    assert every(5).minutes() == "*/5 * * * *"
    assert every(2).hours() == "0 */2 * * *"
    assert every(3).days() == "0 0 */3 * *"
    assert every(30).seconds() == timedelta(seconds=30)
    assert daily().at("09:00") == "0 9 * * *" and str(daily()) == "0 0 * * *"
    assert weekly().on("monday").at("09:30") == "30 9 * * 1"
    assert weekly().on("sun").at("00:00") == "0 0 * * 0"
    assert monthly().on_day(15).at("12:00") == "0 12 15 * *"
    assert cron("*/15 * * * *") == "*/15 * * * *"
    for bad, message in [
        (lambda: every(0), "every\\(n\\) requires a positive integer; got 0"),
        (lambda: daily().at("9am"), "HH:MM format"),
        (lambda: daily().at("24:00"), "out of range"),
        (lambda: weekly().on("someday"), "weekday name"),
        (lambda: monthly().on_day(32), "1..31"),
    ]:
        with pytest.raises(ValueError, match=message):
            bad()
    with pytest.raises(TypeError):
        cron(5)  # type: ignore[arg-type]


async def test_add_pause_resume_list_get_remove(make_app, uid) -> None:
    app = make_app()

    @app.job(name=f"{uid}.report", queue=uid)
    async def report(region: str) -> None: ...

    name = await app.scheduler.add(
        report, cron=daily().at("09:00"), args={"region": "US"}, priority=10
    )
    assert name == f"{uid}.report"
    got = await app.scheduler.get(name)
    assert got["cron"] == "0 9 * * *" and got["args"] == {"region": "US"} and got["queue"] == uid
    assert got["status"] == "active" and got["priority"] == 10 and got["next_run"] is not None
    # Re-adding the same name updates it in place.
    await app.scheduler.add(report, cron=daily().at("09:00"), args={"region": "EU"}, priority=10)
    assert (await app.scheduler.get(name))["args"] == {"region": "EU"}
    assert await app.scheduler.pause(name) is True and await app.scheduler.pause(name) is False
    assert name in [s["name"] for s in await app.scheduler.list(status="paused")]
    assert name not in [s["name"] for s in await app.scheduler.list(status="active")]
    assert await app.scheduler.resume(name) is True
    assert await app.scheduler.remove(name) is True and await app.scheduler.remove(name) is False
    assert await app.scheduler.get(name) is None
    with pytest.raises(SoniqError, match="Invalid arguments"):
        await app.scheduler.add(report, every=60, args={"nope": 1})
    with pytest.raises(ValueError, match="exactly one of cron= and every="):
        await app.scheduler.add(report)
    with pytest.raises(SoniqError):
        await app.scheduler.add(report, cron="not a cron")
    with pytest.raises(SoniqError, match="schedule .* does not exist"):
        await app.scheduler.pause(f"{uid}.none")


async def test_a_periodic_job_is_fired_by_the_control_plane(make_app, uid) -> None:
    app = make_app()
    runs: list[str] = []

    @app.periodic(every=timedelta(seconds=1), name=f"{uid}.tick", queue=uid, args={"who": "cp"})
    async def tick(who: str) -> None:
        runs.append(who)

    async with running_worker(app, queues=[uid]):
        await wait_until(
            lambda: len(runs) >= 2,
            timeout=30,
            message="the control plane did not fire the schedule",
        )
    assert set(runs) == {"cp"}
    await app.scheduler.remove(f"{uid}.tick")


def test_periodic_needs_exactly_one_timing() -> None:
    app = Soniq.in_memory()
    with pytest.raises(ValueError, match="exactly one"):
        app.periodic(name="a.b")
    with pytest.raises(TypeError, match="every= must be a timedelta"):
        app.periodic(every="5m", name="a.b")  # type: ignore[arg-type]
