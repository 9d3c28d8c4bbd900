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
//! A rolled-back transaction sends nothing, nor does a wake-up asked for in a subtransaction
//! that rolled back. A prepared transaction (two-phase commit) sends nothing either (Postgres
//! refuses to PREPARE after NOTIFY); workers find its jobs by polling.

use pgrx::direct_function_call_as_datum;
use pgrx::prelude::*;
use std::cell::RefCell;

/// The channel runners LISTEN on; the payload is the queue name.
const CHANNEL: &str = "soniq_new_job";

/// First key of the advisory locks that mean "a wake-up for this queue is committing"
/// (ASCII "sonq"), so they never meet an application's own two-key advisory locks by chance.
const LOCK_CLASS: i32 = 0x736f_6e71;

thread_local! {
    /// Queues to wake when the current transaction commits, each with the subtransaction that
    /// asked first, so that a rolled-back savepoint takes its wake-ups back.
    static PENDING: RefCell<Vec<(pg_sys::SubTransactionId, String)>> = const { RefCell::new(Vec::new()) };
}

/// Hook the wake-ups into every transaction of this backend (from `_PG_init`, once).
pub fn register_callbacks() {
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_transaction), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subtransaction), std::ptr::null_mut());
    }
}

/// Ask for the workers of `queue` to be woken when the calling transaction commits.
#[pg_extern(volatile, parallel_unsafe, name = "_wake")]
pub fn wake(queue: &str) {
    let asked_in = unsafe { pg_sys::GetCurrentSubTransactionId() };
    PENDING.with_borrow_mut(|pending| {
        if !pending
            .iter()
            .any(|(_, pending_queue)| pending_queue == queue)
        {
            pending.push((asked_in, queue.to_owned()));
        }
    });
}

#[pg_guard]
unsafe extern "C-unwind" fn on_transaction(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_COMMIT => notify_pending(),
        XACT_EVENT_ABORT | XACT_EVENT_PRE_PREPARE => PENDING.with_borrow_mut(Vec::clear),
        _ => {}
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subtransaction(
    event: pg_sys::SubXactEvent::Type,
    rolled_back: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    // Subtransaction ids grow: the rolled-back one's and its children's are the larger ones.
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        PENDING.with_borrow_mut(|pending| pending.retain(|(asked_in, _)| *asked_in < rolled_back));
    }
}

/// Pre-commit: notify every pending queue whose wake-up no other transaction is committing.
fn notify_pending() {
    for (_, queue) in PENDING.take() {
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
