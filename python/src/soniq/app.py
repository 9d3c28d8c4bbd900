"""`Soniq`: the application object. It registers jobs, hooks and middleware, enqueues
(on its pool, or on the caller's connection), reads jobs, and runs workers. Every state
change is a `soniq.*` function of the extension (store.py); in memory (`Soniq.in_memory()`)
the same calls go to an in-process queue for unit tests."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from .connections import executor_for
from .dead_letter import DeadLetter
from .enqueue import CallOptions, RequestBuilder
from .errors import (
    APP_CLOSED,
    INIT_ERROR,
    NOT_INITIALIZED,
    NOT_SUPPORTED,
    SoniqError,
)
from .execute import Handlers
from .hooks import Hook, Middleware
from .memory import MemoryStore
from .registry import (
    JOB_OPTIONS,
    Periodic,
    Registry,
    Task,
    TaskOptions,
    check_task_name,
    derive_task_name,
)
from .scheduler import Scheduler, every_seconds
from .settings import SoniqSettings
from .store import PostgresStore, job_uuid
from .worker import Worker, WorkerReport, worker_options

log = logging.getLogger("soniq")
F = TypeVar("F", bound=Callable[..., Any])
STATUSES = ("queued", "processing", "done", "cancelled")


class Soniq:
    """A Soniq application. `Soniq(database_url=..., **settings)`: settings come from the
    `SONIQ_*` environment variables, overridden by keyword (`concurrency=8`)."""

    def __init__(
        self, database_url: str | None = None, *, backend: str | None = None, **settings: Any
    ) -> None:
        if backend not in (None, "postgres", "memory"):
            raise ValueError(f"Unknown backend: {backend!r}. Use 'postgres' or 'memory'.")
        self.settings = SoniqSettings.load({"database_url": database_url, **settings})
        self.registry = Registry()
        self.handlers = Handlers(self.registry)
        self._builder = RequestBuilder(self.settings, self.registry)
        self._memory: MemoryStore | None = (
            MemoryStore(self.handlers) if backend == "memory" else None
        )
        self._store: PostgresStore | None = None
        self._init_lock: asyncio.Lock | None = None
        self._store_loop: asyncio.AbstractEventLoop | None = None
        self._published: set[str] = set()
        self._closed = False
        self.scheduler = Scheduler(self)
        self.dead_letter = DeadLetter(self)

    @classmethod
    def in_memory(cls, **settings: Any) -> Soniq:
        """An app whose queue lives in this process: for unit tests of handlers (see
        `soniq.testing`). No PostgreSQL; transactional enqueue is refused."""
        return cls(backend="memory", **settings)

    def in_memory_twin(self) -> Soniq:
        """An in-memory app with this app's jobs, hooks and middleware (test a real app's
        handlers without PostgreSQL)."""
        return self.copy(backend="memory")

    def copy(self, *, database_url: str | None = None, backend: str | None = None) -> Soniq:
        """A new app with this app's settings (another database, or in memory), jobs, hooks
        and middleware."""
        settings = {k: v for k, v in vars(self.settings).items() if k != "database_url"}
        other = Soniq(database_url or self.settings.database_url, backend=backend, **settings)
        for task in self.registry.tasks.values():
            other.registry.add(task)
        other.handlers.hooks = self.handlers.hooks
        other.handlers.middlewares = self.handlers.middlewares
        return other

    def _memory_store(self) -> MemoryStore:
        if self._memory is None:
            raise SoniqError(NOT_SUPPORTED, "this app is not in memory")
        return self._memory

    # Lifecycle -------------------------------------------------------------------------

    @property
    def is_memory(self) -> bool:
        return self._memory is not None

    @property
    def is_initialized(self) -> bool:
        return self._store is not None or self._memory is not None

    @property
    def backend(self) -> PostgresStore:
        """Soniq's pool (`async with app.backend.acquire() as conn`), after `ensure_initialized()`."""
        if self._store is None:
            raise SoniqError(
                NOT_INITIALIZED,
                "the app has no database pool yet: await app.ensure_initialized() first"
                + (" (this app is in memory)" if self.is_memory else ""),
            )
        return self._store

    async def ensure_initialized(self) -> None:
        """Connect (once) and publish the registered jobs' options."""
        if self._closed:
            raise SoniqError(APP_CLOSED, "Cannot use a closed Soniq instance")
        if self._memory is not None:
            return
        loop = asyncio.get_running_loop()
        if self._store is not None and self._store_loop is not loop:
            # A pool belongs to the event loop that made it: a second asyncio.run() (a
            # script enqueueing twice) gets a pool of its own.
            self._store.abandon()
            self._store, self._init_lock = None, None
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
            self._store_loop = loop
        async with self._init_lock:
            if self._store is None:
                try:
                    self._store = await PostgresStore.connect(
                        self.settings.database_url,
                        self.settings.pool_min_size,
                        self.settings.pool_max_size,
                    )
                except Exception as e:
                    from .settings import mask_url

                    raise SoniqError(
                        INIT_ERROR,
                        f"could not connect to {mask_url(self.settings.database_url)}: {e}",
                    ) from e
            await self._publish_tasks(self._store)

    async def _publish_tasks(self, store: PostgresStore) -> None:
        """`soniq.register_task` for each job not published yet, and the schedules of
        `@app.periodic` jobs. A producer login may not publish: it enqueues all the same."""
        for name in self.registry.names():
            if name in self._published:
                continue
            task = self.registry.tasks[name]
            try:
                await store.register_task(name, task.options.to_defaults())
                if task.periodic is not None:
                    p = task.periodic
                    spec = self.scheduler.spec(
                        name, p.cron, p.every, p.args, None, None, None, None, "UTC", name, True
                    )  # fmt: skip
                    await store.schedule_add(*spec)
            except SoniqError as e:
                if e.sqlstate != "42501":
                    raise
                log.debug("this login may not publish task options: %s", e)
            self._published.add(name)

    async def setup(self) -> None:
        """Install (or update) the extension in the database: `CREATE EXTENSION soniq` needs a
        superuser; run it once per deploy."""
        await self.ensure_initialized()
        async with self.backend.acquire() as connection:
            await connection.execute("CREATE EXTENSION IF NOT EXISTS soniq")
            await connection.execute("ALTER EXTENSION soniq UPDATE")

    async def close(self) -> None:
        self._closed = True
        if self._store is not None:
            store, self._store = self._store, None
            if self._store_loop is asyncio.get_running_loop():
                await store.close()
            else:
                store.abandon()

    async def __aenter__(self) -> Soniq:
        await self.ensure_initialized()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # Registration ----------------------------------------------------------------------

    def job(self, function: Any = None, /, **options: Any) -> Callable[[F], F]:
        """`@app.job(name=..., retries=..., ...)`: register a handler. The function is
        returned unchanged; enqueue it with `app.enqueue(function, **args)`."""
        if function is not None:
            raise TypeError(
                "@app.job takes no positional argument: write @app.job() with parentheses"
            )
        unknown = set(options) - JOB_OPTIONS
        if unknown:
            raise TypeError(
                f"@app.job() got unknown option(s) {', '.join(sorted(unknown))}; "
                f"the options are {', '.join(sorted(JOB_OPTIONS))}"
            )
        checked = TaskOptions.checked(options)
        model = options.get("validate", options.get("args_model"))
        explicit_name = options.get("name")

        def register(fn: F) -> F:
            if not callable(fn):
                raise TypeError(f"@app.job() decorates a function, got {type(fn).__name__}")
            if explicit_name is not None:
                name = check_task_name(explicit_name, self.settings.task_name_pattern)
            else:
                name = check_task_name(derive_task_name(fn), self.settings.task_name_pattern)
            task_options = checked
            if checked.queue is None and (routed := self.settings.queue_for(name)) is not None:
                task_options = TaskOptions(**{**vars(checked), "queue": routed})
            self.registry.add(Task.of(name, fn, task_options, model))
            return fn

        return register

    def periodic(self, *, cron: object = None, every: timedelta | float | None = None, args: Mapping[str, Any] | None = None, **job_options: Any) -> Callable[[F], F]:  # fmt: skip
        """`@app.periodic(cron=... | every=..., **job options)`: a job run on a schedule
        named after its task, published when the app connects; the control plane fires it."""
        if (cron is None) == (every is None):
            raise ValueError("@app.periodic takes exactly one of cron= and every=")
        cron_text = None if cron is None else str(cron)
        seconds = None if every is None else every_seconds(every)
        register = self.job(**job_options)
        schedule_args = dict(args or {})

        def decorate(fn: F) -> F:
            register(fn)
            task = self.registry.of_function(fn)
            assert task is not None
            task.periodic = Periodic(cron_text, seconds, schedule_args)
            return fn

        return decorate

    def before_job(self, hook: Hook) -> Hook:
        self.handlers.hooks.before_job.append(hook)
        return hook

    def after_job(self, hook: Hook) -> Hook:
        self.handlers.hooks.after_job.append(hook)
        return hook

    def on_error(self, hook: Hook) -> Hook:
        self.handlers.hooks.on_error.append(hook)
        return hook

    def middleware(self, middleware: Middleware) -> Middleware:
        self.handlers.middlewares.append(middleware)
        return middleware

    # Enqueue ---------------------------------------------------------------------------

    async def enqueue(
        self,
        target: object,
        /,
        *,
        args: Mapping[str, Any] | None = None,
        queue: str | None = None,
        priority: int | None = None,
        scheduled_at: datetime | timedelta | float | None = None,
        unique: bool | None = None,
        dedup_key: str | None = None,
        retries: int | None = None,
        timeout: float | timedelta | None = None,
        connection: Any = None,
        **func_kwargs: Any,
    ) -> str:
        """Enqueue one job; returns its id (a duplicate's: the queued job's id). With
        `connection=`, the job is written in the caller's transaction."""
        options = CallOptions(queue, priority, scheduled_at, unique, dedup_key, retries, timeout)
        request = self._builder.build(target, args, func_kwargs, options)
        if self._memory is not None:
            if connection is not None:
                raise self._no_transactions()
            return self._memory.enqueue(request)
        await self.ensure_initialized()
        if connection is None:
            return await self.backend.enqueue(request, self.settings.producer_id)
        return await PostgresStore.enqueue_on(
            await executor_for(connection), request, self.settings.producer_id
        )

    async def enqueue_many(
        self,
        target: object,
        args_list: Sequence[Mapping[str, Any]],
        /,
        *,
        queue: str | None = None,
        priority: int | None = None,
        scheduled_at: datetime | timedelta | float | None = None,
        retries: int | None = None,
        timeout: float | timedelta | None = None,
        unique: bool | None = None,
        connection: Any = None,
    ) -> list[str]:
        """Enqueue one job per args dict in one statement; ids in input order. All or nothing:
        a bad item is an error naming its index, and nothing is written."""
        if not isinstance(args_list, list):
            raise TypeError(
                f"enqueue_many() args_list must be a list, got {type(args_list).__name__}"
            )
        options = CallOptions(queue, priority, scheduled_at, unique, None, retries, timeout)
        requests = []
        for index, item in enumerate(args_list):
            if not isinstance(item, Mapping):
                raise TypeError(
                    f"enqueue_many() args_list[{index}] must be a dict, got {type(item).__name__}"
                )
            try:
                requests.append(self._builder.build(target, item, {}, options, "enqueue_many"))
            except SoniqError as e:
                raise SoniqError(e.code, f"args_list[{index}]: {e.message}") from None
        if not requests:
            return []
        if self._memory is not None:
            if connection is not None:
                raise self._no_transactions()
            return [self._memory.enqueue(r) for r in requests]
        await self.ensure_initialized()
        if connection is None:
            return await self.backend.enqueue_many(requests, self.settings.producer_id)
        executor = await executor_for(connection)
        return await PostgresStore.enqueue_many_on(executor, requests, self.settings.producer_id)

    async def schedule(
        self,
        target: object,
        /,
        run_at: datetime | timedelta | float,
        *,
        args: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> str:
        """`enqueue(..., scheduled_at=run_at)`: run at a time (aware), or seconds from now."""
        return await self.enqueue(target, args=args, scheduled_at=run_at, **kwargs)

    def _no_transactions(self) -> SoniqError:
        return SoniqError(
            NOT_SUPPORTED,
            "this app is in memory (Soniq.in_memory()): it cannot enqueue on a database connection, "
            "whose job its queue would never see; enqueue without connection=",
        )

    # Jobs ------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> dict[str, Any] | None:
        """A job by id (also a dead one: status `dead_letter`), or None."""
        job_id = job_uuid(job_id)
        if self._memory is not None:
            return self._memory.get_job(job_id)
        await self.ensure_initialized()
        return await self.backend.get_job(job_id)

    async def get_result(self, job_id: str, *, result_model: Any = None) -> Any:
        """A done job's result (None until it is done); `result_model` builds it: a pydantic
        model's `model_validate`, else the class called with the result."""
        job = await self.get_job(job_id)
        if job is None or job["status"] != "done":
            return None
        result = job["result"]
        if result_model is None or result is None:
            return result
        if hasattr(result_model, "model_validate"):
            return result_model.model_validate(result)
        return result_model(**result) if isinstance(result, dict) else result_model(result)

    async def list_jobs(
        self, queue: str | None = None, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Jobs newest first (dead jobs: `app.dead_letter.list()`)."""
        if status is not None and status not in STATUSES:
            raise ValueError(
                f"status must be one of {', '.join(STATUSES)}, got {status!r} (dead jobs: app.dead_letter.list())"
            )
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10000:
            raise ValueError(f"limit must be from 1 to 10000, got {limit!r}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be at least 0, got {offset!r}")
        if self._memory is not None:
            return self._memory.list_jobs(queue, status, limit, offset)
        await self.ensure_initialized()
        return await self.backend.list_jobs(queue, status, limit, offset)

    async def cancel_job(self, job_id: str) -> bool:
        """A queued job is cancelled (it never runs); a running one is stopped by its worker at
        its next heartbeat. False when the job finished already or is unknown."""
        job_id = job_uuid(job_id)
        if self._memory is not None:
            return self._memory.cancel_job(job_id)
        await self.ensure_initialized()
        try:
            return await self.backend.cancel_job(job_id)
        except SoniqError as e:
            if e.sqlstate == "P0002":
                return False
            raise

    async def delete_job(self, job_id: str) -> bool:
        """Remove a job in any state (not a dead one: `app.dead_letter.delete`). False if unknown."""
        job_id = job_uuid(job_id)
        if self._memory is not None:
            return self._memory.delete_job(job_id)
        await self.ensure_initialized()
        try:
            await self.backend.delete_job(job_id)
            return True
        except SoniqError as e:
            if e.sqlstate == "P0002":
                return False
            raise

    async def queue_stats(self, queue: str | None = None) -> dict[str, int]:
        """`{total, queued, processing, done, cancelled, dead_letter}` of one queue or all."""
        if self._memory is not None:
            return self._memory.queue_stats(queue)
        await self.ensure_initialized()
        return await self.backend.queue_stats(queue)

    get_queue_stats = queue_stats

    # Workers ---------------------------------------------------------------------------

    async def run_worker(
        self,
        concurrency: int | None = None,
        run_once: bool = False,
        queues: Sequence[str] | str | None = None,
        *,
        max_jobs: int | None = None,
        shutdown_event: asyncio.Event | None = None,
    ) -> WorkerReport:
        """Run a worker until SIGINT/SIGTERM (or `shutdown_event`), or with `run_once` until
        nothing is due. The first signal shuts down gracefully; a second exits at once."""
        concurrency = self.settings.concurrency if concurrency is None else concurrency
        options = worker_options(concurrency, queues, run_once, max_jobs)
        if self._memory is not None:
            raise SoniqError(
                NOT_SUPPORTED, "an in-memory app runs its jobs with soniq.testing.drain(app)"
            )
        await self.ensure_initialized()
        worker = Worker(
            self.backend,
            self.registry,
            self.settings,
            self.handlers.hooks,
            middlewares=self.handlers.middlewares,
        )
        return await worker.start(options, shutdown_event)

    def _get_job_registry(self) -> Registry:
        """The app's job registry (the hooks page's Slack example reads it)."""
        return self.registry
