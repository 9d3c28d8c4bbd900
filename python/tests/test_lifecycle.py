"""The app's lifecycle and the CLI's refusals: a pool per event loop, a closed app, a server
that cannot be reached (its password masked), bad worker arguments."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from soniq import Soniq, SoniqError
from soniq.errors import APP_CLOSED, INIT_ERROR, INVALID_OPTION


def test_each_asyncio_run_gets_a_pool_of_its_own(database_url, uid) -> None:
    app = Soniq(database_url)

    @app.job(name=f"{uid}.twice", queue=uid)
    async def twice(n: int) -> None: ...

    first = asyncio.run(app.enqueue(twice, n=1))
    second = asyncio.run(app.enqueue(twice, n=2))
    stats = asyncio.run(app.queue_stats(uid))
    asyncio.run(app.close())
    assert first != second and stats["queued"] == 2


async def test_a_closed_app_and_an_unreachable_server_are_clear_errors(make_app) -> None:
    app = make_app()
    await app.close()
    with pytest.raises(SoniqError, match="closed Soniq instance") as e:
        await app.queue_stats()
    assert e.value.code == APP_CLOSED
    unreachable = Soniq("postgresql://someone:secret@127.0.0.1:1/nowhere")
    with pytest.raises(
        SoniqError, match=r"could not connect to postgresql://someone:\*\*\*@127.0.0.1:1/nowhere"
    ) as e:
        await unreachable.queue_stats()
    assert e.value.code == INIT_ERROR and "secret" not in str(e.value)


async def test_worker_arguments_are_checked(make_app) -> None:
    app = make_app()

    @app.job(name="lifecycle.any")
    async def anything() -> None: ...

    for kwargs, message in [
        ({"concurrency": 0}, "concurrency must be a whole number from 1 to 1000"),
        ({"queues": []}, "queues must name at least one queue"),
        ({"queues": " , "}, "queues must name at least one queue"),
    ]:
        with pytest.raises(SoniqError, match=message) as e:
            await app.run_worker(run_once=True, **kwargs)
        assert e.value.code == INVALID_OPTION
    empty = make_app()
    with pytest.raises(SoniqError, match="needs at least one registered job"):
        await empty.run_worker(run_once=True)


def test_the_cli_refuses_bad_input_by_name(env_for_subprocess, tmp_path) -> None:
    def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "soniq", *args], env={**env_for_subprocess, **env},
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip

    bad = cli("worker", "--jobs-modules", "apps.shop", "--concurrency", "0", "--run-once")
    assert bad.returncode == 1 and "concurrency must be a whole number from 1 to 1000" in bad.stderr
    missing = cli("worker", "--jobs-modules", "no_such_module_here", "--run-once")
    assert missing.returncode != 0 and "no_such_module_here" in missing.stderr
    setting = cli("worker", "--jobs-modules", "apps.shop", "--run-once", SONIQ_POLL_INTERVAL="fast")
    assert (
        setting.returncode == 1
        and "SONIQ_POLL_INTERVAL must be a number of seconds" in setting.stderr
    )
    usage = cli()
    assert usage.returncode == 2 and "worker" in usage.stderr
