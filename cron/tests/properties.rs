//! Properties of next-fire computation over generated expressions, instants and zones.

use proptest::prelude::*;
use soniq_cron::{CronExpr, TimeZone, Timestamp};

fn field(min: u32, max: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        (1..=max.min(15)).prop_map(|s| format!("*/{s}")),
        (min..=max).prop_map(|v| v.to_string()),
        (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        (min..=max, min..=max).prop_map(|(a, b)| format!("{a},{b}")),
        (min..=max, min..=max, 1..=5u32).prop_map(|(a, b, s)| format!(
            "{}-{}/{s}",
            a.min(b),
            a.max(b)
        )),
    ]
}

fn expression() -> impl Strategy<Value = CronExpr> {
    (
        field(0, 59),
        field(0, 23),
        field(1, 28),
        field(1, 12),
        field(0, 7),
    )
        .prop_map(|(m, h, dom, mon, dow)| format!("{m} {h} {dom} {mon} {dow}"))
        .prop_filter_map("can never fire", |text| text.parse().ok())
}

fn instant() -> impl Strategy<Value = Timestamp> {
    // 2000-01-01 .. 2090-01-01, any second.
    (946_684_800i64..3_786_912_000).prop_map(|s| Timestamp::from_second(s).unwrap())
}

fn zone() -> impl Strategy<Value = TimeZone> {
    prop_oneof![
        Just("UTC"),
        Just("America/New_York"),
        Just("Europe/Berlin"),
        Just("Asia/Kolkata"),
        Just("Australia/Lord_Howe"),
    ]
    .prop_map(|name| TimeZone::get(name).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn next_is_after_and_on_a_whole_minute(expr in expression(), after in instant(), tz in zone()) {
        let next = expr.next_after(after, &tz).expect("a valid expression fires within nine years");
        prop_assert!(next > after);
        prop_assert_eq!(next.as_second() % 60, 0);
        prop_assert_eq!(next.subsec_nanosecond(), 0);
    }

    #[test]
    fn next_matches_and_nothing_earlier_does_in_utc(expr in expression(), after in instant()) {
        let tz = TimeZone::UTC;
        let next = expr.next_after(after, &tz).unwrap();
        prop_assert!(expr.matches(tz.to_datetime(next)));
        // Scan every minute in between when the gap is short enough to scan.
        let first = after.as_second() / 60 + 1;
        let last = next.as_second() / 60;
        if last - first < 3 * 24 * 60 {
            for minute in first..last {
                let t = Timestamp::from_second(minute * 60).unwrap();
                prop_assert!(!expr.matches(tz.to_datetime(t)), "{} matches earlier, at {}", expr, t);
            }
        }
    }

    #[test]
    fn display_round_trips(expr in expression()) {
        let again: CronExpr = expr.to_string().parse().unwrap();
        prop_assert_eq!(again, expr);
    }

    #[test]
    fn next_of_next_is_later(expr in expression(), after in instant(), tz in zone()) {
        let first = expr.next_after(after, &tz).unwrap();
        let second = expr.next_after(first, &tz).unwrap();
        prop_assert!(second > first);
    }
}
