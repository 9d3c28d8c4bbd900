"""The drain benchmark: no-op async jobs drained by a Python worker (this package), by the
reference Soniq 0.1.0 (in a venv of its own) and by the Rust runner (`soniq bench --scenario
drain`), in one run on one cluster. Prints the figures and the ratios.

    python python/bench/compare.py --url postgres://postgres@localhost:5477 \\
        --reference-python /opt/soniq/refvenv/bin/python --rust-bin target/release/soniq

Each side gets a database of its own on the cluster (created afresh): soniq_bench_py (with
the extension; the Rust runner drains there too) and soniq_bench_ref (the reference's tables).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

import asyncpg

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
from soniq import Soniq  # noqa: E402

CONCURRENCIES = (1, 16, 64)


async def fresh_database(server: str, name: str, extension: bool) -> str:
    admin = await asyncpg.connect(f"{server}/postgres")
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = f"{server}/{name}"
    if extension:
        db = await asyncpg.connect(url)
        await db.execute("CREATE EXTENSION soniq")
        await db.close()
    return url


async def python_drain(url: str, count: int, concurrency: int) -> float:
    """jobs/s of run_worker(run_once=True), timed from its start to its return."""
    queue = f"bench_c{concurrency}"
    app = Soniq(
        url, pool_max_size=max(20, concurrency + 4), heartbeat_interval=1, heartbeat_timeout=10
    )

    @app.job(name=f"bench.noop_c{concurrency}", queue=queue)
    async def noop() -> None:
        pass

    for start in range(0, count, 5000):
        await app.enqueue_many(noop, [{} for _ in range(min(5000, count - start))])
    db = await asyncpg.connect(url)
    await db.execute("VACUUM ANALYZE soniq.jobs")
    await db.close()
    started = time.perf_counter()
    report = await app.run_worker(concurrency=concurrency, run_once=True, queues=[queue])
    elapsed = time.perf_counter() - started
    assert report.jobs_run == count and (await app.queue_stats(queue))["done"] == count
    await app.close()
    return count / elapsed


def reference_drain(python: str, url: str, count: int, concurrency: int) -> dict[str, float]:
    script = os.path.join(os.path.dirname(__file__), "reference_drain.py")
    out = subprocess.run(
        [python, script, url, str(count), str(concurrency)],
        capture_output=True,
        text=True,
        check=True,
        cwd="/tmp",
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def rust_drain(binary: str, url: str, count: int) -> dict[str, float]:
    out = subprocess.run([binary, "--json", "bench", "--scenario", "drain", "--jobs", str(count), "--database-url", url],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return rust_figures(json.loads(out.stdout))


def rust_figures(report: dict[str, object]) -> dict[str, float]:
    """The drain rates of `soniq bench --json`: {"c=16": jobs/s, ...}."""
    figures = report.get("figures", [])
    assert isinstance(figures, list)
    return {
        f["key"].replace("concurrency_", "c="): float(f["value"])
        for f in figures
        if f.get("scenario") == "drain"
        and f.get("unit") == "jobs/s"
        and str(f.get("key")).startswith("concurrency_")
    }


async def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--url", required=True, help="the server, without a database: postgres://user@host:port"
    )
    p.add_argument("--jobs", type=int, default=20000)
    p.add_argument("--reference-python", default="/opt/soniq/refvenv/bin/python")
    p.add_argument("--reference-concurrency", type=int, default=16)
    p.add_argument("--rust-bin", default="target/release/soniq")
    args = p.parse_args()

    url = await fresh_database(args.url, "soniq_bench_py", extension=True)
    ours = {f"python c={c}": await python_drain(url, args.jobs, c) for c in CONCURRENCIES}
    ref_url = f"{args.url}/soniq_bench_ref"
    reference = {
        f"reference 0.1.0 {k}": v
        for k, v in reference_drain(
            args.reference_python, ref_url, args.jobs, args.reference_concurrency
        ).items()
    }
    rust = {f"rust {k}": v for k, v in rust_drain(args.rust_bin, url, args.jobs).items()}
    width = max(map(len, [*ours, *reference, *rust]))
    print(f"drain of {args.jobs} pre-enqueued no-op async jobs (jobs/s)")
    for label, rate in {**ours, **reference, **rust}.items():
        print(f"  {label:<{width}}  {rate:>10,.0f}")
    best_python, best_reference = max(ours.values()), max(reference.values())
    print(f"python best / reference 0.1.0 best: {best_python / best_reference:.1f}x")
    if rust:
        best_rust = max(rust.values())
        print(f"python best / rust best: {best_python / best_rust:.2f}x")
    print(json.dumps({"python": ours, "reference": reference, "rust": rust}))


if __name__ == "__main__":
    asyncio.run(main())
