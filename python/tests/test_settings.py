"""Settings: the runner's SONIQ_* variables, ranges and messages."""

from __future__ import annotations

import pytest

from soniq import Soniq, SoniqError, SoniqSettings
from soniq.settings import mask_url


def load(**env: str) -> SoniqSettings:
    return SoniqSettings.load(environ={f"SONIQ_{k}": v for k, v in env.items()}.get)


def test_defaults_and_every_variable() -> None:
    s = load()
    assert (s.database_url, s.concurrency, s.poll_interval, s.shutdown_timeout) == (
        "postgresql://postgres@localhost/soniq",
        4,
        5.0,
        30.0,
    )
    assert s.enqueue_validation == "strict" and s.producer_id.count(":") == 2
    s = load(DATABASE_URL="postgres://x@h/db", CONCURRENCY="16", POLL_INTERVAL="0.5", HEARTBEAT_INTERVAL="2",
             HEARTBEAT_TIMEOUT="60", SHUTDOWN_TIMEOUT="0", ERROR_RETRY_DELAY="1", CLEANUP_INTERVAL="30",
             ENQUEUE_VALIDATION="WARN", PRODUCER_ID="web-1", ROUTE_MAP='{"billing.": "billing", "billing.eu.": "eu"}',
             JOBS_MODULES="a, b")  # fmt: skip
    assert (
        s.concurrency,
        s.poll_interval,
        s.shutdown_timeout,
        s.enqueue_validation,
        s.producer_id,
    ) == (16, 0.5, 0.0, "warn", "web-1")
    assert (
        s.queue_for("billing.eu.send") == "eu"
        and s.queue_for("billing.x") == "billing"
        and s.queue_for("x") is None
    )
    assert s.jobs_modules == ("a", "b")


@pytest.mark.parametrize(
    "env, message",
    [
        ({"CONCURRENCY": "0"}, "SONIQ_CONCURRENCY must be a whole number from 1 to 1000, got 0"),
        ({"CONCURRENCY": "many"}, "SONIQ_CONCURRENCY must be a whole number, got 'many'"),
        ({"POLL_INTERVAL": "fast"}, "SONIQ_POLL_INTERVAL must be a number of seconds"),
        ({"CLEANUP_INTERVAL": "5"}, "from 10 to 3600"),
        ({"ENQUEUE_VALIDATION": "loose"}, "must be strict, warn or none"),
        ({"DATABASE_URL": " "}, "SONIQ_DATABASE_URL must not be empty"),
        ({"TASK_NAME_PATTERN": "("}, "not a valid regular expression"),
        ({"ROUTE_MAP": "[1]"}, "SONIQ_ROUTE_MAP must be a JSON object"),
        ({"ROUTE_MAP": '{"billing.": 7}'}, "the queue for 'billing.' is 7"),
        (
            {"HEARTBEAT_INTERVAL": "5", "HEARTBEAT_TIMEOUT": "5"},
            "must be at least twice SONIQ_HEARTBEAT_INTERVAL",
        ),
    ],
)
def test_bad_values_are_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(SoniqError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load(**env)


def test_keyword_settings_override_and_unknown_ones_are_errors(monkeypatch) -> None:
    monkeypatch.setenv("SONIQ_CONCURRENCY", "3")
    assert Soniq("postgresql://h/db").settings.concurrency == 3
    assert Soniq("postgresql://h/db", concurrency=9).settings.concurrency == 9
    with pytest.raises(TypeError, match="unknown Soniq setting 'concurency'"):
        Soniq(concurency=9)
    with pytest.raises(ValueError, match="Unknown backend"):
        Soniq(backend="sqlite")


def test_passwords_are_masked() -> None:
    assert mask_url("postgres://app:s3cret@db:5432/x") == "postgres://app:***@db:5432/x"
    assert mask_url("postgres://app@db/x") == "postgres://app@db/x"
