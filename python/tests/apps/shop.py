"""A small application module the tests import: the plugin's marker twins it in memory,
and the CLI worker runs it."""

from __future__ import annotations

import os

from soniq import JobContext, Soniq

app = Soniq(os.environ.get("SONIQ_DATABASE_URL", "postgresql://postgres@localhost/unused"))
sent: list[str] = []


@app.job(name="shop.send_receipt", queue=os.environ.get("SHOP_QUEUE", "shop"), retries=1)
async def send_receipt(order_id: int, ctx: JobContext) -> str:
    sent.append(f"{order_id}@{ctx.attempt}")
    if order_id < 0:
        raise ValueError("no such order")
    return f"receipt {order_id}"


@app.job(name="shop.record")
async def record(path: str, token: str) -> None:
    """Appends one line per run: tests count how often each job ran."""
    with open(path, "a") as f:
        f.write(token + "\n")
