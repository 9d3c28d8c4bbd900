"""Python and the Rust runner on one database: a job enqueued from either runs on the other,
both see the task options the other published, and a Python worker and a Rust worker drain
one queue together with each job run once. The Rust runner is the `soniq` binary
(SONIQ_RUST_BIN; scripts/lib/python-check.sh points it at target/debug/soniq) with a TOML
jobs module of command handlers."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import running_worker, statuses

from soniq import TaskRef
from soniq.testing import wait_until

RUST_BIN = os.environ.get("SONIQ_RUST_BIN") or str(
    Path(__file__).resolve().parents[2] / "target" / "debug" / "soniq"
)


@pytest.fixture
def rust(env_for_subprocess, tmp_path):
    if not os.access(RUST_BIN, os.X_OK):
        pytest.fail(
            f"the Rust runner {RUST_BIN} is not built: build it (cargo build -p soniq-runner) or set SONIQ_RUST_BIN"
        )

    def run(
        *args: str, module: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RUST_BIN, *args],
            env=rust_env(env_for_subprocess, module),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def rust_env(env: dict[str, str], module: str | None) -> dict[str, str]:
    return {**env, "SONIQ_JOBS_MODULES": module or "", "SONIQ_LOG": "warn"}


def jobs_module(tmp_path: Path, task: str, log: Path, **options: object) -> str:
    """A TOML module with one command handler that appends its job id to `log` and returns
    its args as its result."""
    script = tmp_path / "handler.py"
    script.write_text(textwrap.dedent(f'''
        import json, sys
        job = json.load(sys.stdin)
        with open({str(log)!r}, "a") as f:
            f.write(job["context"]["job_id"] + "\\n")
        print(json.dumps({{"ran_by": "rust", "args": job["args"]}}))
    '''))  # fmt: skip
    lines = [
        f'[tasks."{task}"]',
        f"command = [{json.dumps(sys.executable)}, {json.dumps(str(script))}]",
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in options.items()]
    path = tmp_path / "jobs.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


async def test_a_job_enqueued_from_python_runs_on_the_rust_runner(
    make_app, uid, rust, tmp_path
) -> None:
    app = make_app()
    ref = TaskRef(f"{uid}.rust_side", default_queue=uid)
    job_id = await app.enqueue(ref, args={"order": 7})
    module = jobs_module(tmp_path, f"{uid}.rust_side", tmp_path / "runs.log", queue=uid)
    worker = rust("worker", "--run-once", "--queues", uid, module=module)
    assert worker.returncode == 0, worker.stderr
    assert await app.get_result(job_id) == {"ran_by": "rust", "args": {"order": 7}}


async def test_a_job_enqueued_from_rust_runs_on_python(make_app, uid, rust) -> None:
    app = make_app()
    seen: list[int] = []

    @app.job(name=f"{uid}.python_side", queue=uid)
    async def python_side(n: int) -> str:
        seen.append(n)
        return "ran by python"

    await app.ensure_initialized()  # publishes the task's options (its queue)
    enqueued = rust("--json", "enqueue", f"{uid}.python_side", "--args", '{"n": 5}')
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = json.loads(enqueued.stdout)["id"]
    await app.run_worker(run_once=True, queues=[uid])
    assert seen == [5] and await app.get_result(job_id) == "ran by python"


async def test_both_see_the_task_options_the_other_published(make_app, uid, rust, tmp_path) -> None:
    app = make_app()

    @app.job(name=f"{uid}.py_opts", queue=uid, retries=6, priority=15, timeout=42)
    async def py_opts() -> None: ...

    await app.ensure_initialized()
    from_rust = rust("--json", "enqueue", f"{uid}.py_opts")
    assert from_rust.returncode == 0, from_rust.stderr
    job = await app.get_job(json.loads(from_rust.stdout)["id"])
    assert (job["queue"], job["priority"], job["max_attempts"]) == (uid, 15, 7)

    module = jobs_module(
        tmp_path,
        f"{uid}.rust_opts",
        tmp_path / "x.log",
        queue=f"{uid}_r",
        retries=2,
        priority=9,
        timeout=30,
    )
    published = rust(
        "worker", "--run-once", "--queues", f"{uid}_r", module=module
    )  # publishes at start
    assert published.returncode == 0, published.stderr
    from_python = await app.enqueue(TaskRef(f"{uid}.rust_opts"), args={})
    job = await app.get_job(from_python)
    assert (job["queue"], job["priority"], job["max_attempts"]) == (f"{uid}_r", 9, 3)


async def test_a_python_and_a_rust_worker_drain_one_queue_each_job_once(
    make_app, uid, tmp_path, env_for_subprocess, db
) -> None:
    app = make_app()
    task = f"{uid}.shared"
    python_runs: list[str] = []

    @app.job(name=task, queue=uid)
    async def shared(n: int) -> None: ...

    from soniq import JobContext

    @app.middleware
    async def record(ctx: JobContext, call_next):
        python_runs.append(ctx.job_id)
        return await call_next()

    log = tmp_path / "rust_runs.log"
    module = jobs_module(tmp_path, task, log, queue=uid)
    rust_worker = subprocess.Popen(
        [RUST_BIN, "worker", "--concurrency", "8", "--queues", uid],
        env=rust_env(env_for_subprocess, module), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        await wait_until(
            lambda: _rust_worker_up(db, uid), timeout=30, message="the Rust worker did not register"
        )
        ids = await app.enqueue_many(shared, [{"n": i} for i in range(400)])
        async with running_worker(app, concurrency=8, queues=[uid]):
            await wait_until(lambda: _all_done(app, uid, 400), timeout=120)
    finally:
        rust_worker.terminate()
        assert rust_worker.wait(30) == 0, rust_worker.stderr.read() if rust_worker.stderr else ""
    rust_runs = log.read_text().split() if log.exists() else []
    runs = collections.Counter(python_runs + rust_runs)
    assert set(runs) == set(ids) and set(runs.values()) == {1}, "each job ran exactly once"
    print(f"python ran {len(python_runs)}, rust ran {len(rust_runs)}")
    assert python_runs and rust_runs, (
        f"both took part: python {len(python_runs)}, rust {len(rust_runs)}"
    )
    assert await statuses(app, ids) == {"done": 400}


async def _rust_worker_up(db, queue: str) -> bool:
    return bool(
        await db.fetchval(
            "SELECT count(*) FROM soniq.worker_overview WHERE $1 = ANY (queues)", queue
        )
    )


async def _all_done(app, queue: str, n: int) -> bool:
    return (await app.queue_stats(queue))["done"] == n
