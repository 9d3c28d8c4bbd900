//! Wake-up notifications for idle workers, throttled per queue at commit.
//!
//! A job that becomes runnable should wake the workers that LISTEN on `soniq_new_job`. But a
//! NOTIFY takes one database-wide lock at commit and holds it through the commit's WAL flush,
//! so transactions that notify commit one at a time instead of sharing a flush. Producers
//! under load would queue behind each other on that lock.
//!
//! So the decision is taken at pre-commit, not when the job is written: a transaction notifies
//! a queue only if no other transaction is committing a notification for that queue at that
//! very moment. The one in flight wakes the workers; a skipped job commits a moment later, and
//! runners look again shortly after every notification to pick it up. Deciding at commit also
//! means a long producer transaction never holds back other producers' wake-ups.
//!
//! "Committing a notification for this queue" is a slot in shared memory the extension owns
//! (when preloaded, as the control plane requires): the committing backend's pid and a tag of
//! the queue's name, taken without waiting and given back when its commit ends. A slot held for
//! another queue of the same bucket does not silence this one: that transaction notifies without
//! the slot. No SQL reaches it, so no role can hold it to silence a queue. Loaded without preloading, a transaction-level advisory lock says the same;
//! any role that can connect could hold that lock and suppress the queue's wake-ups (workers
//! then find its jobs by polling).
//!
//! A rolled-back transaction sends nothing, nor does a wake-up asked for in a subtransaction
//! that rolled back. A prepared transaction (two-phase commit) sends nothing either (Postgres
//! refuses to PREPARE after NOTIFY); workers find its jobs by polling.

use pgrx::direct_function_call_as_datum;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PgAtomic};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The channel runners LISTEN on; the payload is the queue name.
const CHANNEL: &str = "soniq_new_job";

/// First key of the advisory locks that mean "a wake-up for this queue is committing"
/// (ASCII "sonq"), so they never meet an application's own two-key advisory locks by chance.
const LOCK_CLASS: i32 = 0x736f_6e71;

/// Slots of "a wake-up is committing", one per hash bucket of queue names.
const SLOTS: usize = 256;
/// A slot held longer than this (its holder died mid-commit without cleaning up) is free.
const STALE_SECONDS: u64 = 5;

/// Each slot: the holder's pid (22 bits: Linux pids stay under 2^22), the queue's tag (the 24
/// bits of its hash above the bucket's 8) and the second it took the slot (18 bits, wrapping
/// every three days: only a difference of a few seconds is ever read).
static COMMITTING: PgAtomic<[AtomicU64; SLOTS]> =
    unsafe { PgAtomic::new(c"soniq_wake_committing") };
/// Whether COMMITTING exists (the library was preloaded).
static IN_SHARED_MEMORY: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The slots this backend holds until its commit ends.
    static HELD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    /// Queues to wake when the current transaction commits, each with the subtransaction that
    /// asked first, so that a rolled-back savepoint takes its wake-ups back.
    static PENDING: RefCell<Vec<(pg_sys::SubTransactionId, String)>> = const { RefCell::new(Vec::new()) };
}

/// Reserve the slots in shared memory (from `_PG_init`, while preloading only).
pub fn init_shared_memory() {
    pg_shmem_init!(COMMITTING = std::array::from_fn(|_| AtomicU64::new(0)));
    IN_SHARED_MEMORY.store(true, Ordering::Relaxed);
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
        XACT_EVENT_ABORT | XACT_EVENT_PRE_PREPARE => {
            PENDING.with_borrow_mut(Vec::clear);
            release_slots();
        }
        XACT_EVENT_COMMIT => release_slots(),
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
        let ours = if IN_SHARED_MEMORY.load(Ordering::Relaxed) {
            try_wake_slot(&queue)
        } else {
            try_wake_lock(&queue)
        };
        if ours {
            unsafe {
                direct_function_call_as_datum(
                    pg_sys::pg_notify,
                    &[CHANNEL.into_datum(), queue.as_str().into_datum()],
                );
            }
        }
    }
}

const PID_BITS: u32 = 22;
const TAG_BITS: u32 = 24;
const SECOND_BITS: u32 = 64 - PID_BITS - TAG_BITS;
const SECOND_MASK: u64 = (1 << SECOND_BITS) - 1;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;

/// A slot's value: held by `pid` for the queue tagged `tag` since `second`.
fn slot_value(pid: u32, tag: u64, second: u64) -> u64 {
    (u64::from(pid) << (TAG_BITS + SECOND_BITS)) | (tag << SECOND_BITS) | (second & SECOND_MASK)
}

fn slot_pid(value: u64) -> u32 {
    (value >> (TAG_BITS + SECOND_BITS)) as u32
}

fn slot_tag(value: u64) -> u64 {
    (value >> SECOND_BITS) & TAG_MASK
}

