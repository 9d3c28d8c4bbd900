"""`python -m soniq worker|setup`: the worker of the Python handlers in the jobs modules."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from .app import Soniq
from .errors import SoniqError
from .settings import SoniqSettings


def find_app(modules: Sequence[str]) -> Soniq:
    """Import the jobs modules; the Soniq app they define (the one with jobs if several)."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    apps: list[Soniq] = []
    for name in modules:
        module = importlib.import_module(name)
        apps.extend(v for v in vars(module).values() if isinstance(v, Soniq) and v not in apps)
    with_jobs = [a for a in apps if a.registry.tasks]
    if len(with_jobs) == 1:
        return with_jobs[0]
    if not with_jobs:
        raise SystemExit(
            f"error: the jobs modules {', '.join(modules)} define no Soniq app with jobs"
        )
    raise SystemExit(
        f"error: the jobs modules define {len(with_jobs)} Soniq apps with jobs; keep one"
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m soniq", description="Soniq for Python")
    commands = p.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="run a worker for the jobs in the jobs modules")
    worker.add_argument(
        "--concurrency", type=int, help="jobs run at once (default SONIQ_CONCURRENCY, 4)"
    )
    worker.add_argument("--queues", help="comma-separated queues to serve (default: all)")
    worker.add_argument(
        "--jobs-modules", help="comma-separated modules to import, added to SONIQ_JOBS_MODULES"
    )
    worker.add_argument("--run-once", action="store_true", help="run what is due, then exit")
    worker.add_argument("--database-url", help="overrides SONIQ_DATABASE_URL and the app's URL")
    worker.add_argument("--log-level", default=os.environ.get("SONIQ_LOG_LEVEL", "INFO"))
    setup = commands.add_parser(
        "setup", help="create (or update) the soniq extension in the database"
    )
    setup.add_argument("--database-url")
    return p


async def _worker(args: argparse.Namespace) -> int:
    flag = [m.strip() for m in (args.jobs_modules or "").split(",") if m.strip()]
    modules = [*SoniqSettings.load().jobs_modules, *flag]
    if not modules:
        print(
            "error: SONIQ_JOBS_MODULES is not set and --jobs-modules was not passed: name the modules of your jobs",
            file=sys.stderr,
        )
        return 1
    app = find_app(modules)
    if args.database_url:
        app = app.copy(database_url=args.database_url)
    report = await app.run_worker(
        concurrency=args.concurrency, queues=args.queues, run_once=args.run_once
    )
    logging.getLogger("soniq").info(
        "%d jobs run, %d handed back", report.jobs_run, report.handed_back
    )
    await app.close()
    return 0


async def _setup(args: argparse.Namespace) -> int:
    app = Soniq(args.database_url)
    await app.setup()
    await app.close()
    print("soniq extension ready")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(_worker(args) if args.command == "worker" else _setup(args))
    except SoniqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
