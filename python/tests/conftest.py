"""Shared fixtures. The database tests run against the real extension: SONIQ_TEST_DATABASE_URL
(scripts/lib/python-check.sh sets it to the test cluster's soniq_e2e, served by the control
plane). Each test uses task names and queues of its own, so tests never see each other's jobs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import pytest

from soniq import Soniq, WorkerReport

pytest_plugins = ["soniq.testing.pytest_plugin"]

# Fast enough for the test cluster's control plane (heartbeat timeout 2 s, lease grace 1 s).
FAST = {
    "heartbeat_interval": 0.3,
    "heartbeat_timeout": 2.0,
    "poll_interval": 0.5,
    "error_retry_delay": 0.2,
    "shutdown_timeout": 5.0,
}


@pytest.fixture(scope="session")
def database_url() -> str:
    url = os.environ.get("SONIQ_TEST_DATABASE_URL")
    if not url:
        pytest.fail(
            "SONIQ_TEST_DATABASE_URL is not set: run scripts/lib/python-check.sh (or set it to a database with the soniq extension)"
        )
    return url


def sqlalchemy_url(url: str) -> str:
    """The URL with SQLAlchemy's asyncpg driver named (postgres:// or postgresql://)."""
    return re.sub(r"^postgres(ql)?://", "postgresql+asyncpg://", url)


@pytest.fixture
def uid() -> str:
    """A token unique to this test, for its task names and queues."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
async def make_app(database_url: str) -> AsyncIterator[Callable[..., Soniq]]:
    apps: list[Soniq] = []

    def make(**settings: Any) -> Soniq:
        app = Soniq(database_url, **{**FAST, **settings})
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, to read through soniq functions and write its own tables."""
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def orders_table(db: asyncpg.Connection) -> None:
    """The transactional-enqueue page's `orders`, with the columns of all its patterns."""
    await db.execute(
        "CREATE TABLE IF NOT EXISTS orders "
        "(id serial PRIMARY KEY, total numeric, product_id int, quantity int)"
    )


@contextlib.asynccontextmanager
async def running_worker(app: Soniq, **options: Any) -> AsyncIterator[asyncio.Task[WorkerReport]]:
    """A continuous worker in the background, shut down gracefully on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(app.run_worker(shutdown_event=stop, **options))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def statuses(app: Soniq, ids: list[str]) -> dict[str, int]:
    """How many of the jobs are in each state."""
    counts: dict[str, int] = {}
    for job_id in ids:
        job = await app.get_job(job_id)
        status = "missing" if job is None else job["status"]
        counts[status] = counts.get(status, 0) + 1
    return counts


@pytest.fixture
def env_for_subprocess(database_url: str) -> Iterator[dict[str, str]]:
    src = os.path.join(os.path.dirname(__file__), "..", "src")
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(
            [os.path.abspath(src), os.path.dirname(__file__), env.get("PYTHONPATH", "")]
        ),
        SONIQ_DATABASE_URL=database_url,
        SONIQ_HEARTBEAT_INTERVAL="0.3",
        SONIQ_HEARTBEAT_TIMEOUT="2",
        SONIQ_POLL_INTERVAL="0.5",
        SONIQ_ERROR_RETRY_DELAY="0.2",
    )
    yield env
