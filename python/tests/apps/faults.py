"""The jobs the fault tests' worker processes run."""

from __future__ import annotations

import asyncio

from soniq import Soniq

app = Soniq()


@app.job(name="faults.work")
async def work(path: str, token: str, seconds: float = 0.0) -> None:
    """Sleeps, then appends its token: the log counts the runs that finished."""
    await asyncio.sleep(seconds)
    with open(path, "a") as f:
        f.write(token + "\n")
