//! The `soniq` binary against the real extension: every command, its flags and its
//! bad-input paths, exit status and output checked.
#![cfg(all(feature = "e2e", feature = "cli"))]

mod common;

use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

fn from(output: Output) -> Run {
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn soniq_with(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_soniq"));
    // Heartbeats well inside the test cluster's 2 s timeout.
    command
        .args(args)
        .env("SONIQ_DATABASE_URL", database_url())
        .env("SONIQ_HEARTBEAT_INTERVAL", "0.5")
        .env("SONIQ_POLL_INTERVAL", "0.2")
        .env("NO_COLOR", "1");
    for (name, value) in env {
        command.env(name, value);
    }
    from(command.output().unwrap())
}

fn soniq(args: &[&str]) -> Run {
    soniq_with(args, &[])
}

/// The repository's examples folder (python and node handlers, jobs.toml).
fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn jobs_module() -> String {
    examples().join("jobs.toml").to_string_lossy().into_owned()
}

/// Publish a module's task options (a worker publishes them at start), as a deployment would
/// before producers enqueue: a job takes its task's options when it is enqueued.
/// A jobs module (its path) of one command handler in `queue`, running `script` with `sh -c`,
/// whose jobs are not retried.
fn doomed_task_module(queue: &str, task: &str, script: &str) -> String {
    let module = std::env::temp_dir().join(format!("{queue}.toml"));
    std::fs::write(
        &module,
        format!("[tasks.\"{task}\"]\ncommand = [\"sh\", \"-c\", \"{script}\"]\nqueue = \"{queue}\"\nretries = 0\n"),
    )
    .unwrap();
    module.to_string_lossy().into_owned()
}

fn publish(module: &str) {
    soniq(&[
        "worker",
        "--run-once",
        "--queues",
        &unique("nothing_here"),
        "--jobs-modules",
        module,
    ])
    .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_creates_the_database_and_installs_the_extension_idempotently() {
    let name = unique("setup");
    let base = database_url();
    let url = format!("{}/{name}", base.rsplit_once('/').unwrap().0);
    let first = soniq_with(&["setup", "--database-url", &url], &[]).ok();
    assert!(
        first.stdout.contains(&format!("created database {name}")),
        "{}",
        first.stdout
    );
    assert!(
        first.stdout.contains("installed extension soniq"),
        "{}",
        first.stdout
    );
    // The control plane serves soniq_e2e, not this database: setup says so and how to fix it.
    assert!(
        first
            .stdout
            .contains(&format!("soniq.database_name = '{name}'")),
        "{}",
        first.stdout
    );
    let again = soniq_with(&["setup", "--database-url", &url, "--json"], &[])
        .ok()
        .json();
    let client = sql().await;
    let installed: String = client
        .query_one(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'soniq'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        again["done"][0],
        format!("extension soniq {installed} is up to date")
    );
    assert_eq!(again["database"], name.as_str());
    let served = soniq(&["setup"]).ok();
    assert!(
        served.stdout.contains("control plane: ok"),
        "{}",
        served.stdout
    );
    client
        .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
}

#[test]
fn passwords_are_masked_and_flags_beat_the_environment() {
    let base = database_url();
    let with_password = base.replacen("postgres@", "postgres:hunter2@", 1);
    let run = soniq_with(
        &["status", "--database-url", &with_password],
        &[("SONIQ_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")],
    )
    .ok();
    assert!(run.stdout.contains("postgres:***@"), "{}", run.stdout);
    assert!(!run.stdout.contains("hunter2"));
    let json = soniq(&["status", "--json"]).ok().json();
    assert!(json["jobs"]["total"].as_i64().is_some());
    assert_eq!(json["control_plane"][0]["subsystem"], "control_plane");
    assert_eq!(json["control_plane"][0]["alive"], true);
}

#[test]
fn invalid_settings_and_flags_exit_2_naming_the_problem() {
    let run = soniq_with(&["status"], &[("SONIQ_CONCURRENCY", "0")]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("SONIQ_CONCURRENCY must be a whole number from 1 to 1000"),
        "{}",
        run.stderr
    );
    let run = soniq_with(&["status"], &[("SONIQ_POLL_INTERVAL", "soon")]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("SONIQ_POLL_INTERVAL"), "{}", run.stderr);
    // A worker one heartbeat late must not be presumed dead (by its own maintenance too).
    let run = soniq_with(
        &["status"],
        &[
            ("SONIQ_HEARTBEAT_INTERVAL", "5"),
            ("SONIQ_HEARTBEAT_TIMEOUT", "5"),
        ],
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains(
            "SONIQ_HEARTBEAT_TIMEOUT (5 s) must be at least twice SONIQ_HEARTBEAT_INTERVAL (5 s)"
        ),
        "{}",
        run.stderr
    );
    // Times no duration holds are usage errors, not panics.
    for args in [
        &["enqueue", "cli.task", "--at", "+1e300"][..],
        &["dead-letter", "list", "--since-hours", "-1"],
        &["dead-letter", "cleanup", "--days", "1e300"],
        &[
            "schedule", "add", "x.y", "--task", "x.y", "--every", "1e300",
        ],
    ] {
        let run = soniq(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
    }
    // A dead-letter reason that does not exist is refused, not a filter that matches nothing.
    let run = soniq(&["dead-letter", "list", "--reason", "max_retries"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("unknown dead-letter reason \"max_retries\": one of max_retries_exceeded,"),
        "{}",
        run.stderr
    );
    assert_eq!(soniq(&["no-such-command"]).code, 2);
    assert_eq!(soniq(&["worker", "--concurrency", "0"]).code, 2);
    assert_eq!(soniq(&["jobs", "list", "--status", "failed"]).code, 2);
    let run = soniq(&["worker", "--run-once"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("SONIQ_JOBS_MODULES"), "{}", run.stderr);
    let run = soniq(&[
        "worker",
        "--run-once",
        "--jobs-modules",
        "/no/such/module.toml",
    ]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("cannot read jobs module"),
        "{}",
        run.stderr
    );
}

#[test]
fn enqueue_inspect_cancel_and_list() {
    let queue = unique("cli_jobs");
    let id = soniq(&[
        "enqueue",
        "cli.task",
        "--args",
        r#"{"n": 1}"#,
        "--queue",
        &queue,
        "--priority",
        "7",
    ])
    .ok()
    .stdout;
    let id = id.trim();
    let job = soniq(&["inspect", id, "--json"]).ok().json();
    assert_eq!(
        (
            job["status"].as_str(),
            job["priority"].as_i64(),
            job["args"]["n"].as_i64()
        ),
        (Some("queued"), Some(7), Some(1))
    );
    let human = soniq(&["inspect", id]).ok().stdout;
    assert!(
        human.contains("cli.task") && human.contains("queued"),
        "{human}"
    );

    let later = soniq(&[
        "enqueue", "cli.task", "--queue", &queue, "--at", "+3600", "--json",
    ])
    .ok()
    .json();
    let later = soniq(&["inspect", later["id"].as_str().unwrap(), "--json"])
        .ok()
        .json();
    assert!(later["scheduled_at"].as_str().is_some());
    soniq(&[
        "enqueue",
        "cli.task",
        "--queue",
        &queue,
        "--at",
        "2030-01-01T09:00:00Z",
    ])
    .ok();
    // Unique jobs match on task and args (not queue): args of this test's own.
    let args = format!(r#"{{"queue": "{queue}"}}"#);
    let unique_job = || {
        soniq(&[
            "enqueue",
            "cli.unique",
            "--queue",
            &queue,
            "--unique",
            "--args",
            &args,
        ])
        .ok()
        .stdout
    };
    let (a, b) = (unique_job(), unique_job());
    assert_eq!(a, b, "a unique duplicate returns the queued job");
    let k1 = soniq(&[
        "enqueue",
        "cli.keyed",
        "--queue",
        &queue,
        "--dedup-key",
        &queue,
    ])
    .ok()
    .stdout;
    let k2 = soniq(&[
        "enqueue",
        "cli.other",
        "--queue",
        &queue,
        "--dedup-key",
        &queue,
    ])
    .ok()
    .stdout;
    assert_eq!(k1, k2);

    let listed = soniq(&[
        "jobs", "list", "--queue", &queue, "--status", "queued", "--json",
    ])
    .ok()
    .json();
    assert_eq!(listed.as_array().unwrap().len(), 5);
    let table = soniq(&[
        "jobs", "list", "--queue", &queue, "--limit", "2", "--offset", "1",
    ])
    .ok()
    .stdout;
    assert_eq!(table.lines().count(), 3, "a header and two rows:\n{table}");

    let cancelled = soniq(&["cancel", id]).ok();
    assert!(cancelled.stdout.contains("cancelled"));
    let again = soniq(&["cancel", id]);
    assert_eq!(again.code, 1, "a finished job cannot be cancelled");

    // Bad input: exit 2 for what the command checks, 1 with the database's message otherwise.
    assert_eq!(soniq(&["enqueue", "cli.task", "--args", "[1]"]).code, 2);
    assert_eq!(soniq(&["enqueue", "cli.task", "--args", "{oops"]).code, 2);
    assert_eq!(soniq(&["enqueue", "cli.task", "--at", "tomorrow"]).code, 2);
    let run = soniq(&["enqueue", "cli.task", "--priority", "5000"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("priority must be between 1 and 1000") && run.stderr.contains("22023"),
        "{}",
        run.stderr
    );
    let run = soniq(&["enqueue", "Bad Name"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("SONIQ_TASK_NAME_PATTERN"),
        "{}",
        run.stderr
    );
    let unknown = uuid_text();
    assert_eq!(soniq(&["inspect", &unknown]).code, 1);
    assert_eq!(soniq(&["cancel", &unknown]).code, 1);
    assert_eq!(soniq(&["inspect", "not-a-uuid"]).code, 2);
}

fn uuid_text() -> String {
    "00000000-0000-7000-8000-000000000000".into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_handlers_in_python_and_node_run_jobs_enqueued_from_sql() {
    publish(&jobs_module());
    // A producer in plain SQL, inside its own transaction.
    let client = sql().await;
    client.batch_execute("BEGIN").await.unwrap();
    let enqueue = |task: &'static str, to: &'static str| {
        let client = &client;
        async move {
            let args = serde_json::json!({ "to": to });
            client
                .query_one(
                    "SELECT soniq.enqueue($1, $2, queue => 'emails')::text",
                    &[&task, &args],
                )
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    let python = enqueue("emails.send_welcome", "ada@example.com").await;
    let node = enqueue("emails.send_welcome_node", "bob@example.com").await;
    let bounce = enqueue("emails.send_welcome", "x@bounce.example").await;
    let busy = enqueue("emails.send_welcome", "y@busy.example").await;
    let broken = enqueue("emails.send_welcome_node", "z@broken.example").await;
    client.batch_execute("COMMIT").await.unwrap();

    // The module from SONIQ_JOBS_MODULES, two at a time.
    let run = soniq_with(
        &[
            "worker",
            "--run-once",
            "--queues",
            "emails",
            "--concurrency",
            "2",
        ],
        &[("SONIQ_JOBS_MODULES", &jobs_module())],
    )
    .ok();
    assert!(run.stderr.contains("concurrency=2"), "{}", run.stderr);
    assert!(run.stdout.contains("worker stopped"), "{}", run.stdout);

    let done = soniq(&["inspect", &python, "--json"]).ok().json();
    assert_eq!(done["status"], "done");
    assert_eq!(done["result"]["sent_to"], "ada@example.com");
    assert_eq!(done["result"]["language"], "python");
    let done = soniq(&["inspect", &node, "--json"]).ok().json();
    assert_eq!(
        (done["status"].as_str(), done["result"]["language"].as_str()),
        (Some("done"), Some("node"))
    );
    // Exit 65: straight to the dead letter.
    let dead = soniq(&["inspect", &bounce, "--json"]).ok().json();
    assert_eq!(
        (dead["status"].as_str(), dead["dead_letter_reason"].as_str()),
        (Some("dead"), Some("permanent_failure"))
    );
    assert_eq!(dead["last_error"], "x@bounce.example bounces: giving up");
    // Exit 75: later, no attempt used.
    let snoozed = soniq(&["inspect", &busy, "--json"]).ok().json();
    assert_eq!(
        (snoozed["status"].as_str(), snoozed["attempts"].as_i64()),
        (Some("queued"), Some(0))
    );
    // Anything else: a failed attempt with stderr's tail as the error, retried, then dead.
    let failed = soniq(&["inspect", &broken, "--json"]).ok().json();
    assert_eq!(failed["status"], "dead");
    assert_eq!(
        failed["last_error"],
        "exit status 1: SMTP 451 for z@broken.example"
    );
    assert_eq!(failed["attempts"], 2);
}

#[test]
fn a_command_past_its_timeout_is_killed_with_its_process_group() {
    let dir = std::env::temp_dir().join(unique("timeout_module"));
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("grandchild.pid");
    let queue = unique("slow_cmd");
    let module = dir.join("slow.toml");
    std::fs::write(
        &module,
        format!(
            "[tasks.\"slow.command\"]\ncommand = [\"sh\", \"-c\", \"sleep 60 & echo $! > {}; wait\"]\nqueue = \"{queue}\"\ntimeout = 1\nretries = 0\n",
            pid_file.display()
        ),
    )
    .unwrap();
    publish(&module.to_string_lossy());
    let id = soniq(&["enqueue", "slow.command", "--queue", &queue])
        .ok()
        .stdout;
    let started = Instant::now();
    soniq(&[
        "worker",
        "--run-once",
        "--queues",
        &queue,
        "--jobs-modules",
        &module.to_string_lossy(),
    ])
    .ok();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the worker waited for the command"
    );
    let job = soniq(&["inspect", id.trim(), "--json"]).ok().json();
    assert_eq!(
        (job["status"].as_str(), job["dead_letter_reason"].as_str()),
        (Some("dead"), Some("timeout"))
    );
    let grandchild = std::fs::read_to_string(&pid_file).unwrap();
    // Gone, or a zombie waiting for init to reap it: either way no longer running.
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", grandchild.trim())).unwrap_or_default();
    let running = status
        .lines()
        .any(|l| l.starts_with("State:") && !l.contains("zombie"));
    assert!(
        !running,
        "the command's own child was killed with its process group:\n{status}"
    );
}

#[test]
fn odd_command_output_has_a_clear_outcome() {
    let dir = std::env::temp_dir().join(unique("odd_module"));
    std::fs::create_dir_all(&dir).unwrap();
    let queue = unique("odd_cmd");
    let module = dir.join("odd.toml");
    let task = |name: &str, script: &str| {
        format!(
            "[tasks.\"odd.{name}\"]\ncommand = [\"sh\", \"-c\", \"{script}\"]\nqueue = \"{queue}\"\nretries = 0\n"
        )
    };
    std::fs::write(
        &module,
        [
            task("not_json", "echo '{not json'"),
            task("binary", "printf 'ok\\\\377\\\\376'"),
            task("huge", "head -c 2000000 /dev/zero | tr '\\\\000' x"),
            task("bad_snooze", "echo '{\\\"snooze\\\": -5}'; exit 75"),
            task(
                "reasoned_snooze",
                "echo '{\\\"snooze\\\": 1e300, \\\"reason\\\": \\\"rate limited\\\"}'; exit 75",
            ),
        ]
        .concat(),
    )
    .unwrap();
    publish(&module.to_string_lossy());
    let enqueue = |name: &str| {
        soniq(&["enqueue", &format!("odd.{name}"), "--queue", &queue])
            .ok()
            .stdout
            .trim()
            .to_string()
    };
    let (not_json, binary, huge, bad_snooze, reasoned_snooze) = (
        enqueue("not_json"),
        enqueue("binary"),
        enqueue("huge"),
        enqueue("bad_snooze"),
        enqueue("reasoned_snooze"),
    );
    soniq(&[
        "worker",
        "--run-once",
        "--queues",
        &queue,
        "--jobs-modules",
        &module.to_string_lossy(),
    ])
    .ok();
    let inspect = |id: &str| soniq(&["inspect", id, "--json"]).ok().json();
    let job = inspect(&not_json);
    assert_eq!(
        (job["status"].as_str(), job["result"].as_str()),
        (Some("done"), Some("{not json"))
    );
    let job = inspect(&binary);
    assert_eq!(
        (job["status"].as_str(), job["result"].as_str()),
        (Some("done"), Some("ok\u{fffd}\u{fffd}"))
    );
    let job = inspect(&huge);
    assert_eq!(job["status"], "dead", "{job}");
    assert!(
        job["last_error"]
            .as_str()
            .unwrap()
            .contains("2000000 bytes to stdout"),
        "{job}"
    );
    // A snooze of a negative time is the default snooze: still waiting, no attempt used.
    let job = inspect(&bad_snooze);
    assert_eq!(
        (job["status"].as_str(), job["attempts"].as_i64()),
        (Some("queued"), Some(0)),
        "{job}"
    );
    soniq(&["cancel", &bad_snooze]).ok();
    // A snooze with a reason keeps it; one longer than any Duration waits the longest, 30 days.
    let job = inspect(&reasoned_snooze);
    assert_eq!(
        (
            job["status"].as_str(),
            job["attempts"].as_i64(),
            job["last_error"].as_str()
        ),
        (Some("queued"), Some(0), Some("snoozed: rate limited")),
        "{job}"
    );
    soniq(&["cancel", &reasoned_snooze]).ok();
}

#[test]
fn dead_letter_commands() {
    let queue = unique("cli_dlq");
    let module = doomed_task_module(&queue, "cli.doomed", "echo doomed >&2; exit 3");
    publish(&module);
    for n in 0..6 {
        soniq(&[
            "enqueue",
            "cli.doomed",
            "--queue",
            &queue,
            "--args",
            &format!(r#"{{"n": {n}}}"#),
        ])
        .ok();
    }
    soniq(&[
        "worker",
        "--run-once",
        "--queues",
        &queue,
        "--jobs-modules",
        &module,
    ])
    .ok();

    let listed = soniq(&["dead-letter", "list", "--queue", &queue, "--json"])
        .ok()
        .json();
    let ids: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 6);
    assert_eq!(listed[0]["reason"], "max_retries_exceeded");
    let table = soniq(&[
        "dead-letter",
        "list",
        "--queue",
        &queue,
        "--reason",
        "max_retries_exceeded",
    ])
    .ok()
    .stdout;
    assert_eq!(table.lines().count(), 7);
    let shown = soniq(&["dead-letter", "show", &ids[0]]).ok().stdout;
    assert!(shown.contains("exit status 3: doomed"), "{shown}");

    // Bulk actions on 5 or more need --yes (standard input is not a terminal here).
    let refused = soniq(&["dead-letter", "replay", "--all", "--queue", &queue]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("without --yes"),
        "{}",
        refused.stderr
    );
    let dry = soniq(&[
        "dead-letter",
        "replay",
        "--all",
        "--queue",
        &queue,
        "--dry-run",
    ])
    .ok();
    assert!(
        dry.stdout.contains("would replay 6 dead jobs"),
        "{}",
        dry.stdout
    );
    let one = soniq(&[
        "dead-letter",
        "replay",
        &ids[0],
        "--to-queue",
        &format!("{queue}_again"),
    ])
    .ok();
    assert!(
        one.stdout.starts_with(&format!("replayed {}", ids[0])),
        "{}",
        one.stdout
    );
    // --all is idempotent: the one replayed above is skipped, and a second run replays none.
    let all = soniq(&["dead-letter", "replay", "--all", "--queue", &queue, "--yes"]).ok();
    let replayed_lines = |out: &str| out.lines().filter(|l| l.starts_with("replayed ")).count();
    assert_eq!(replayed_lines(&all.stdout), 5, "{}", all.stdout);
    assert!(
        all.stdout.contains("skipped 1 dead jobs replayed before"),
        "{}",
        all.stdout
    );
    let twice = soniq(&["dead-letter", "replay", "--all", "--queue", &queue, "--yes"]).ok();
    assert_eq!(replayed_lines(&twice.stdout), 0, "{}", twice.stdout);
    assert!(twice.stdout.contains("skipped 6"), "{}", twice.stdout);
    let again = soniq(&[
        "dead-letter",
        "replay",
        "--all",
        "--again",
        "--queue",
        &queue,
        "--yes",
    ])
    .ok();
    assert_eq!(replayed_lines(&again.stdout), 6, "{}", again.stdout);
    let replayed = soniq(&[
        "dead-letter",
        "list",
        "--queue",
        &queue,
        "--replayed",
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(replayed.as_array().unwrap().len(), 6);

    let recent = soniq(&[
        "dead-letter",
        "list",
        "--queue",
        &queue,
        "--task",
        "cli.doomed",
        "--since-hours",
        "1",
        "--limit",
        "2",
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(recent.as_array().unwrap().len(), 2, "--limit");
    let never = soniq(&[
        "dead-letter",
        "list",
        "--queue",
        &queue,
        "--not-replayed",
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(never.as_array().unwrap().len(), 0, "all were replayed");
    let kept = soniq(&[
        "dead-letter",
        "replay",
        &ids[2],
        "--keep-attempts",
        "--max-attempts",
        "5",
        "--priority",
        "3",
    ])
    .ok();
    let new_id = kept.stdout.trim().rsplit(' ').next().unwrap().to_string();
    let new_job = soniq(&["inspect", &new_id, "--json"]).ok().json();
    assert_eq!(
        (
            new_job["attempts"].as_i64(),
            new_job["max_attempts"].as_i64(),
            new_job["priority"].as_i64()
        ),
        (Some(1), Some(5), Some(3))
    );
    let stats = soniq(&["dead-letter", "stats", "--hours", "1", "--json"])
        .ok()
        .json();
    assert!(stats["by_queue"][&queue].as_i64() == Some(6), "{stats}");
    assert_eq!(soniq(&["dead-letter", "stats", "--hours", "-1"]).code, 2);

    let csv = soniq(&["dead-letter", "export", "--queue", &queue])
        .ok()
        .stdout;
    assert!(csv.starts_with("id,task_name,queue,reason"));
    assert_eq!(csv.lines().count(), 7);
    let file = std::env::temp_dir().join(format!("{queue}.json"));
    soniq(&[
        "dead-letter",
        "export",
        "--queue",
        &queue,
        "--format",
        "json",
        "--output",
        &file.to_string_lossy(),
    ])
    .ok();
    let exported: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(exported.as_array().unwrap().len(), 6);

    let kept = soniq(&["dead-letter", "cleanup", "--days", "30"]).ok();
    assert!(
        kept.stdout
            .starts_with("deleted 0 dead jobs older than 30 days"),
        "{}",
        kept.stdout
    );
    assert_eq!(soniq(&["dead-letter", "cleanup", "--days", "-1"]).code, 2);
    let cleanup = soniq(&["dead-letter", "cleanup", "--days", "30", "--dry-run"]).ok();
    assert!(
        cleanup.stdout.starts_with("would delete"),
        "{}",
        cleanup.stdout
    );
    soniq(&["dead-letter", "delete", &ids[1]]).ok();
    assert_eq!(soniq(&["dead-letter", "show", &ids[1]]).code, 1);
    assert_eq!(soniq(&["dead-letter", "delete"]).code, 2, "ids or --all");
    let deleted = soniq(&["dead-letter", "delete", "--all", "--queue", &queue, "--yes"]).ok();
    assert_eq!(deleted.stdout.lines().count(), 5);
    assert_eq!(
        soniq(&["dead-letter", "delete", &ids[1]]).code,
        1,
        "an unknown dead job"
    );
}

#[test]
fn schedule_commands() {
    let name = unique("cli_schedule");
    let added = soniq(&[
        "schedule",
        "add",
        &name,
        "--task",
        "reports.build",
        "--cron",
        "0 9 * * 1-5",
        "--tz",
        "Europe/Berlin",
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(
        (added["cron"].as_str(), added["time_zone"].as_str()),
        (Some("0 9 * * 1-5"), Some("Europe/Berlin"))
    );
    let next = soniq(&["schedule", "next", &name, "--count", "3", "--json"])
        .ok()
        .json();
    let times = next.as_array().unwrap();
    assert_eq!(times.len(), 3);
    assert!(
        times
            .iter()
            .all(|t| t.as_str().unwrap().ends_with("08:00:00Z")),
        "09:00 in Berlin in winter: {next}"
    );
    let listed = soniq(&["schedule", "list"]).ok().stdout;
    assert!(
        listed.contains(&name) && listed.contains("enabled"),
        "{listed}"
    );
    assert!(soniq(&["schedule", "pause", &name])
        .ok()
        .stdout
        .contains("paused"));
    assert!(soniq(&["schedule", "pause", &name])
        .ok()
        .stdout
        .contains("already paused"));
    let paused = soniq(&["schedule", "list", "--paused", "--json"])
        .ok()
        .json();
    assert!(paused
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == name.as_str()));
    assert!(soniq(&["schedule", "next", &name])
        .ok()
        .stdout
        .contains("is paused"));
    assert!(soniq(&["schedule", "resume", &name])
        .ok()
        .stdout
        .contains("resumed"));
    let every = unique("cli_every");
    let added = soniq(&[
        "schedule",
        "add",
        &every,
        "--task",
        "metrics.flush",
        "--every",
        "30",
        "--args",
        r#"{"region": "eu"}"#,
        "--queue",
        "metrics",
        "--priority",
        "5",
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(
        (
            added["every_seconds"].as_f64(),
            added["args"]["region"].as_str()
        ),
        (Some(30.0), Some("eu"))
    );
    let next = soniq(&["schedule", "next", &every, "--count", "2", "--json"])
        .ok()
        .json();
    assert_eq!(next.as_array().unwrap().len(), 2);
    // Fire now: a job of the schedule's task in its queue, and one more fire.
    let fired = soniq(&["schedule", "fire", &every, "--json"]).ok().json();
    let job = fired["job_id"].as_str().unwrap().to_string();
    let shown = soniq(&["inspect", &job, "--json"]).ok().json();
    assert_eq!(
        (shown["task_name"].as_str(), shown["queue"].as_str()),
        (Some("metrics.flush"), Some("metrics"))
    );
    assert!(soniq(&["schedule", "fire", &every])
        .ok()
        .stdout
        .starts_with(&format!("fired {every}: job ")));
    soniq(&["schedule", "remove", &every]).ok();
    soniq(&["schedule", "remove", &name]).ok();
    assert_eq!(
        soniq(&["schedule", "remove", &name]).code,
        1,
        "an unknown schedule"
    );
    assert_eq!(
        soniq(&["schedule", "fire", &name]).code,
        1,
        "an unknown schedule"
    );
    assert_eq!(
        soniq(&["schedule", "add", "x.y", "--cron", "61 * * * *"]).code,
        2
    );
    assert_eq!(soniq(&["schedule", "add", "x.y"]).code, 2, "cron or every");
    assert_eq!(soniq(&["schedule", "add", "x.y", "--every", "0"]).code, 2);
    let run = soniq(&[
        "schedule",
        "add",
        "x.y",
        "--cron",
        "* * * * *",
        "--tz",
        "Mars/Olympus",
    ]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("unknown time zone"), "{}", run.stderr);
}

#[test]
fn queue_commands_configure_show_pause_and_resume() {
    let queue = unique("cli_flow");
    let configured = soniq(&[
        "queue",
        "configure",
        &queue,
        "--max-running",
        "8",
        "--rate-limit",
        "100",
        "--rate-period",
        "60",
        "--key-weight",
        "gold=3",
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(
        configured["settings"],
        serde_json::json!({"max_running": 8, "rate_limit": 100, "rate_period": 60, "key_weights": {"gold": 3}})
    );
    let said = soniq(&[
        "queue",
        "configure",
        &queue,
        "--clear",
        "rate_limit",
        "--clear",
        "key_weights",
        "--clear",
        "rate_period",
    ])
    .ok();
    assert!(said.stdout.contains("max_running 8"), "{}", said.stdout);
    assert!(!said.stdout.contains("rate_limit"), "{}", said.stdout);
    let shown = soniq(&["queue", "show", &queue, "--json"]).ok().json();
    let rows = shown.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{shown}");
    assert_eq!(
        (
            rows[0]["settings"]["max_running"].as_i64(),
            rows[0]["running"].as_i64(),
            rows[0]["waiting_for_limit"].as_i64()
        ),
        (Some(8), Some(0), Some(0))
    );
    let status = soniq(&["status", "--json"]).ok().json();
    assert!(
        status["flow_control"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["queue"] == queue.as_str()),
        "{status}"
    );
    let table = soniq(&["queue", "show"]).ok().stdout;
    assert!(
        table.contains(&queue) && table.contains("WAITING FOR LIMIT"),
        "{table}"
    );

    // Bad input: refused with the reason, nothing changed.
    let zero = soniq(&["queue", "configure", &queue, "--max-running", "0"]);
    assert_eq!(zero.code, 1);
    assert!(
        zero.stderr
            .contains("max_running must be a whole number between 1 and 100000"),
        "{}",
        zero.stderr
    );
    let unknown = soniq(&["queue", "configure", &queue, "--clear", "burst"]);
    assert!(
        unknown.stderr.contains("unknown queue setting(s): burst"),
        "{}",
        unknown.stderr
    );
    assert_eq!(
        soniq(&["queue", "configure", &queue]).code,
        2,
        "nothing to change"
    );
    assert_eq!(
        soniq(&["queue", "configure", &queue, "--rate-limit", "5"]).code,
        2,
        "a rate needs a period"
    );
    assert_eq!(
        soniq(&["queue", "configure", &queue, "--key-weight", "gold"]).code,
        2
    );
    let shown = soniq(&["queue", "show", &queue, "--json"]).ok().json();
    assert_eq!(shown[0]["settings"], serde_json::json!({"max_running": 8}));

    assert!(soniq(&["queue", "pause", &queue])
        .ok()
        .stdout
        .contains("paused"));
    assert!(soniq(&["queue", "pause", &queue])
        .ok()
        .stdout
        .contains("was already paused"));
    assert!(soniq(&["queue", "resume", &queue])
        .ok()
        .stdout
        .contains("resumed"));
    soniq(&["queue", "configure", &queue, "--clear", "max_running"]).ok();
    assert!(soniq(&["queue", "show", &queue])
        .ok()
        .stdout
        .contains("no limits"));
}

/// A jobs module with one command that always fails, `retries = 0`, in a queue of its own.
fn failing_module(task: &str, queue: &str) -> String {
    let dir = std::env::temp_dir().join(unique("failing_module"));
    std::fs::create_dir_all(&dir).unwrap();
    let module = dir.join("fail.toml");
    std::fs::write(
        &module,
        format!(
            "[tasks.\"{task}\"]\ncommand = [\"sh\", \"-c\", \"echo 'doomed: no such mailbox' >&2; echo second line >&2; exit 3\"]\nqueue = \"{queue}\"\nretries = 0\n"
        ),
    )
    .unwrap();
    module.to_string_lossy().into_owned()
}

/// The new user's run: a job enqueued by name before any worker published its module (so it
/// took the system defaults: 3 retries, queue `default`), then a worker of that module. The job
/// follows the task's published options (its queue, no retries): one attempt, dead-lettered,
/// and the worker says so on standard error. Returns the job's id and the worker's stderr.
fn fail_once_before_publishing(env: &[(&str, &str)]) -> (String, String, String) {
    let task = format!("log.fail_{}", unique("t").replace('-', "_"));
    let queue = unique("logs");
    let module = failing_module(&task, &queue);
    let id = soniq(&["enqueue", &task]).ok().stdout.trim().to_string();
    let worker = soniq_with(
        &[
            "worker",
            "--run-once",
            "--queues",
            &queue,
            "--jobs-modules",
            &module,
        ],
        env,
    )
    .ok();
    let job = soniq(&["inspect", &id, "--json"]).ok().json();
    assert_eq!(job["status"], "dead", "{job}");
    assert_eq!(job["attempts"], 1, "ran more than once: {job}");
    assert_eq!(job["max_attempts"], 1, "{job}");
    assert!(
        !worker.stderr.contains('\u{1b}'),
        "escape codes without a terminal: {}",
        worker.stderr
    );
    (task, id, worker.stderr)
}

#[test]
fn a_failing_job_enqueued_before_its_worker_runs_once_and_the_failure_is_logged() {
    let (task, id, log) = fail_once_before_publishing(&[]);
    let line = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains(&id))
        .unwrap_or_else(|| panic!("no warn line for job {id}:\n{log}"));
    assert!(line.contains(&task), "{line}");
    assert!(line.contains("doomed: no such mailbox"), "{line}");
    assert!(
        !line.contains("second line"),
        "more than the first line: {line}"
    );
    assert!(line.contains("dead letter"), "{line}");
    assert!(log.contains("worker started"), "{log}");

    // The same as JSON: one object per line, the fields by name.
    let (task, id, log) = fail_once_before_publishing(&[("SONIQ_LOG_FORMAT", "json")]);
    let events: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let failure = events
        .iter()
        .find(|e| e["job_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no event for job {id}: {log}"));
    assert_eq!(failure["level"], "WARN");
    assert_eq!(failure["task"], task.as_str());
    assert_eq!(failure["attempt"], 1);
    assert_eq!(failure["max_attempts"], 1);
    assert_eq!(failure["error"], "exit status 3: doomed: no such mailbox");
    assert!(failure["duration_ms"].is_u64(), "{failure}");
    assert!(events.iter().any(|e| e["message"] == "worker started"));

    // SONIQ_LOG=error silences the warnings.
    let (_, id, log) = fail_once_before_publishing(&[("SONIQ_LOG", "error")]);
    assert!(!log.contains(&id) && !log.contains("WARN"), "{log}");
}

#[test]
fn log_settings_are_checked() {
    let bad = soniq_with(&["status"], &[("SONIQ_LOG_FORMAT", "yaml")]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("SONIQ_LOG_FORMAT must be text or json"),
        "{}",
        bad.stderr
    );
    let bad = soniq_with(&["status"], &[("SONIQ_LOG", "soniq_runner=loudly")]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("SONIQ_LOG must be a level"),
        "{}",
        bad.stderr
    );
}

/// `soniq setup --jobs-modules` publishes a module's options before any worker runs, and
/// `soniq enqueue --jobs-modules` too: the job is enqueued with them.
#[test]
fn setup_and_enqueue_publish_a_modules_options() {
    let task = format!("log.publish_{}", unique("t").replace('-', "_"));
    let queue = unique("published");
    let module = failing_module(&task, &queue);
    let setup = soniq(&["setup", "--jobs-modules", &module]).ok();
    assert!(
        setup.stdout.contains("published the options of 1 tasks"),
        "{}",
        setup.stdout
    );
    let id = soniq(&["enqueue", &task]).ok().stdout.trim().to_string();
    let job = soniq(&["inspect", &id, "--json"]).ok().json();
    assert_eq!(
        (job["queue"].as_str(), job["max_attempts"].as_i64()),
        (Some(queue.as_str()), Some(1))
    );

    let task = format!("log.publish_{}", unique("t").replace('-', "_"));
    let queue = unique("published");
    let module = failing_module(&task, &queue);
    let id = soniq(&["enqueue", &task, "--jobs-modules", &module])
        .ok()
        .stdout
        .trim()
        .to_string();
    let job = soniq(&["inspect", &id, "--json"]).ok().json();
    assert_eq!(job["queue"], queue.as_str(), "{job}");
}

/// A server that is not there: the error says which server and why, not just "error
/// connecting to server".
#[test]
fn a_failed_connection_names_the_server_and_the_cause() {
    let closed = "postgres://app:s3cret@localhost:1/nowhere";
    for args in [vec!["status"], vec!["setup"]] {
        let run = soniq_with(&args, &[("SONIQ_DATABASE_URL", closed)]);
        assert_eq!(run.code, 1, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("Connection refused"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(
            run.stderr
                .contains("postgres://app:***@localhost:1/nowhere"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("s3cret"), "{}", run.stderr);
    }
}

/// Queued jobs of a queue, by their args' `n`, and how many carry `priority`.
async fn queued_in(queue: &str) -> (i64, i64) {
    let row = sql()
        .await
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE priority = 5) FROM soniq.jobs \
              WHERE queue = $1 AND status = 'queued'",
            &[&queue],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

fn job_lines(queue: &str, range: std::ops::Range<usize>) -> String {
    range
        .map(|n| format!("{{\"task_name\": \"cli.file\", \"args\": {{\"n\": {n}}}, \"queue\": \"{queue}\", \"priority\": 5}}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_from_a_file_streams_batches_and_names_a_bad_line() {
    let queue = unique("cli_file");
    let dir = std::env::temp_dir().join(&queue);
    std::fs::create_dir_all(&dir).unwrap();

    // 2,500 jobs in batches of 1,000, a blank line skipped, a dedup pair merged.
    let good = dir.join("good.jsonl");
    let dedup = format!(
        "{{\"task_name\": \"cli.file\", \"queue\": \"{queue}\", \"dedup_key\": \"{queue}\"}}\n"
    );
    let text = job_lines(&queue, 0..1200) + "\n" + &dedup + &job_lines(&queue, 1200..2500) + &dedup;
    std::fs::write(&good, text).unwrap();
    let path = good.to_string_lossy().into_owned();
    let done = soniq(&["enqueue", "--from", &path, "--batch-size", "1000", "--json"])
        .ok()
        .json();
    assert_eq!(
        (done["enqueued"].as_i64(), done["lines"].as_i64()),
        (Some(2502), Some(2503))
    );
    assert_eq!(
        queued_in(&queue).await,
        (2501, 2500),
        "2,500 jobs and one for the dedup key"
    );

    // A bad line: the batches before its batch stay, nothing from its batch on.
    let bad = dir.join("bad.jsonl");
    let text = job_lines(&queue, 0..1500)
        + &format!("{{\"task_name\": \"cli.file\", \"queue\": \"{queue}\", \"priority\": 0}}\n")
        + &job_lines(&queue, 1500..1600);
    std::fs::write(&bad, text).unwrap();
    let path = bad.to_string_lossy().into_owned();
    let run = soniq(&["enqueue", "--from", &path, "--batch-size", "1000"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "{path}:1501: priority must be a whole number between 1 and 1000, got 0"
        )) && run
            .stderr
            .contains("the 1000 jobs of the lines before line 1001 are enqueued"),
        "{}",
        run.stderr
    );
    assert_eq!(queued_in(&queue).await.0, 2501 + 1000);

    // A line that is not a job spec is caught before it is sent; standard input works too.
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_soniq"));
    let mut child = command
        .args(["enqueue", "--from", "-"])
        .env("SONIQ_DATABASE_URL", database_url())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = job_lines(&queue, 0..3) + "{\"task_name\": \"cli.file\", \"args\": [1]}\n";
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
    let run = from(child.wait_with_output().unwrap());
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("-:4: args must be a JSON object, got [1]; nothing was enqueued"),
        "{}",
        run.stderr
    );
    let run = soniq(&["enqueue", "cli.file", "--batch-size", "10"]);
    assert_eq!(
        (
            run.code,
            run.stderr.contains("--batch-size goes with --from")
        ),
        (2, true),
        "{}",
        run.stderr
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Through PgBouncer in transaction mode (SONIQ_TEST_PGBOUNCER_URL) with the statement cache
/// off: enqueue, inspect, list, a worker that runs a command handler into the dead letter, the
/// dead letter's commands, schedules, status. Each statement may land on another server
/// connection; none may need one prepared on an earlier one.
#[test]
fn the_commands_work_through_pgbouncer_in_transaction_mode() {
    let pgbouncer = std::env::var("SONIQ_TEST_PGBOUNCER_URL").expect(
        "SONIQ_TEST_PGBOUNCER_URL names the test database through PgBouncer; run scripts/test",
    );
    let direct = database_url();
    let env = [
        ("SONIQ_DATABASE_URL", pgbouncer.as_str()),
        ("SONIQ_STATEMENT_CACHE", "off"),
        ("SONIQ_LISTEN_URL", direct.as_str()),
    ];
    let run = |args: &[&str]| soniq_with(args, &env).ok();
    let queue = unique("cli_pgbouncer");
    let module = doomed_task_module(&queue, "cli.bounced", "exit 3");
    let mut ids = Vec::new();
    for n in 0..5 {
        let args = format!(r#"{{"n": {n}}}"#);
        ids.push(run(&["enqueue", "cli.bounced", "--queue", &queue, "--args", &args]).stdout);
    }
    let job = run(&["inspect", ids[0].trim(), "--json"]).json();
    assert_eq!(job["status"], "queued");
    let listed = run(&["jobs", "list", "--queue", &queue, "--json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 5);
    run(&[
        "worker",
        "--run-once",
        "--queues",
        &queue,
        "--jobs-modules",
        &module,
    ]);
    let dead = run(&["dead-letter", "list", "--queue", &queue, "--json"]).json();
    assert_eq!(
        dead.as_array().unwrap().len(),
        5,
        "every job ran once and died"
    );
    let first = dead[0]["id"].as_str().unwrap().to_string();
    run(&["dead-letter", "show", &first]);
    run(&["dead-letter", "replay", &first]);
    let requeued = run(&[
        "jobs", "list", "--queue", &queue, "--status", "queued", "--json",
    ])
    .json();
    assert_eq!(requeued.as_array().unwrap().len(), 1);
    let name = unique("cli_pgbouncer_schedule");
    run(&[
        "schedule",
        "add",
        &name,
        "--task",
        "cli.bounced",
        "--every",
        "3600",
    ]);
    let schedules = run(&["schedule", "list", "--json"]).json();
    assert!(schedules
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == name.as_str()));
    run(&["schedule", "remove", &name]);
    let status = run(&["status", "--json"]).json();
    assert!(status.is_object(), "{status}");
}
