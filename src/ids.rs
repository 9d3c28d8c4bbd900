//! Job ids: UUIDv7 (RFC 9562). 48 bits of Unix milliseconds, the version, 12 bits of the
//! sub-millisecond clock, the variant and 62 random bits. Ids made one after another in a
//! backend sort in creation order (the claim order's last tie-break): an id that would not
//! sort after the previous one (the same clock tick) is the previous one plus one. Declared in sql/schema.sql, which needs it for column
//! defaults before pgrx's own declarations run.

use pgrx::prelude::*;
use std::cell::Cell;

/// Microseconds from the Unix epoch to the Postgres epoch (2000-01-01).
const POSTGRES_EPOCH_UNIX_MICROS: i64 = (pg_sys::POSTGRES_EPOCH_JDATE - pg_sys::UNIX_EPOCH_JDATE)
    as i64
    * pg_sys::SECS_PER_DAY as i64
    * 1_000_000;

/// The random part's bits: the low 62.
const RANDOM_BITS: u128 = (1 << 62) - 1;

thread_local! {
    /// The last id this backend made.
    static LAST: Cell<u128> = const { Cell::new(0) };
}

#[pg_extern(sql = false)]
pub fn uuid_v7() -> pgrx::Uuid {
    let now = unsafe { pg_sys::GetCurrentTimestamp() } + POSTGRES_EPOCH_UNIX_MICROS;
    let mut random = [0u8; 8];
    if !unsafe { pg_sys::pg_strong_random(random.as_mut_ptr().cast(), random.len()) } {
        error!("could not generate random bytes for a job id");
    }
    let candidate = u128::from_be_bytes(uuid_v7_bytes(now, random));
    let id = after(LAST.get(), candidate);
    LAST.set(id);
    pgrx::Uuid::from_bytes(id.to_be_bytes())
}

/// The id to hand out after `last`: the fresh `candidate` if it sorts later, else `last + 1`
/// (a random part of all ones cannot be incremented: then the candidate, out of order, once
/// in 2^62).
fn after(last: u128, candidate: u128) -> u128 {
    if candidate > last || last & RANDOM_BITS == RANDOM_BITS {
        candidate
    } else {
        last + 1
    }
}

/// The id's bytes for a clock reading in Unix microseconds and 8 random bytes.
fn uuid_v7_bytes(unix_micros: i64, random: [u8; 8]) -> [u8; 16] {
    let millis = unix_micros.div_euclid(1000) as u64;
    let sub_milli = (unix_micros.rem_euclid(1000) * 4096 / 1000) as u16;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6..8].copy_from_slice(&(0x7000 | sub_milli).to_be_bytes());
    bytes[8..].copy_from_slice(&random);
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    bytes
}

#[cfg(test)]
mod unit_tests {
    use super::{after, uuid_v7_bytes, RANDOM_BITS};

    #[test]
    fn ids_within_one_tick_count_up() {
        let first = u128::from_be_bytes(uuid_v7_bytes(
            1_767_225_600_000_000,
            [0x80, 0, 0, 0, 0, 0, 0, 9],
        ));
        let same_tick = u128::from_be_bytes(uuid_v7_bytes(
            1_767_225_600_000_000,
            [0x80, 0, 0, 0, 0, 0, 0, 1],
        ));
        assert_eq!(after(first, same_tick), first + 1);
        let later = u128::from_be_bytes(uuid_v7_bytes(1_767_225_600_000_001, [0x80; 8]));
        assert_eq!(after(first, later), later);
        let full = first | RANDOM_BITS;
        assert_eq!(
            after(full, same_tick),
            same_tick,
            "never carries into the variant"
        );
    }

    #[test]
    fn layout_follows_rfc_9562() {
        // 2026-01-01T00:00:00.000500Z
        let bytes = uuid_v7_bytes(1_767_225_600_000_500, [0xff; 8]);
        assert_eq!(&bytes[..6], &1_767_225_600_000_u64.to_be_bytes()[2..]);
        assert_eq!(bytes[6] >> 4, 7, "version");
        assert_eq!(
            u16::from_be_bytes([bytes[6], bytes[7]]) & 0x0fff,
            2048,
            "500 µs of 1000"
        );
        assert_eq!(bytes[8] >> 6, 0b10, "variant");
        assert_eq!(&bytes[9..], &[0xff; 7]);
    }

    #[test]
    fn later_clock_readings_sort_later() {
        let random = [0; 8];
        let ids: Vec<_> = [0, 1, 999, 1000, 1001, 123_456_789]
            .iter()
            .map(|&t| uuid_v7_bytes(1_767_225_600_000_000 + t, random))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
