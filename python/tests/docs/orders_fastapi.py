"""The transactional-enqueue page's FastAPI route example (pattern 1: Soniq's pool), as
the page writes it but for the database URL (DATABASE_URL) and the two helpers it leaves
undefined (get_order, generate_and_send_invoice), which record what they were given."""

import os
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from soniq import Soniq

eq = Soniq(database_url=os.environ["DATABASE_URL"])
invoiced: list[dict[str, Any]] = []


async def get_order(order_id: int) -> dict[str, Any]:
    async with eq.backend.acquire() as conn:
        return dict(await conn.fetchrow("SELECT * FROM orders WHERE id = $1", order_id))


async def generate_and_send_invoice(order: dict[str, Any]) -> None:
    invoiced.append(order)


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield
    await eq.close()


app = FastAPI(lifespan=lifespan)


@eq.job(queue="invoices", max_retries=5)
async def send_invoice(order_id: int):
    order = await get_order(order_id)
    await generate_and_send_invoice(order)


@app.post("/orders")
async def create_order(product_id: int, quantity: int):
    await eq.ensure_initialized()
    async with eq.backend.acquire() as conn:
        async with conn.transaction():
            order_id = await conn.fetchval(
                "INSERT INTO orders (product_id, quantity) VALUES ($1, $2) RETURNING id",
                product_id,
                quantity,
            )
            await eq.enqueue(send_invoice, connection=conn, order_id=order_id)
    return {"order_id": order_id}
