"""One worker run (`soniq.worker.Worker` starts it), as the Rust runner's
(runner/src/worker.rs): one claimer that claims in batches up to the free job slots, woken
by LISTEN with a poll fallback; one asyncio task per running job; a reporter that records
outcomes many per statement; a heartbeat that names the jobs held; maintenance rounds; and
a shutdown that stops claiming, gives running jobs SONIQ_SHUTDOWN_TIMEOUT, then hands the
rest back without using an attempt.

A job slot is freed only once its outcome is recorded, so free capacity (and run_once's
"nothing left") counts only attempts whose outcome is in the database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import asyncpg

from . import __version__
from .errors import NO_HANDLERS, SoniqError
from .execute import Aborted, Done, Failed, Handlers, Outcome, Snoozed, execute
from .job import Attempt
from .settings import SoniqSettings, mask_url
from .store import PostgresStore, unreachable

log = logging.getLogger("soniq")

MAX_CLAIM_BATCH = 100
MAX_REPORT_BATCH = 500
# After a notification, look again this soon even if none follows: a producer whose wake-up
# the extension skipped (another's was committing) commits a moment after the claim ran.
FOLLOW_UP = 0.02
REPORT_YIELDS = 4
RECORDING_PATIENCE = 120.0
# The longest silence soniq.rescue_jobs takes: right after an outage only a worker silent that
# long is presumed dead.
LONGEST_SILENCE = 30 * 24 * 3600.0
HANDED_BACK = "handed back unfinished at shutdown"


@dataclass
class WorkerReport:
    jobs_run: int = 0
    handed_back: int = 0


@dataclass
class Report:
    job_id: str
    attempt: int
    worker_id: str
    outcome: Outcome


@dataclass
class Running:
    task: asyncio.Task[None]
    attempt: int
    worker_id: str


class Slots:
    """Job slots: taken by the claimer, given back as outcomes are recorded."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._changed = asyncio.Event()

    async def take(self, most: int, stopping: asyncio.Event) -> int:
        """Wait for a free slot, then take every free one up to `most`; 0 when stopping."""
        while self.free == 0 and not stopping.is_set():
            self._changed.clear()
            await self._changed.wait()
        if stopping.is_set():
            return 0
        n = min(self.free, most)
        self.free -= n
        return n

    def give_back(self, n: int) -> None:
        self.free += n
        self._changed.set()

    def interrupt(self) -> None:
        self._changed.set()

    async def all_free(self) -> None:
        while self.free < self.total:
            self._changed.clear()
            await self._changed.wait()


@dataclass
class WorkerOptions:
    concurrency: int
    queues: Sequence[str] | None = None
    run_once: bool = False
    max_jobs: int | None = None


