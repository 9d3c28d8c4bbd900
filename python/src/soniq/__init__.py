"""Soniq for Python: background jobs in PostgreSQL, a client of the soniq extension."""

__version__ = "0.3.0"

from .app import Soniq  # noqa: E402
from .errors import SoniqError  # noqa: E402
from .job import JobContext, JobStatus, Snooze, TaskRef, task_ref  # noqa: E402
from .schedules import cron, daily, every, monthly, weekly  # noqa: E402
from .settings import SoniqSettings  # noqa: E402
from .worker import Worker, WorkerReport  # noqa: E402

__all__ = [
    "JobContext", "JobStatus", "Snooze", "Soniq", "SoniqError", "SoniqSettings", "TaskRef",
    "Worker", "WorkerReport", "__version__", "cron", "daily", "every", "monthly", "task_ref", "weekly",
]  # fmt: skip
