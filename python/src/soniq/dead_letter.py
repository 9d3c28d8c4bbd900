"""`app.dead_letter`: jobs that used up their attempts (or were discarded): list with
filters, replay (a fresh job; the dead row stays, its resurrection_count incremented),
delete, purge, stats, tags, export. In memory: all but stats and tags (SONIQ_NOT_SUPPORTED)."""

from __future__ import annotations

import builtins
import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import NOT_SUPPORTED, SoniqError
from .store import PostgresStore, job_uuid

if TYPE_CHECKING:
    from .app import Soniq

REASONS = (
    "max_retries_exceeded",
    "permanent_failure",
    "job_not_found",
    "invalid_arguments",
    "timeout",
    "manual_move",
)
EXPORT_FIELDS = (
    "id", "task_name", "queue", "priority", "attempts", "max_attempts", "dead_letter_reason",
    "last_error", "args", "original_created_at", "moved_to_dead_letter_at", "resurrection_count", "tags",
)  # fmt: skip


class DeadLetter:
    def __init__(self, app: Soniq) -> None:
        self._app = app

    async def list(
        self,
        *,
        task_name: str | None = None,
        queue: str | None = None,
        reason: str | None = None,
        moved_after: datetime | None = None,
        moved_before: datetime | None = None,
        tags: Sequence[str] | None = None,
        replayed: bool | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Dead jobs, most recently dead first."""
        if reason is not None and reason not in REASONS:
            raise ValueError(f"reason must be one of {', '.join(REASONS)}, got {reason!r}")
        filters = (task_name, queue, reason, moved_after, moved_before, tags, replayed)
        if self._app.is_memory:
            return self._app._memory_store().dead_list(*filters, limit, offset)  # noqa: SLF001
        await self._app.ensure_initialized()
        return await self._app.backend.dead_letter_list(*filters, limit, offset)

    async def get(self, dead_job_id: str) -> dict[str, Any] | None:
        """One dead job (the keys `list` gives), or None if that job is not dead."""
        dead_job_id = job_uuid(dead_job_id, "dead job id")
        if self._app.is_memory:
            return self._app._memory_store().dead_get(dead_job_id)  # noqa: SLF001
        await self._app.ensure_initialized()
        return await self._app.backend.dead_letter_get(dead_job_id)

    async def replay(
        self,
        dead_job_id: str,
        *,
        reset_attempts: bool = True,
        new_max_attempts: int | None = None,
        new_priority: int | None = None,
        new_queue: str | None = None,
    ) -> str:
        """A fresh job from a dead one; returns its id (unknown id: SoniqError)."""
        dead_job_id = job_uuid(dead_job_id, "dead job id")
        if self._app.is_memory:
            return self._app._memory_store().replay(dead_job_id)  # noqa: SLF001
        await self._app.ensure_initialized()
        return await self._app.backend.replay(
            dead_job_id, new_queue, new_priority, new_max_attempts, reset_attempts
        )

    async def replay_many(self, dead_job_ids: Sequence[str], **options: Any) -> builtins.list[str]:
        return [await self.replay(i, **options) for i in dead_job_ids]

    async def delete(self, dead_job_id: str) -> bool:
        """Remove a dead job for good; False if there was none."""
        dead_job_id = job_uuid(dead_job_id, "dead job id")
        if self._app.is_memory:
            return self._app._memory_store().dead_delete(dead_job_id)  # noqa: SLF001
        await self._app.ensure_initialized()
        try:
            await self._app.backend.dead_letter_delete(dead_job_id)
            return True
        except SoniqError as e:
            if e.sqlstate == "P0002":
                return False
            raise

    async def purge(self, older_than: timedelta | float = 0) -> int:
        """Remove dead jobs that died more than `older_than` (seconds or timedelta) ago; 0: all."""
        seconds = (
            older_than.total_seconds() if isinstance(older_than, timedelta) else float(older_than)
        )
        if seconds < 0:
            raise ValueError(f"older_than must not be negative, got {older_than!r}")
        if self._app.is_memory:
            return self._app._memory_store().dead_purge(seconds)  # noqa: SLF001
        await self._app.ensure_initialized()
        return await self._app.backend.dead_letter_purge(seconds)

    async def stats(self, since: timedelta | float | None = None) -> dict[str, Any]:
        """total, by_task, by_queue, by_reason, by_day (7 days), oldest_age_seconds, replayed."""
        seconds = since.total_seconds() if isinstance(since, timedelta) else since
        return await (await self._postgres("stats")).dead_letter_stats(seconds)

    async def tag(self, dead_job_id: str, tags: Sequence[str]) -> builtins.list[str]:
        dead_job_id = job_uuid(dead_job_id, "dead job id")
        return await (await self._postgres("tags")).dead_letter_tag(dead_job_id, tags)

    async def _postgres(self, what: str) -> PostgresStore:
        """The app's pool, for what only the extension computes; refused in memory."""
        if self._app.is_memory:
            raise SoniqError(
                NOT_SUPPORTED,
                f"dead-letter {what} are computed by PostgreSQL: an in-memory app has no {what}",
            )
        await self._app.ensure_initialized()
        return self._app.backend

    async def export(self, path: str | Path, *, format: str = "json", **filters: Any) -> int:
        """Write the dead jobs matching `filters` (as `list`, all pages) to `path` as JSON or
        CSV (a header row even when empty); returns how many were written."""
        if format not in ("json", "csv"):
            raise ValueError(f"format must be 'json' or 'csv', got {format!r}")
        rows: builtins.list[dict[str, Any]] = []
        while True:
            page = await self.list(**filters, limit=1000, offset=len(rows))
            rows.extend(page)
            if len(page) < 1000:
                break
        records = [{k: _plain(row[k]) for k in EXPORT_FIELDS} for row in rows]
        if format == "json":
            text = json.dumps(records, indent=2)
        else:
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS)
            writer.writeheader()
            for record in records:
                writer.writerow(
                    {
                        k: json.dumps(v) if isinstance(v, (dict, list)) else v
                        for k, v in record.items()
                    }
                )
            text = out.getvalue()
        Path(path).write_text(text, encoding="utf-8")
        return len(records)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
