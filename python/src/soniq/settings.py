"""Settings: the same `SONIQ_*` environment variables, defaults and ranges as the Rust
runner (runner/src/settings.rs), validated once, with errors that name the variable."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import INVALID_SETTING, SoniqError

EnqueueValidation = Literal["strict", "warn", "none"]
DEFAULT_TASK_NAME_PATTERN = r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*"


def _default_producer_id() -> str:
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    return f"{socket.gethostname() or 'unknown'}:{os.getpid()}:{program}"


@dataclass(frozen=True)
class SoniqSettings:
    """Validated settings. Durations are seconds."""

    database_url: str = "postgresql://postgres@localhost/soniq"
    concurrency: int = 4
    poll_interval: float = 5.0
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 300.0
    shutdown_timeout: float = 30.0
    error_retry_delay: float = 5.0
    cleanup_interval: float = 300.0
    enqueue_validation: EnqueueValidation = "strict"
    producer_id: str = field(default_factory=_default_producer_id)
    task_name_pattern: str = DEFAULT_TASK_NAME_PATTERN
    route_map: Mapping[str, str] = field(default_factory=dict)
    jobs_modules: tuple[str, ...] = ()
    pool_min_size: int = 1
    pool_max_size: int = 20

    def __post_init__(self) -> None:
        _check_text("SONIQ_DATABASE_URL", self.database_url)
        _check_number("SONIQ_CONCURRENCY", self.concurrency, 1, 1000, whole=True)
        _check_number("SONIQ_POLL_INTERVAL", self.poll_interval, 0.1, 60)
        _check_number("SONIQ_HEARTBEAT_INTERVAL", self.heartbeat_interval, 0.1, 60)
        _check_number("SONIQ_HEARTBEAT_TIMEOUT", self.heartbeat_timeout, 1, 7200)
        _check_number("SONIQ_SHUTDOWN_TIMEOUT", self.shutdown_timeout, 0, 3600)
        _check_number("SONIQ_ERROR_RETRY_DELAY", self.error_retry_delay, 0.1, 300)
        _check_number("SONIQ_CLEANUP_INTERVAL", self.cleanup_interval, 10, 3600)
        _check_number("SONIQ_POOL_MIN_SIZE", self.pool_min_size, 0, 100, whole=True)
        _check_number("SONIQ_POOL_MAX_SIZE", self.pool_max_size, 1, 200, whole=True)
        if self.enqueue_validation not in ("strict", "warn", "none"):
            raise _bad(
                "SONIQ_ENQUEUE_VALIDATION must be strict, warn or none, "
                f"got {self.enqueue_validation!r}"
            )
        try:
            re.compile(self.task_name_pattern)
        except re.error as e:
            raise _bad(f"SONIQ_TASK_NAME_PATTERN is not a valid regular expression: {e}") from None
        for prefix, queue in self.route_map.items():
            if not isinstance(queue, str) or not queue:
                raise _bad(
                    "SONIQ_ROUTE_MAP must be a JSON object of prefix to queue name: "
                    f"the queue for {prefix!r} is {queue!r}"
                )
        if self.heartbeat_timeout < 2 * self.heartbeat_interval:
            raise _bad(
                f"SONIQ_HEARTBEAT_TIMEOUT ({self.heartbeat_timeout:g} s) must be at least twice "
                f"SONIQ_HEARTBEAT_INTERVAL ({self.heartbeat_interval:g} s): a worker one "
                "heartbeat late would be presumed dead"
            )
        if self.pool_min_size > self.pool_max_size:
            raise _bad("SONIQ_POOL_MIN_SIZE must not exceed SONIQ_POOL_MAX_SIZE")

    def matches_task_name_pattern(self, name: str) -> bool:
        return re.fullmatch(self.task_name_pattern, name) is not None

    def queue_for(self, task_name: str) -> str | None:
        """The route map's queue for a task registered without one: the longest prefix wins."""
        matches = [p for p in self.route_map if task_name.startswith(p)]
        return self.route_map[max(matches, key=len)] if matches else None

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Any] | None = None,
        environ: Callable[[str], str | None] = os.environ.get,
    ) -> SoniqSettings:
        """Settings from the environment, then `overrides` (keyword names: `concurrency=8`).
        An unknown override is an error that names it."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ(f"SONIQ_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _parse(f.name, raw)
        for name, value in (overrides or {}).items():
            if name not in _FIELD_NAMES:
                raise TypeError(
                    f"unknown Soniq setting {name!r}; known settings: {', '.join(sorted(_FIELD_NAMES))}"
                )
            if value is not None:
                values[name] = value
        if values.get("producer_id") == "auto":
            del values["producer_id"]
        return cls(**values)


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(SoniqSettings))
_WHOLE = {"concurrency", "pool_min_size", "pool_max_size"}
_SECONDS = {
    "poll_interval",
    "heartbeat_interval",
    "heartbeat_timeout",
    "shutdown_timeout",
    "error_retry_delay",
    "cleanup_interval",
}


def _parse(name: str, raw: str) -> Any:
    variable = f"SONIQ_{name.upper()}"
    text = raw.strip()
    if name in _WHOLE:
        try:
            return int(text)
        except ValueError:
            raise _bad(f"{variable} must be a whole number, got {raw!r}") from None
    if name in _SECONDS:
        try:
            return float(text)
        except ValueError:
            raise _bad(f"{variable} must be a number of seconds, got {raw!r}") from None
    if name == "enqueue_validation":
        return text.lower()
    if name == "route_map":
        try:
            parsed = json.loads(text)
        except ValueError as e:
            raise _bad(f"{variable} must be a JSON object of prefix to queue name: {e}") from None
        if not isinstance(parsed, dict):
            raise _bad(f"{variable} must be a JSON object of prefix to queue name, got {raw!r}")
        return parsed
    if name == "jobs_modules":
        return tuple(m.strip() for m in text.split(",") if m.strip())
    return raw


def _check_text(variable: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise _bad(f"{variable} must not be empty")


def _check_number(
    variable: str, value: object, low: float, high: float, *, whole: bool = False
) -> None:
    kinds: tuple[type, ...] = (int,) if whole else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and low <= value <= high  # type: ignore[operator]
    if not ok:
        kind = "a whole number" if whole else "a number of seconds"
        raise _bad(f"{variable} must be {kind} from {low:g} to {high:g}, got {value!r}")


def _bad(message: str) -> SoniqError:
    return SoniqError(INVALID_SETTING, message)


def mask_url(url: str) -> str:
    """The URL with its password replaced by `***`."""
    return re.sub(r"^([a-z]+://[^:/@]+):[^@/]*@", r"\1:***@", url)
