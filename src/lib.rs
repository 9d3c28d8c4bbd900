//! Soniq: a background job queue that lives inside PostgreSQL.
//!
//! The SQL in `sql/` is the product's contract: `schema.sql` creates the tables, one file per
//! area every state transition of a job (`enqueue.sql`, `claim.sql`, `outcomes.sql`, ...),
//! `schedules.sql`, `rounds.sql` and `health.sql` the background worker's work, and
//! `privileges.sql` the roles (soniq_producer, soniq_worker, soniq_admin) and who may call what. The Rust here does what
//! SQL does badly: validation that explains itself ([`names`], [`task_defaults`]), the
//! retry-delay computation ([`retry`]), cron evaluation ([`schedules`]), wake-ups throttled at
//! commit ([`wake`]) and the background worker itself ([`control_plane`]).

use pgrx::prelude::*;

pub mod control_plane;
pub mod ids;
pub mod names;
pub mod retry;
pub mod schedules;
pub mod task_defaults;
pub mod wake;

::pgrx::pg_module_magic!(name, version);

// The SQL, one file per area, created in this order (each file may use what the ones before
// it define; PL/pgSQL bodies are resolved when they run).
extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/flow.sql", name = "flow");
extension_sql_file!("../sql/helpers.sql", name = "helpers", requires = ["flow"]);
extension_sql_file!(
    "../sql/enqueue.sql",
    name = "enqueue",
    requires = ["helpers"]
);
extension_sql_file!(
    "../sql/finished.sql",
    name = "finished",
    requires = ["enqueue"]
);
extension_sql_file!(
    "../sql/dependencies.sql",
    name = "dependencies",
    requires = ["finished"]
);
extension_sql_file!(
    "../sql/batches.sql",
    name = "batches",
    requires = ["dependencies"]
);
extension_sql_file!(
    "../sql/workers.sql",
    name = "workers",
    requires = ["batches"]
);
extension_sql_file!("../sql/claim.sql", name = "claim", requires = ["workers"]);
extension_sql_file!(
    "../sql/outcomes.sql",
    name = "outcomes",
    requires = ["claim"]
);
extension_sql_file!(
    "../sql/progress.sql",
    name = "progress",
    requires = ["outcomes"]
);
extension_sql_file!(
    "../sql/manage.sql",
    name = "manage",
    requires = ["progress"]
);
extension_sql_file!(
    "../sql/awaiting.sql",
    name = "awaiting",
    requires = ["manage"]
);
extension_sql_file!(
    "../sql/dead_letter.sql",
    name = "dead_letter",
    requires = ["awaiting"]
);
extension_sql_file!(
    "../sql/views.sql",
    name = "views",
    requires = ["dead_letter"]
);
extension_sql_file!(
    "../sql/schedules.sql",
    name = "schedules",
    requires = ["views", control_plane::wake_control_plane_at_commit]
);
extension_sql_file!(
    "../sql/rounds.sql",
    name = "rounds",
    requires = ["schedules"]
);
extension_sql_file!("../sql/health.sql", name = "health", requires = ["rounds"]);
extension_sql_file!("../sql/privileges.sql", name = "privileges", finalize);

#[pg_guard]
#[allow(non_snake_case)]
pub extern "C-unwind" fn _PG_init() {
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    control_plane::define_settings(preloading);
    wake::register_callbacks();
    if preloading {
        wake::init_shared_memory();
        // pg_upgrade starts both servers in binary-upgrade mode while it moves the catalogs:
        // no rounds may run against a database half restored.
        if !unsafe { pg_sys::IsBinaryUpgrade } {
            control_plane::register_worker();
        }
    }
}

/// Raise an `ERROR` with a SQLSTATE of 22023 (invalid_parameter_value).
pub(crate) fn invalid_parameter(message: String) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message
    );
}

/// Raise an `ERROR` with a SQLSTATE of 54000 (program_limit_exceeded).
pub(crate) fn limit_exceeded(message: String) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        message
    );
}

/// Raise an `ERROR` with a SQLSTATE of 22004 (null_value_not_allowed).
pub(crate) fn null_not_allowed(what: &str) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        format!("{what} must not be NULL")
    );
}

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        // As in production: the wake-up throttle lives in shared memory only when preloaded.
        vec!["shared_preload_libraries = 'soniq'"]
    }
}
