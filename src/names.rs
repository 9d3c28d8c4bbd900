//! Task, queue and schedule names: what a well-formed name is, and an error that says what is wrong.
//!
//! The rule is deliberately wider than any one runner's naming convention (the Python Soniq
//! whose API Soniq re-creates uses `billing.send_invoice`, Rust paths `billing::send_invoice`):
//! a name starts with a letter and holds ASCII letters, digits and `_ . : -`.

use pgrx::prelude::*;

pub const MAX_TASK_NAME_LEN: usize = 200;
pub const MAX_QUEUE_NAME_LEN: usize = 100;

/// Why `name` is not a valid name of the given kind, or `None` when it is.
pub fn name_problem(kind: &str, name: &str, max_len: usize) -> Option<String> {
    let Some(first) = name.chars().next() else {
        return Some(format!("{kind} must not be empty"));
    };
    let len = name.chars().count();
    if len > max_len {
        return Some(format!(
            "{kind} is {len} characters long; the limit is {max_len}"
        ));
    }
    if !first.is_ascii_alphabetic() {
        return Some(format!("{kind} {name:?} must start with a letter"));
    }
    let (position, bad) = name
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))?;
    Some(format!(
        "{kind} {name:?} contains '{bad}' (U+{:04X}) at position {}; allowed are ASCII letters, digits, '_', '.', ':' and '-'",
        u32::from(bad),
        position + 1
    ))
}

fn check(kind: &str, name: Option<&str>, max_len: usize) {
    let Some(name) = name else {
        crate::null_not_allowed(kind)
    };
    if let Some(problem) = name_problem(kind, name, max_len) {
        crate::invalid_parameter(problem)
    }
}

/// Raise 22023 unless `name` is a valid task name; NULL raises 22004.
#[pg_extern(immutable, parallel_safe, name = "_check_task_name")]
pub fn check_task_name(name: Option<&str>) -> bool {
    check("task name", name, MAX_TASK_NAME_LEN);
    true
}

/// Raise 22023 unless `name` is a valid queue name; NULL raises 22004.
#[pg_extern(immutable, parallel_safe, name = "_check_queue_name")]
pub fn check_queue_name(name: Option<&str>) -> bool {
    check("queue name", name, MAX_QUEUE_NAME_LEN);
    true
}

/// Raise 22023 unless `name` is a valid schedule name (the task-name rules); NULL raises 22004.
#[pg_extern(immutable, parallel_safe, name = "_check_schedule_name")]
pub fn check_schedule_name(name: Option<&str>) -> bool {
    check("schedule name", name, MAX_TASK_NAME_LEN);
    true
}

/// Whether a batch's names are all well formed: every task name (none NULL), and every queue
/// name that is given (NULL: the task's or the default queue). One call for a whole batch of
/// `soniq._insert_jobs`; a batch that fails it is checked job by job for the error to raise.
#[pg_extern(immutable, parallel_safe, name = "_names_ok")]
pub fn names_ok<'a>(
    task_names: Option<Array<'a, &'a str>>,
    queues: Option<Array<'a, &'a str>>,
) -> bool {
    let tasks_ok = task_names.is_none_or(|names| {
        names.iter().all(|name| {
            name.is_some_and(|n| name_problem("task name", n, MAX_TASK_NAME_LEN).is_none())
        })
    });
    let queues_ok = queues.is_none_or(|names| {
        names
            .iter()
            .flatten()
            .all(|name| name_problem("queue name", name, MAX_QUEUE_NAME_LEN).is_none())
    });
    tasks_ok && queues_ok
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn accepts_dotted_and_path_names() {
        for name in [
            "billing.send_invoice",
            "a",
            "crate::jobs::send",
            "Emails-2",
            "x:y.z_1",
        ] {
            assert_eq!(name_problem("task name", name, 200), None, "{name}");
        }
    }

    #[test]
    fn explains_what_is_wrong() {
        assert_eq!(
            name_problem("task name", "", 200).unwrap(),
            "task name must not be empty"
        );
        assert!(name_problem("task name", "1abc", 200)
            .unwrap()
            .contains("must start with a letter"));
        assert!(name_problem("queue name", "send mail", 100)
            .unwrap()
            .contains("' ' (U+0020) at position 5"));
        assert!(name_problem("queue name", &"q".repeat(101), 100)
            .unwrap()
            .contains("101 characters long; the limit is 100"));
        assert!(name_problem("task name", "drop;table", 200)
            .unwrap()
            .contains("';' (U+003B)"));
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn valid_names_pass() {
        assert_eq!(
            Spi::get_one::<bool>("SELECT soniq._check_task_name('billing.send_invoice')"),
            Ok(Some(true))
        );
        assert_eq!(
            Spi::get_one::<bool>("SELECT soniq._check_queue_name('default')"),
            Ok(Some(true))
        );
    }

    #[pg_test(
        error = "task name \"bad name\" contains ' ' (U+0020) at position 4; allowed are ASCII letters, digits, '_', '.', ':' and '-'"
    )]
    fn invalid_task_name_is_refused() {
        Spi::run("SELECT soniq._check_task_name('bad name')").unwrap();
    }

    #[pg_test(error = "queue name must not be NULL")]
    fn null_queue_name_is_refused() {
        Spi::run("SELECT soniq._check_queue_name(NULL)").unwrap();
    }
}
