"""`Worker`: the worker page's advanced entry point, and what `app.run_worker` builds: the
app's backend (its pool), job registry, settings and hooks, run by `runner.WorkerRun`.

    worker = Worker(backend=app.backend, registry=registry, settings=settings, hooks=hooks)
    await worker.run(concurrency=4)       # until SIGINT/SIGTERM
    await worker.run_once(max_jobs=100)   # what is due now, then return
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Mapping, Sequence

from .errors import INVALID_OPTION, SoniqError
from .execute import Handlers
from .hooks import Hook, Hooks, Middleware
from .registry import Registry
from .runner import WorkerOptions, WorkerReport, WorkerRun
from .settings import SoniqSettings
from .store import PostgresStore

log = logging.getLogger("soniq")

__all__ = ["Worker", "WorkerReport"]


class Worker:
    """A worker over `backend` (`app.backend`, after `await app.ensure_initialized()`) for
    the jobs of `registry`. `settings` default to the `SONIQ_*` environment; `hooks` is a
    `Hooks` or a dict of `"before_job"`, `"after_job"`, `"on_error"` to lists of callables."""

    def __init__(
        self,
        backend: PostgresStore,
        registry: Registry,
        settings: SoniqSettings | None = None,
        hooks: Hooks | Mapping[str, Sequence[Hook]] | None = None,
        *,
        middlewares: Sequence[Middleware] = (),
    ) -> None:
        self.backend = backend
        self.settings = settings if settings is not None else SoniqSettings.load()
        self.handlers = Handlers(registry, _hooks(hooks), list(middlewares))

    async def run(
        self, concurrency: int = 4, run_once: bool = False, queues: Sequence[str] | None = None
    ) -> bool:
        """Run until SIGINT/SIGTERM, or with `run_once` until nothing is due. True if any
        job was processed."""
        report = await self.start(worker_options(concurrency, queues, run_once))
        return report.jobs_run > 0

    async def run_once(
        self, queues: Sequence[str] | None = None, max_jobs: int | None = None
    ) -> bool:
        """Process what is due (at most `max_jobs`) and return; True if any job was processed."""
        options = worker_options(self.settings.concurrency, queues, True, max_jobs)
        return (await self.start(options)).jobs_run > 0

    async def start(
        self, options: WorkerOptions, shutdown_event: asyncio.Event | None = None
    ) -> WorkerReport:
        """One run with its report; `shutdown_event` stops it instead of the signals."""
        run = WorkerRun(self.backend, self.handlers, self.settings, options)
        shutdown = shutdown_event or asyncio.Event()
        with _signals(shutdown, install=shutdown_event is None):
            return await run.run(shutdown)


def worker_options(
    concurrency: object,
    queues: Sequence[str] | str | None,
    run_once: bool = False,
    max_jobs: int | None = None,
) -> WorkerOptions:
    """Checked options: each bad one is a SoniqError (SONIQ_INVALID_OPTION) naming it."""
    return WorkerOptions(_concurrency(concurrency), _queues(queues), run_once, max_jobs)


def _hooks(hooks: Hooks | Mapping[str, Sequence[Hook]] | None) -> Hooks:
    if hooks is None or isinstance(hooks, Hooks):
        return hooks or Hooks()
    unknown = set(hooks) - {"before_job", "after_job", "on_error"}
    if unknown:
        raise ValueError(
            f"hooks keys are 'before_job', 'after_job' and 'on_error', got {sorted(unknown)}"
        )
    return Hooks(*(list(hooks.get(k, ())) for k in ("before_job", "after_job", "on_error")))


def _concurrency(concurrency: object) -> int:
    if (
        isinstance(concurrency, bool)
        or not isinstance(concurrency, int)
        or not 1 <= concurrency <= 1000
    ):
        raise SoniqError(
            INVALID_OPTION,
            f"concurrency must be a whole number from 1 to 1000, got {concurrency!r}",
        )
    return concurrency


def _queues(queues: Sequence[str] | str | None) -> list[str] | None:
    if queues is None:
        return None
    names = [q.strip() for q in queues.split(",")] if isinstance(queues, str) else list(queues)
    names = [q for q in names if q]
    if not names:
        raise SoniqError(INVALID_OPTION, "queues must name at least one queue (None serves all)")
    return names


class _signals:
    """SIGINT/SIGTERM handlers for a worker: the first sets `shutdown`, a second exits the
    process at once (status 130; the control plane takes back the jobs still running)."""

    def __init__(self, shutdown: asyncio.Event, install: bool) -> None:
        self.shutdown = shutdown
        self.install = install and threading.current_thread() is threading.main_thread()
        self.signals = (signal.SIGINT, signal.SIGTERM)

    def _received(self) -> None:
        if self.shutdown.is_set():
            log.warning("second signal: exiting at once")
            os._exit(130)
        log.info("signal received: shutting down gracefully (a second one exits at once)")
        self.shutdown.set()

    def __enter__(self) -> None:
        if self.install:
            loop = asyncio.get_running_loop()
            for s in self.signals:
                loop.add_signal_handler(s, self._received)

    def __exit__(self, *exc: object) -> None:
        if self.install:
            loop = asyncio.get_running_loop()
            for s in self.signals:
                loop.remove_signal_handler(s)
