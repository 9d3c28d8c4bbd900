//! Wake-up notifications for idle workers, throttled per queue at commit.
//!
//! A job that becomes runnable should wake the workers that LISTEN on `soniq_new_job`. But a
//! NOTIFY takes one database-wide lock at commit and holds it through the commit's WAL flush,
//! so transactions that notify commit one at a time instead of sharing a flush. Producers
//! under load would queue behind each other on that lock.
//!
//! So the decision is taken at pre-commit, not when the job is written: a transaction notifies
//! a queue only if no other transaction is committing a notification for that queue at that
//! very moment (a transaction-level advisory lock, tried without waiting, held until the end of
//! our commit). The one in flight wakes the workers; a skipped job commits a moment later, and
//! runners look again shortly after every notification to pick it up. Deciding at commit also
//! means a long producer transaction never holds back other producers' wake-ups.
//!
//! Rolled-back transactions send nothing. A prepared transaction (two-phase commit) sends
//! nothing either (Postgres refuses to PREPARE after NOTIFY); workers find its jobs by polling.

use pgrx::prelude::*;
use pgrx::{direct_function_call_as_datum, register_xact_callback, PgXactCallbackEvent};
use std::cell::RefCell;
use std::collections::BTreeSet;

/// The channel runners LISTEN on; the payload is the queue name.
const CHANNEL: &str = "soniq_new_job";

/// First key of the advisory locks that mean "a wake-up for this queue is committing"
/// (ASCII "sonq"), so they never meet an application's own two-key advisory locks by chance.
const LOCK_CLASS: i32 = 0x736f_6e71;

thread_local! {
    /// Queues to wake when the current transaction commits; `None` outside such a transaction.
    static PENDING: RefCell<Option<BTreeSet<String>>> = const { RefCell::new(None) };
}

/// Ask for the workers of `queue` to be woken when the calling transaction commits.
#[pg_extern(volatile, parallel_unsafe, name = "_wake")]
pub fn wake(queue: &str) {
    PENDING.with_borrow_mut(|pending| {
        pending
            .get_or_insert_with(|| {
                register_xact_callback(PgXactCallbackEvent::PreCommit, notify_pending);
                register_xact_callback(PgXactCallbackEvent::PrePrepare, forget_pending);
                register_xact_callback(PgXactCallbackEvent::Abort, forget_pending);
                BTreeSet::new()
            })
            .insert(queue.to_owned());
    });
}

fn forget_pending() {
    PENDING.take();
}

/// Pre-commit: notify every pending queue whose wake-up no other transaction is committing.
fn notify_pending() {
    for queue in PENDING.take().unwrap_or_default() {
        if try_wake_lock(&queue) {
            unsafe {
                direct_function_call_as_datum(
                    pg_sys::pg_notify,
                    &[CHANNEL.into_datum(), queue.as_str().into_datum()],
                );
            }
        }
    }
}

/// Take the queue's wake lock for the rest of the transaction, unless another holds it.
fn try_wake_lock(queue: &str) -> bool {
    let key = queue_key(queue);
    let taken = unsafe {
        direct_function_call_as_datum(
            pg_sys::pg_try_advisory_xact_lock_int4,
            &[LOCK_CLASS.into_datum(), key.into_datum()],
        )
    };
    taken.is_some_and(|datum| unsafe { bool::from_datum(datum, false) } == Some(true))
}

/// A stable 32-bit hash of the queue name (FNV-1a). Two queues sharing a key only means one
/// may skip its wake-up while the other's commits; every runner wakes on every notification.
fn queue_key(queue: &str) -> i32 {
    let hash = queue.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash as i32
}

#[cfg(test)]
mod unit_tests {
    use super::queue_key;

    #[test]
    fn queue_keys_are_stable_and_spread() {
        assert_eq!(queue_key(""), 0x811c_9dc5_u32 as i32);
        assert_ne!(queue_key("default"), queue_key("emails"));
        assert_eq!(queue_key("default"), queue_key("default"));
    }
}
