//! The dashboard's `/metrics`: the queues' gauges from the latest count, and the control
//! plane's and workers' from the database at the scrape.

use super::counts::Counts;
use super::Liveness;
use prometheus::{Gauge, GaugeVec, IntGaugeVec, Opts, Registry, TextEncoder};
use std::time::SystemTime;

pub fn page(counts: &Counts, liveness: &Liveness) -> prometheus::Result<String> {
    let registry = Registry::new();
    let jobs = IntGaugeVec::new(
        Opts::new(
            "soniq_queue_jobs",
            "Jobs by queue and state, as of the latest count",
        ),
        &["queue", "state"],
    )?;
    let oldest = GaugeVec::new(
        Opts::new(
            "soniq_queue_oldest_runnable_seconds",
            "How long the queue's longest-waiting runnable job has waited (0: none waits)",
        ),
        &["queue"],
    )?;
    let paused = IntGaugeVec::new(
        Opts::new("soniq_queue_paused", "1 while paused"),
        &["queue"],
    )?;
    let count_age = Gauge::new(
        "soniq_queue_counts_age_seconds",
        "How old the queue counts are",
    )?;
    let lag = GaugeVec::new(
        Opts::new(
            "soniq_control_plane_lag_seconds",
            "How long since each round of the control plane last ran",
        ),
        &["subsystem"],
    )?;
    let alive = IntGaugeVec::new(
        Opts::new(
            "soniq_control_plane_alive",
            "1 while the round runs on time",
        ),
        &["subsystem"],
    )?;
    let workers = IntGaugeVec::new(
        Opts::new(
            "soniq_workers",
            "Registered workers, heard from within the heartbeat timeout (alive) or not (stale)",
        ),
        &["state"],
    )?;
    for collector in [&jobs, &paused, &alive, &workers] {
        registry.register(Box::new(collector.clone()))?;
    }
    for collector in [&oldest, &lag] {
        registry.register(Box::new(collector.clone()))?;
    }
    if let Some(counted) = &counts.latest {
        // Only once counted: before the first count there is no age to tell.
        registry.register(Box::new(count_age.clone()))?;
        for q in &counted.queues {
            let states = [
                ("runnable", q.runnable),
                ("scheduled", q.scheduled),
                ("waiting", q.waiting),
                ("processing", q.processing),
                ("done", q.done),
                ("cancelled", q.cancelled),
                ("dead", q.dead),
            ];
            for (state, n) in states {
                jobs.with_label_values(&[q.queue.as_str(), state]).set(n);
            }
            oldest
                .with_label_values(&[q.queue.as_str()])
                .set(q.oldest_runnable_seconds.unwrap_or(0.0));
            paused
                .with_label_values(&[q.queue.as_str()])
                .set(i64::from(q.paused));
        }
        let age = SystemTime::now()
            .duration_since(counted.at)
            .unwrap_or_default();
        count_age.set(age.as_secs_f64());
    }
    for round in &liveness.health {
        lag.with_label_values(&[round.subsystem.as_str()])
            .set(round.lag_seconds);
        alive
            .with_label_values(&[round.subsystem.as_str()])
            .set(i64::from(round.alive));
    }
    workers
        .with_label_values(&["alive"])
        .set(liveness.workers_alive);
    workers
        .with_label_values(&["stale"])
        .set(liveness.workers_stale);
    TextEncoder::new().encode_to_string(&registry.gather())
}
