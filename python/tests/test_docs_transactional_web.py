"""The transactional-enqueue page's web variants: the FastAPI route on Soniq's pool
(pattern 1), on the app's own asyncpg pool (pattern 2) and through Tortoise ORM (pattern 4),
each a module of tests/docs/ as the page writes it, driven in process (httpx's ASGI
transport: no network) against the real extension."""

from __future__ import annotations

import importlib
import re
import sys
from types import ModuleType
from typing import Any

import httpx
import pytest
from conftest import statuses

from soniq import SoniqError

ORDERS = [(7, 2), (8, 1)]


def load(name: str, database_url: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A fresh import of tests/docs/<name>.py, its DATABASE_URL the test database."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    sys.modules.pop(f"docs.{name}", None)
    return importlib.import_module(f"docs.{name}")


async def place_orders(page: ModuleType) -> list[int]:
    """POST /orders for each of ORDERS, with the app's lifespan (startup, then shutdown)."""
    async with page.app.router.lifespan_context(page.app):
        transport = httpx.ASGITransport(app=page.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orders.test") as client:
            ids = []
            for product_id, quantity in ORDERS:
                response = await client.post(
                    "/orders", params={"product_id": product_id, "quantity": quantity}
                )
                assert response.status_code == 200, response.text
                ids.append(response.json()["order_id"])
    return ids


async def assert_invoiced(page: ModuleType, ids: list[int], db) -> list[Any]:
    """Each order row committed with its send_invoice job; the worker runs them. Returns
    what the page's send_invoice recorded for these orders (in order)."""
    rows = await db.fetch(
        "SELECT product_id, quantity FROM orders WHERE id = any($1) ORDER BY id", ids
    )
    assert [tuple(r) for r in rows] == ORDERS
    task = f"{page.__name__}.send_invoice"
    jobs = [
        j for j in await page.eq.list_jobs(queue="invoices", status="queued")
        if j["task_name"] == task and j["args"]["order_id"] in ids
    ]  # fmt: skip
    assert sorted(j["args"]["order_id"] for j in jobs) == sorted(ids), "one job per order"
    await page.eq.run_worker(run_once=True, queues=["invoices"])
    assert await statuses(page.eq, [j["id"] for j in jobs]) == {"done": len(ids)}
    mine = [r for r in page.invoiced if (r["id"] if isinstance(r, dict) else r) in ids]
    return sorted(mine, key=lambda r: r["id"] if isinstance(r, dict) else r)


async def test_fastapi_route_on_soniqs_pool(database_url, orders_table, db, monkeypatch) -> None:
    page = load("orders_fastapi", database_url, monkeypatch)
    ids = await place_orders(page)
    with pytest.raises(SoniqError, match="closed"):
        await page.eq.ensure_initialized()  # the lifespan closed it
    page.eq = page.eq.copy()  # a worker of the same jobs
    invoiced = await assert_invoiced(page, ids, db)
    assert [(o["id"], o["product_id"], o["quantity"]) for o in invoiced] == [
        (i, p, q) for i, (p, q) in zip(ids, ORDERS, strict=True)
    ], "send_invoice read each committed order"
    await page.eq.close()


# The page's pattern 2 uses FastAPI's deprecated @app.on_event("startup").
@pytest.mark.filterwarnings("ignore:\\s*on_event is deprecated:DeprecationWarning")
async def test_fastapi_route_on_your_own_pool(database_url, orders_table, db, monkeypatch) -> None:
    page = load("orders_own_pool", database_url, monkeypatch)
    ids = await place_orders(page)
    assert page.db_pool.get_size() >= 1, "the startup handler made the app's pool"
    assert await assert_invoiced(page, ids, db) == sorted(ids)
    await page.db_pool.close()
    await page.eq.close()


async def test_tortoise_orm(database_url, orders_table, db, monkeypatch) -> None:
    from tortoise import Tortoise

    page = load("orders_tortoise", database_url, monkeypatch)
    await Tortoise.init(
        db_url=re.sub(r"^postgres(ql)?://", "asyncpg://", database_url),
        modules={"models": ["docs.orders_tortoise"]},
    )
    try:
        ids = await place_orders(page)
    finally:
        await Tortoise.close_connections()
    assert await assert_invoiced(page, ids, db) == sorted(ids)
    await page.eq.close()
