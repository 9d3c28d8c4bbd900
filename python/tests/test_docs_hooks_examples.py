"""The hooks page's practical examples, each changed only in its imports and database URL:
structured logging, Prometheus metrics, Slack alerting on dead-letter (to a loopback
webhook), OpenTelemetry tracing (to an in-memory span exporter)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from soniq import Soniq


async def run_page_jobs(app: Soniq, uid: str, retries: int = 0) -> tuple[str, str]:
    """One job that succeeds and one that fails every attempt, run to the end."""

    @app.job(name=f"{uid}.ok", queue=uid)
    async def ok() -> None: ...

    @app.job(name=f"{uid}.bad", queue=uid, retries=retries, retry_delay=0)
    async def bad() -> None:
        raise RuntimeError("card declined")

    good_id, bad_id = await app.enqueue(ok), await app.enqueue(bad)
    await app.run_worker(run_once=True, queues=[uid])
    assert (await app.get_job(good_id))["status"] == "done"
    assert (await app.get_job(bad_id))["status"] == "dead_letter"
    return good_id, bad_id


async def test_structured_logging(database_url, uid, caplog) -> None:
    app = Soniq(database_url=database_url)
    logger = logging.getLogger("soniq.hooks")

    @app.before_job
    async def structured_log_start(job_name, job_id, attempt):
        logger.info(json.dumps({
            "event": "job_started", "job_name": job_name, "job_id": job_id, "attempt": attempt,
        }))  # fmt: skip

    @app.after_job
    async def structured_log_done(job_name, job_id, duration_ms):
        logger.info(json.dumps({
            "event": "job_completed", "job_name": job_name, "job_id": job_id, "duration_ms": duration_ms,
        }))  # fmt: skip

    caplog.set_level(logging.INFO, logger="soniq.hooks")
    good_id, bad_id = await run_page_jobs(app, uid)
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "soniq.hooks"]
    by = {(e["event"], e["job_id"]): e for e in events}
    assert by["job_started", good_id]["job_name"] == f"{uid}.ok"
    assert by["job_started", bad_id]["attempt"] == 1
    assert by["job_completed", good_id]["duration_ms"] >= 0
    assert ("job_completed", bad_id) not in by, "after_job runs only for a success"
    await app.close()


async def test_prometheus_metrics(database_url, uid) -> None:
    app = Soniq(database_url=database_url)
    from prometheus_client import REGISTRY, Counter, Histogram

    jobs_started = Counter("soniq_jobs_started", "Jobs started", ["job_name"])
    jobs_completed = Histogram("soniq_jobs_duration_ms", "Job duration", ["job_name"])
    jobs_failed = Counter("soniq_jobs_failed", "Jobs failed", ["job_name"])

    @app.before_job
    async def track_start(job_name, job_id, attempt):
        jobs_started.labels(job_name=job_name).inc()

    @app.after_job
    async def track_duration(job_name, job_id, duration_ms):
        jobs_completed.labels(job_name=job_name).observe(duration_ms)

    @app.on_error
    async def track_failure(job_name, job_id, error, attempt):
        jobs_failed.labels(job_name=job_name).inc()

    await run_page_jobs(app, uid, retries=1)

    def sample(name: str, task: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"job_name": f"{uid}.{task}"})

    assert sample("soniq_jobs_started_total", "ok") == 1
    assert sample("soniq_jobs_started_total", "bad") == 2, "two attempts"
    assert sample("soniq_jobs_duration_ms_count", "ok") == 1
    assert sample("soniq_jobs_duration_ms_count", "bad") is None
    assert sample("soniq_jobs_failed_total", "bad") == 2
    assert sample("soniq_jobs_failed_total", "ok") is None
    await app.close()


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A loopback HTTP server standing in for Slack's webhook: its URL and what it received."""
    received: list[dict[str, str]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None: ...

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/services/T000/B000", received
    server.shutdown()
    server.server_close()


async def test_slack_alerting_on_dead_letter(database_url, uid, webhook) -> None:
    app = Soniq(database_url=database_url)
    webhook_url, received = webhook

    async def send_slack_message(text: str) -> None:
        async with httpx.AsyncClient(trust_env=False) as client:
            (await client.post(webhook_url, json={"text": text})).raise_for_status()

    @app.on_error
    async def alert_on_final_failure(job_name, job_id, error, attempt):
        # Look up the job's max_attempts from the registry
        job_meta = app._get_job_registry().get_job(job_name)
        if job_meta and attempt >= job_meta["max_retries"] + 1:
            await send_slack_message(
                f"Job {job_name} ({job_id}) moved to dead-letter queue: {error}"
            )

    _, bad_id = await run_page_jobs(app, uid, retries=1)
    assert received == [
        {
            "text": f"Job {uid}.bad ({bad_id}) moved to dead-letter queue: RuntimeError: card declined"
        }
    ], "one alert, on the last attempt only"
    assert [d["id"] for d in await app.dead_letter.list(queue=uid)] == [bad_id]
    await app.close()


async def test_opentelemetry_tracing(database_url, uid) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = Soniq(database_url=database_url)

    from opentelemetry import trace

    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("soniq")
    _spans = {}

    @app.before_job
    async def start_span(job_name, job_id, attempt):
        span = tracer.start_span(f"job:{job_name}", attributes={
            "job.id": job_id, "job.attempt": attempt,
        })  # fmt: skip
        _spans[job_id] = span

    @app.after_job
    async def end_span_success(job_name, job_id, duration_ms):
        span = _spans.pop(job_id, None)
        if span:
            span.set_attribute("job.duration_ms", duration_ms)
            span.end()

    @app.on_error
    async def end_span_error(job_name, job_id, error, attempt):
        span = _spans.pop(job_id, None)
        if span:
            span.set_status(trace.StatusCode.ERROR, error)
            span.end()

    good_id, bad_id = await run_page_jobs(app, uid)
    spans = {s.attributes["job.id"]: s for s in exporter.get_finished_spans()}
    good, bad = spans[good_id], spans[bad_id]
    assert good.name == f"job:{uid}.ok" and good.status.status_code == trace.StatusCode.UNSET
    assert good.attributes["job.attempt"] == 1 and good.attributes["job.duration_ms"] >= 0
    assert bad.name == f"job:{uid}.bad" and bad.status.status_code == trace.StatusCode.ERROR
    assert bad.status.description == "RuntimeError: card declined"
    assert _spans == {}, "every span ended"
    await app.close()
