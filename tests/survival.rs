//! Data survives operations: an extension update from each earlier version, and pg_dump
//! restored into a fresh cluster. Both start from a database holding queued, processing,
//! scheduled, done and dead jobs, a task, a worker and a schedule.
#![cfg(feature = "e2e")]

use soniq_testkit as common;

use common::cluster::Cluster;
use common::connect_to;
use common::sample::{fill, rows, rows_without, run_the_queued_job, ADDED_COLUMNS};
use postgres::Client;
use std::process::Command;

/// The versions before this one: their install scripts are kept in sql/previous/, and an
/// update from each (through every update script after it) must reach this version.
const PREVIOUS_VERSIONS: [&str; 13] = [
    "0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "0.9.0", "0.10.0",
    "0.11.0", "0.12.0", "0.13.0",
];

/// A database of its own on the test cluster; dropped when done.
struct Scratch {
    name: String,
}

impl Scratch {
    fn new(prefix: &str) -> Self {
        let name = common::unique_name(prefix).replace('-', "_");
        common::connect()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        Scratch { name }
    }

    fn connect(&self) -> Client {
        connect_to(&database_url_for(&common::database_url(), &self.name))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = common::connect().batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// `url` naming database `name` instead.
fn database_url_for(url: &str, name: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// The extension's objects as the catalogs describe them: functions (signature, body,
/// rights), tables and views (columns in order, defaults, storage options, privileges),
/// indexes, domains, constraints (of tables and of domains), what pg_dump keeps, and the extension's members.
const SCHEMA: &str = "
SELECT string_agg(x, E'\\n' ORDER BY x) FROM (
  SELECT format('function %s(%s) %s lang=%s definer=%s config=%s volatility=%s strict=%s parallel=%s acl=%s src=%s bin=%s',
                p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid), l.lanname,
                p.prosecdef, p.proconfig, p.provolatile, p.proisstrict, p.proparallel, p.proacl,
                md5(p.prosrc), p.probin)
    FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.pronamespace = 'soniq'::regnamespace
  UNION ALL
  SELECT format('relation %s kind=%s options=%s acl=%s', c.relname, c.relkind, c.reloptions, c.relacl)
    FROM pg_class c WHERE c.relnamespace = 'soniq'::regnamespace
  UNION ALL
  SELECT format('column %s #%s %s %s notnull=%s default=%s', c.relname,
                row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum), a.attname,
                format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid))
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE c.relnamespace = 'soniq'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 'index ' || pg_get_indexdef(i.indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'soniq'::regnamespace
  UNION ALL
  SELECT format('constraint %s.%s %s', c.relname, k.conname, pg_get_constraintdef(k.oid))
    FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid WHERE c.relnamespace = 'soniq'::regnamespace
  UNION ALL
  SELECT format('domain %s %s notnull=%s', t.typname, format_type(t.typbasetype, t.typtypmod), t.typnotnull)
    FROM pg_type t WHERE t.typnamespace = 'soniq'::regnamespace AND t.typtype = 'd'
  UNION ALL
  SELECT format('constraint %s.%s %s', t.typname, k.conname, pg_get_constraintdef(k.oid))
    FROM pg_constraint k JOIN pg_type t ON t.oid = k.contypid WHERE t.typnamespace = 'soniq'::regnamespace  UNION ALL
  SELECT format('view %s %s', c.relname, pg_get_viewdef(c.oid))
    FROM pg_class c WHERE c.relnamespace = 'soniq'::regnamespace AND c.relkind = 'v'
  UNION ALL
  SELECT format('trigger %s', pg_get_triggerdef(t.oid))
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
   WHERE c.relnamespace = 'soniq'::regnamespace AND NOT t.tgisinternal
  UNION ALL
  SELECT format('dumped %s where %s', t.tab, t.cond)
    FROM pg_extension e, unnest(e.extconfig::regclass[], e.extcondition) t(tab, cond) WHERE e.extname = 'soniq'
  UNION ALL
  SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
    FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
   WHERE d.refclassid = 'pg_extension'::regclass AND e.extname = 'soniq' AND d.deptype = 'e'
  UNION ALL
  SELECT format('schema acl=%s', n.nspacl) FROM pg_namespace n WHERE n.nspname = 'soniq'
) f(x)";

fn schema(client: &mut Client) -> String {
    client.query_one(SCHEMA, &[]).unwrap().get(0)
}

fn version(client: &mut Client) -> String {
    client
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'soniq'",
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn updating_from_each_earlier_version_keeps_every_job_and_equals_a_fresh_install() {
    for previous in PREVIOUS_VERSIONS {
        update_keeps_every_job_and_equals_a_fresh_install(previous);
    }
}

fn update_keeps_every_job_and_equals_a_fresh_install(previous: &str) {
    let old = Scratch::new("upgrade");
    let mut client = old.connect();
    client
        .batch_execute(&format!("CREATE EXTENSION soniq VERSION '{previous}'"))
        .unwrap();
    fill(&mut client);
    let before = rows_without(&mut client, &ADDED_COLUMNS);

    client
        .batch_execute("ALTER EXTENSION soniq UPDATE")
        .unwrap();
    let fresh = Scratch::new("fresh");
    let mut fresh_client = fresh.connect();
    fresh_client
        .batch_execute("CREATE EXTENSION soniq")
        .unwrap();
    assert_eq!(version(&mut client), version(&mut fresh_client));
    assert_ne!(version(&mut client), previous, "the update went nowhere");
    assert_eq!(
        rows_without(&mut client, &ADDED_COLUMNS),
        before,
        "rows changed in the update from {previous}"
    );
    let (updated, installed) = (schema(&mut client), schema(&mut fresh_client));
    if updated != installed {
        let only = |a: &str, b: &str| -> Vec<String> {
            let b: std::collections::HashSet<&str> = b.lines().collect();
            a.lines()
                .filter(|l| !b.contains(l))
                .map(str::to_string)
                .collect()
        };
        panic!(
            "the schema updated from {previous} differs from a fresh install\nonly after the update:\n{}\nonly in a fresh install:\n{}",
            only(&updated, &installed).join("\n"),
            only(&installed, &updated).join("\n")
        );
    }
    // And it works: the queued job can be claimed and completed, a new job enqueued.
    assert_eq!(run_the_queued_job(&mut client), 1);
    client
        .batch_execute("SELECT soniq.enqueue('keep.after')")
        .unwrap();
}

/// 0.2.0 accepted intervals that overflowed the rescue round (a timeout of 300000 years) or
/// a registered TTL that wrapped around to a negative interval; the update brings such rows
/// to the longest allowed value, and the rescue round works on them again.
#[test]
fn an_update_brings_out_of_range_rows_into_range() {
    let old = Scratch::new("ranges");
    let mut client = old.connect();
    client
        .batch_execute(
            "CREATE EXTENSION soniq VERSION '0.2.0';
             -- What 0.2.0's library stored for {\"timeout\": 1e300, \"result_ttl\": 1e300}
             -- (today's library refuses it, also under the old SQL).
             INSERT INTO soniq.tasks (task_name, timeout, result_ttl)
             VALUES ('huge.task', '-2562047788:00:54', '-2562047788:00:54');
             SELECT soniq.enqueue('huge.timeout', timeout => '300000 years');
             SELECT soniq.claim(soniq.register_worker(), task_names => ARRAY['huge.timeout']);
             ALTER EXTENSION soniq UPDATE;",
        )
        .unwrap();
    let row = client
        .query_one(
            "SELECT (SELECT timeout FROM soniq.jobs WHERE task_name = 'huge.timeout')::text,
                    (SELECT timeout FROM soniq.tasks WHERE task_name = 'huge.task')::text,
                    (SELECT result_ttl FROM soniq.tasks WHERE task_name = 'huge.task')::text,
                    soniq.rescue_jobs()",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "30 days");
    assert_eq!(row.get::<_, String>(1), "30 days");
    assert_eq!(row.get::<_, String>(2), "365 days");
    assert_eq!(
        row.get::<_, i32>(3),
        0,
        "the live worker's job stays its own"
    );
}

#[test]
fn pg_dump_restores_every_job_into_a_fresh_cluster() {
    let source = Scratch::new("dumped");
    let mut client = source.connect();
    client.batch_execute("CREATE EXTENSION soniq").unwrap();
    fill(&mut client);
    let before = rows(&mut client);
    let source_schema = schema(&mut client);

    let target = Cluster::init(&common::pg_bindir(), "restore", 5491);
    target.start(&[]);
    let dump = format!("{}/dump", target.dir);
    let source_url = database_url_for(&common::database_url(), &source.name);
    let target_base = format!("postgres://postgres@localhost:{}/postgres", target.port);
    let status = Command::new(common::pg_program("pg_dump"))
        .args(["-Fc", "-f", &dump, "-d", &source_url])
        .status()
        .unwrap();
    assert!(status.success(), "pg_dump failed");
    connect_to(&target_base)
        .batch_execute("CREATE DATABASE restored")
        .unwrap();
    let target_url = database_url_for(&target_base, "restored");
    let status = Command::new(common::pg_program("pg_restore"))
        .args(["--exit-on-error", "-d", &target_url, &dump])
        .status()
        .unwrap();
    assert!(status.success(), "pg_restore failed");

    let mut restored = connect_to(&target_url);
    assert_eq!(rows(&mut restored), before, "rows differ after the restore");
    assert_eq!(
        schema(&mut restored),
        source_schema,
        "objects differ after the restore"
    );
    // The restored queue runs: its queued job is claimed and completed.
    assert_eq!(run_the_queued_job(&mut restored), 1);
}