@dataclass
class WorkerRun:
    store: PostgresStore
    handlers: Handlers
    settings: SoniqSettings
    options: WorkerOptions
    worker_id: str = ""
    running: dict[str, Running] = field(default_factory=dict)
    recording: set[str] = field(default_factory=set)
    jobs_run: int = 0
    # When a heartbeat last could not reach the database (out of reach for every worker, not
    # a refusal): for one heartbeat timeout after it the maintenance presumes no worker dead,
    # as the control plane does after it starts.
    last_outage: float | None = None

    def __post_init__(self) -> None:
        self.task_names = self.handlers.registry.names()
        self.slots = Slots(self.options.concurrency)
        self.reports: asyncio.Queue[Report | None] = asyncio.Queue()
        self.wake = asyncio.Event()
        self.stop_claiming = asyncio.Event()
        self.stop_background = asyncio.Event()
        self.threads = ThreadPoolExecutor(
            max_workers=self.options.concurrency, thread_name_prefix="soniq-job"
        )

    async def run(self, shutdown: asyncio.Event) -> WorkerReport:
        if not self.task_names:
            raise SoniqError(NO_HANDLERS, "a worker needs at least one registered job (@app.job())")
        self.worker_id = await self._register()
        log.info(
            "worker %s started: queues %s, concurrency %d, tasks %s, database %s",
            self.worker_id, ",".join(self.options.queues) if self.options.queues else "all",
            self.options.concurrency, ",".join(self.task_names), mask_url(self.store.dsn),
        )  # fmt: skip
        background = [
            asyncio.create_task(self._report_outcomes()),
            asyncio.create_task(self._every(self.settings.heartbeat_interval, self._heartbeat)),
            asyncio.create_task(self._every(self.settings.cleanup_interval, self._maintain)),
            asyncio.create_task(self._listen()),
        ]
        stopper = asyncio.create_task(self._stop_claiming_at(shutdown))
        try:
            await self._claim_loop()
        finally:
            stopper.cancel()
            handed_back = await self._finish_running()
            await self.reports.put(None)  # the reporter records what is left, then ends
            (reporter_error,) = await asyncio.gather(background[0], return_exceptions=True)
            if reporter_error is not None:  # a bug of ours: the jobs it held run again
                log.error("the outcome reporter failed: %r", reporter_error)
            self.stop_background.set()
            await asyncio.gather(*background[1:], return_exceptions=True)
            self.threads.shutdown(wait=False)
            await self._deregister()
        log.info(
            "worker %s stopped: %d jobs run, %d handed back",
            self.worker_id,
            self.jobs_run,
            handed_back,
        )
        return WorkerReport(self.jobs_run, handed_back)

    async def _register(self) -> str:
        return await self.store.register_worker(
            socket.gethostname(), os.getpid(), self.options.queues, self.options.concurrency,
            f"soniq-py {__version__}", self.task_names,
        )  # fmt: skip

    async def _deregister(self) -> None:
        try:
            await self.store.deregister_worker(self.worker_id)
        except SoniqError as e:  # presumed dead meanwhile: its jobs were taken back already
            log.info("deregistering: %s", e)
        except Exception as e:
            log.warning("could not deregister (the control plane takes back its jobs): %s", e)

    async def _stop_claiming_at(self, shutdown: asyncio.Event) -> None:
        await shutdown.wait()
        if not self.options.run_once:
            log.info(
                "shutting down: no new jobs; running jobs get %g s", self.settings.shutdown_timeout
            )
        self.stop_claiming.set()
        self.wake.set()
        self.slots.interrupt()

    # Claiming --------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        concurrency = self.options.concurrency
        follow_up = False
        while not self.stop_claiming.is_set():
            remaining = MAX_CLAIM_BATCH
            if self.options.max_jobs is not None:
                remaining = min(remaining, self.options.max_jobs - self.jobs_run)
                if remaining <= 0:
                    break
            asked = await self.slots.take(remaining, self.stop_claiming)
            if asked == 0:
                break
            nothing_running = self.slots.free + asked == concurrency
            self.wake.clear()  # before the claim: a notification during it is not lost
            try:
                jobs = await self.store.claim(
                    self.worker_id, self.options.queues, asked, self.task_names
                )
            except Exception as e:  # an outage (or a refusal the heartbeat repairs): try again
                log.warning("claim failed: %s", e)
                self.slots.give_back(asked)
                await self._wait(self.stop_claiming, self.settings.error_retry_delay)
                continue
            self.jobs_run += len(jobs)
            for job in jobs:
                self._spawn(job)
            self.slots.give_back(asked - len(jobs))
            if len(jobs) == asked:
                continue  # a full batch: there may be more at once
            if self.options.run_once:
                if not (not jobs and nothing_running):
                    await self.slots.all_free()  # running jobs may leave immediate retries
                    continue
                if not await self._held_back():
                    break
                # Nothing left but what a queue's limit holds back: wait for it like an idle
                # worker (woken when a slot frees or the rate window moves on).
            await self._wait(self.wake, FOLLOW_UP if follow_up else self.settings.poll_interval)
            follow_up = self.wake.is_set()

    async def _held_back(self) -> bool:
        """Whether a limit of the queues served holds back jobs this worker runs; a failed
        look counts as no."""
        try:
            return await self.store.held_back(self.options.queues, self.task_names)
        except Exception as e:
            log.warning("could not tell whether a limit holds jobs back: %s", e)
            return False

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    def _spawn(self, attempt: Attempt) -> None:
        task = asyncio.create_task(self._run(attempt))
        self.running[attempt.job_id] = Running(task, attempt.attempt, self.worker_id)

    async def _run(self, attempt: Attempt) -> None:
        try:
            outcome = await execute(self.handlers, attempt, self.threads)
        except Exception as e:  # a bug of ours, not of the handler: the attempt still ends
            log.exception("running job %s failed", attempt.job_id)
            outcome = Failed(f"the worker failed to run the job: {e!r}")
        # Only a job still listed reports: one stopped by a cancel or the shutdown has reported.
        if self.running.pop(attempt.job_id, None) is not None:
            self.recording.add(attempt.job_id)
            self.reports.put_nowait(
                Report(attempt.job_id, attempt.attempt, attempt.worker_id or "", outcome)
            )

    def _stop(self, job_ids: Sequence[str], outcome: Outcome) -> int:
        """Stop running jobs and report them with `outcome`; how many were stopped."""
        stopped = 0
        for job_id in job_ids:
            job = self.running.pop(job_id, None)
            if job is None:
                continue
            job.task.cancel()
            self.recording.add(job_id)
            self.reports.put_nowait(Report(job_id, job.attempt, job.worker_id, outcome))
            stopped += 1
        return stopped

    async def _finish_running(self) -> int:
        """Give running jobs the shutdown timeout, then hand the rest back."""
        if self.slots.free < self.slots.total:
            try:
                await asyncio.wait_for(self.slots.all_free(), self.settings.shutdown_timeout)
                return 0
            except TimeoutError:
                pass
        return self._stop(list(self.running), Snoozed(0.0, HANDED_BACK))

    # Recording outcomes ----------------------------------------------------------------

    async def _report_outcomes(self) -> None:
        ending = False
        while not ending:
            first = await self.reports.get()
            if first is None:
                break
            batch = [first]
            ending = self._take_ready(batch)
            for _ in range(REPORT_YIELDS):  # let jobs about to finish join this statement
                if ending or not self.running or len(batch) >= MAX_REPORT_BATCH:
                    break
                await asyncio.sleep(0)
                ending = self._take_ready(batch)
            await self._record_patiently(batch)
            for report in batch:
                self.recording.discard(report.job_id)
            self.slots.give_back(len(batch))

    def _take_ready(self, batch: list[Report]) -> bool:
        """Move waiting reports into batch; True when the end marker was among them."""
        while len(batch) < MAX_REPORT_BATCH and not self.reports.empty():
            report = self.reports.get_nowait()
            if report is None:
                return True
            batch.append(report)
        return False

    async def _record_patiently(self, batch: list[Report]) -> None:
        """Retried through an outage (a database restart); past RECORDING_PATIENCE the lease
        expiry is the fallback: the job runs again (at-least-once, never lost)."""
        left = list(batch)
        deadline = asyncio.get_running_loop().time() + RECORDING_PATIENCE
        while left:
            try:
                await self._record(left)
            except Exception as e:  # an outage: refusals were handled per outcome
                if asyncio.get_running_loop().time() > deadline:
                    log.error(
                        "gave up recording %d outcomes (%s); the jobs will run again", len(left), e
                    )
                    return
                log.warning("could not record %d outcomes, retrying: %s", len(left), e)
                await asyncio.sleep(self.settings.error_retry_delay)

    async def _record(self, left: list[Report]) -> None:
        """Record reports, one statement per worker id and kind, removing each group from
        `left` once recorded (so a retry after an outage sends only the rest). A group the
        database refuses for its content is recorded one by one."""
        groups: dict[tuple[str, type], list[Report]] = {}
        for report in left:
            groups.setdefault((report.worker_id, type(report.outcome)), []).append(report)
        for (worker_id, kind), group in groups.items():
            try:
                refused = await self._send(worker_id, kind, group)
            except SoniqError as e:
                log.warning(
                    "the database refused %d outcomes (%s); recording them one by one",
                    len(group),
                    e,
                )
                refused = sum([await self._record_alone(report) for report in group])
            if refused:
                log.warning(
                    "%d outcomes refused: their leases are gone (taken back: those jobs run again;"
                    " or recorded by a try whose answer was lost)",
                    refused,
                )
            for report in group:
                left.remove(report)

    async def _record_alone(self, report: Report) -> int:
        """One outcome on its own; one the database refuses becomes a failed attempt with its
        message (a refused failure is left to the lease's expiry). Returns 1 if the lease was lost."""
        try:
            return await self._send(report.worker_id, type(report.outcome), [report])
        except SoniqError as refusal:
            if isinstance(report.outcome, Failed):
                log.error(
                    "the database refused to record a failed attempt of %s (%s)",
                    report.job_id,
                    refusal,
                )
                return 0
            failed = Failed(f"the database refused the outcome: {refusal.message}")
        try:
            return await self._send(
                report.worker_id,
                Failed,
                [Report(report.job_id, report.attempt, report.worker_id, failed)],
            )
        except SoniqError as again:
            log.error(
                "the database refused to record a failed attempt of %s (%s)", report.job_id, again
            )
            return 0

    async def _send(self, worker_id: str, kind: type, group: list[Report]) -> int:
        """One group's statements; how many outcomes the database refused (lease lost)."""
        ids = [r.job_id for r in group]
        attempts = [r.attempt for r in group]
        if kind is Done:
            results = [r.outcome.result_json for r in group if isinstance(r.outcome, Done)]
            return len(ids) - len(await self.store.complete_many(worker_id, ids, attempts, results))
        if kind is Failed:
            failures = [r.outcome for r in group if isinstance(r.outcome, Failed)]
            recorded = await self.store.fail_many(
                worker_id, ids, attempts, [f.error for f in failures], [f.reason for f in failures]
            )
            return len(ids) - len(recorded)
        refused = 0
        for report in group:
            try:
                if isinstance(report.outcome, Snoozed):
                    await self.store.snooze(
                        worker_id,
                        report.job_id,
                        report.attempt,
                        report.outcome.seconds,
                        report.outcome.reason,
                    )
                elif isinstance(report.outcome, Aborted):
                    await self.store.abort(
                        worker_id, report.job_id, report.attempt, report.outcome.reason
                    )
            except SoniqError:
                refused += 1
        return refused

    # Background ------------------------------------------------------------------------

    async def _every(self, period: float, round_: Callable[[], Awaitable[None]]) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_background.wait(), period)
                return
            await round_()

    async def _heartbeat(self) -> None:
        try:
            cancelled = await self.store.heartbeat(self.worker_id, [*self.running, *self.recording])
        except SoniqError as e:
            if e.sqlstate == "P0002":
                log.warning("this worker was presumed dead; registering again")
                with contextlib.suppress(Exception):
                    self.worker_id = await self._register()
            else:
                log.warning("heartbeat refused: %s", e)
            return
        except Exception as e:
            # Only a database out of reach is an outage every worker may have gone through;
            # any other failure says nothing of the others' heartbeats.
            if unreachable(e):
                self.last_outage = asyncio.get_running_loop().time()
            log.warning("heartbeat failed: %s", e)
            return
        self._stop(cancelled, Aborted("cancelled on request"))

    async def _maintain(self) -> None:
        timeout = self.settings.heartbeat_timeout
        now = asyncio.get_running_loop().time()
        after_outage = self.last_outage is not None and now - self.last_outage < timeout
        silence = LONGEST_SILENCE if after_outage else timeout
        try:
            await self.store.maintain(silence)
        except Exception as e:
            log.warning("maintenance round failed: %s", e)

    async def _listen(self) -> None:
        """LISTEN soniq_new_job on a connection of its own, reconnecting; claims poll
        meanwhile."""
        while not self.stop_background.is_set():
            lost = asyncio.Event()
            try:
                connection = await asyncpg.connect(self.store.dsn)
            except Exception as e:
                log.warning("listener: %s; polling until it reconnects", e)
            else:
                try:
                    connection.add_termination_listener(lambda _c, lost=lost: lost.set())
                    await connection.add_listener("soniq_new_job", lambda *_a: self.wake.set())
                    self.wake.set()  # jobs may have arrived while the listener was down
                    stop = asyncio.create_task(self.stop_background.wait())
                    gone = asyncio.create_task(lost.wait())
                    await asyncio.wait({stop, gone}, return_when=asyncio.FIRST_COMPLETED)
                    stop.cancel()
                    gone.cancel()
                except Exception as e:
                    log.warning("listener: %s; polling until it reconnects", e)
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(connection.close(), 5)
            await self._wait(self.stop_background, self.settings.error_retry_delay)