/// The queue's slot and its tag.
fn bucket(queue: &str) -> (usize, u64) {
    let key = queue_key(queue) as u32;
    (key as usize % SLOTS, u64::from(key >> 8) & TAG_MASK)
}

fn this_second() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() & SECOND_MASK)
}

/// Whether this commit notifies `queue`: it takes the queue's slot until the commit ends, unless
/// another backend is committing a wake-up of the same queue (then it skips). A slot this
/// backend holds already is ours; one another backend holds for another queue of the same
/// bucket leaves this queue's wake-up to go out without it.
fn try_wake_slot(queue: &str) -> bool {
    let (index, tag) = bucket(queue);
    let slot = &COMMITTING.get()[index];
    let pid = unsafe { pg_sys::MyProcPid } as u32;
    let now = this_second();
    let current = slot.load(Ordering::Acquire);
    if current != 0 && slot_pid(current) == pid {
        return true;
    }
    let stale = now.wrapping_sub(current) & SECOND_MASK > STALE_SECONDS;
    if current != 0 && !stale {
        return slot_tag(current) != tag;
    }
    let taken = slot
        .compare_exchange(
            current,
            slot_value(pid, tag, now),
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .is_ok();
    if taken {
        HELD.with_borrow_mut(|held| held.push(index));
        return true;
    }
    // Another backend took it meanwhile: skip only if for this very queue.
    slot_tag(slot.load(Ordering::Acquire)) != tag
}

/// The commit ended: give back the slots this backend holds.
fn release_slots() {
    let pid = unsafe { pg_sys::MyProcPid } as u32;
    for index in HELD.take() {
        let slot = &COMMITTING.get()[index];
        let current = slot.load(Ordering::Acquire);
        if slot_pid(current) == pid {
            let _ = slot.compare_exchange(current, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

/// Without shared memory: take the queue's advisory lock for the rest of the transaction,
/// unless another holds it.
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

/// A stable 32-bit hash of the queue name (FNV-1a). Its low 8 bits pick the slot, the rest are
/// the queue's tag; two queues sharing all 32 (or, without shared memory, an advisory lock)
/// only means one may skip its wake-up while the other's commits, and every runner wakes on
/// every notification.
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

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::*;

    fn slot_of(queue: &str) -> &'static AtomicU64 {
        &COMMITTING.get()[bucket(queue).0]
    }

    /// The slot of `queue` as another backend holding it since `seconds_ago` would leave it.
    fn held_by(pid: u32, queue: &str, seconds_ago: u64) -> u64 {
        slot_value(
            pid,
            bucket(queue).1,
            this_second().wrapping_sub(seconds_ago),
        )
    }

    /// The throttle in shared memory (the test cluster preloads the library): a wake-up is
    /// skipped while another backend holds its queue's slot for it, taken when the slot is
    /// free, ours or stale (its holder died mid-commit), and given back when the commit ends;
    /// a slot held for another queue of the same bucket silences nothing.
    #[pg_test]
    fn a_wake_up_is_skipped_only_while_another_backend_commits_one_for_its_queue() {
        assert!(
            IN_SHARED_MEMORY.load(Ordering::Relaxed),
            "the library is not preloaded"
        );
        let slot = slot_of("slots.q");
        let other = unsafe { pg_sys::MyProcPid } as u32 + 1;

        slot.store(held_by(other, "slots.q", 0), Ordering::Release);
        assert!(
            !try_wake_slot("slots.q"),
            "took a slot another backend holds"
        );

        // Another queue of the same bucket (a different tag): notified, the slot left as it is.
        let neighbour = (0..)
            .map(|n| format!("slots.n{n}"))
            .find(|q| bucket(q).0 == bucket("slots.q").0 && bucket(q).1 != bucket("slots.q").1)
            .unwrap();
        let theirs = held_by(other, &neighbour, 0);
        slot.store(theirs, Ordering::Release);
        assert!(
            try_wake_slot("slots.q"),
            "another queue's commit silenced this one"
        );
        assert_eq!(slot.load(Ordering::Acquire), theirs);
        release_slots();
        assert_eq!(
            slot.load(Ordering::Acquire),
            theirs,
            "gave back a slot not ours"
        );

        slot.store(
            held_by(other, "slots.q", STALE_SECONDS + 1),
            Ordering::Release,
        );
        assert!(try_wake_slot("slots.q"), "a stale slot stayed taken");
        assert!(try_wake_slot("slots.q"), "our own slot refused us");
        release_slots();
        assert_eq!(
            slot.load(Ordering::Acquire),
            0,
            "the slot was not given back"
        );

        assert!(try_wake_slot("slots.q"));
        release_slots();
        assert_eq!(slot.load(Ordering::Acquire), 0);
    }
}
