"""The reference Soniq 0.1.0 (PyPI `soniq==0.1.0`) draining no-op async jobs; run in a venv of
its own by compare.py. Prints one JSON object: jobs/s of its run_once mode (sequential) and
of its continuous worker at the given concurrency."""

import asyncio
import json
import sys
import time

from soniq import Soniq

url, count, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
app = Soniq(database_url=url)


@app.job(name="bench.noop")
async def noop():
    pass


async def fill() -> None:
    await app._reset()  # the reference's own helper: empties its jobs and workers tables
    for start in range(0, count, 1000):
        await app.enqueue_many(noop, [{} for _ in range(min(1000, count - start))])


async def continuous() -> float:
    await fill()
    stop = asyncio.Event()

    async def watch() -> None:
        while (await app.get_queue_stats())["done"] < count:
            await asyncio.sleep(0.02)
        stop.set()

    started = time.perf_counter()
    watcher = asyncio.create_task(watch())
    await app.run_worker(concurrency=concurrency, shutdown_event=stop)
    await watcher
    return count / (time.perf_counter() - started)


async def run_once() -> float:
    await fill()
    started = time.perf_counter()
    await app.run_worker(run_once=True)
    elapsed = time.perf_counter() - started
    assert (await app.get_queue_stats())["done"] == count
    return count / elapsed


async def main() -> None:
    await app.setup()
    figures = {"run_once": await run_once(), f"continuous_c{concurrency}": await continuous()}
    await app.close()
    print(json.dumps(figures))


asyncio.run(main())
