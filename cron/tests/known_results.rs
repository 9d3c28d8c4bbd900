//! Next fire times checked against results worked out by hand (calendars of 2026-2028,
//! the 2026 daylight-saving transitions of New York and Berlin).

use soniq_cron::dsl::{cron, daily, every, monthly, weekly};
use soniq_cron::{CronExpr, Schedule, SignedDuration, TimeZone, Timestamp};

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn next(expr: &str, after: &str, tz: &str) -> String {
    let expr: CronExpr = expr.parse().unwrap();
    let tz = TimeZone::get(tz).unwrap();
    expr.next_after(ts(after), &tz).unwrap().to_string()
}

#[test]
fn utc_table() {
    let table = [
        ("* * * * *", "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"),
        ("* * * * *", "2026-01-01T00:00:59Z", "2026-01-01T00:01:00Z"),
        (
            "*/15 * * * *",
            "2026-01-01T00:07:30Z",
            "2026-01-01T00:15:00Z",
        ),
        (
            "5/20 * * * *",
            "2026-01-01T00:30:00Z",
            "2026-01-01T00:45:00Z",
        ),
        // 2026-01-02 is a Friday; the next weekday 09:00 is Monday the 5th.
        (
            "0 9 * * 1-5",
            "2026-01-02T09:00:00Z",
            "2026-01-05T09:00:00Z",
        ),
        (
            "0 9 * * mon-FRI",
            "2026-01-02T08:59:00Z",
            "2026-01-02T09:00:00Z",
        ),
        ("0 0 1 * *", "2026-01-15T10:00:00Z", "2026-02-01T00:00:00Z"),
        ("0 0 29 2 *", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00Z"),
        // Both day fields restricted: the 1st of the month OR a Monday (Sunday 1 Feb -> Monday 2 Feb).
        ("0 12 1 * 1", "2026-02-01T12:00:00Z", "2026-02-02T12:00:00Z"),
        // Day-of-month starts with '*': odd days AND Mondays (5 Jan 2026 is the first).
        (
            "0 12 */2 * 1",
            "2026-01-01T00:00:00Z",
            "2026-01-05T12:00:00Z",
        ),
        ("0 0 * * 7", "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z"),
        ("0 0 * * 0", "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z"),
        (
            "30 4 * * SUN,sat",
            "2026-01-01T00:00:00Z",
            "2026-01-03T04:30:00Z",
        ),
        (
            "0 0 * * 5-7",
            "2026-01-03T00:00:00Z",
            "2026-01-04T00:00:00Z",
        ),
        ("@hourly", "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"),
        ("@daily", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"),
        ("@weekly", "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z"),
        ("@monthly", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),
        ("@yearly", "2026-06-01T00:00:00Z", "2027-01-01T00:00:00Z"),
        (
            "0 0 1 jan *",
            "2026-06-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
        ),
        ("0 0 31 * *", "2026-04-01T00:00:00Z", "2026-05-31T00:00:00Z"),
        (
            "59 23 31 12 *",
            "2026-12-31T23:59:00Z",
            "2027-12-31T23:59:00Z",
        ),
        // A day-of-week starting with '*' must also match: 9 November on a Sunday, and
        // 29 February on a Sunday; with both restricted, either day matches.
        (
            "0 0 9 11 */7",
            "2070-11-09T00:00:00Z",
            "2081-11-09T00:00:00Z",
        ),
        (
            "0 0 29 2 */7",
            "2044-02-29T00:00:00Z",
            "2060-02-29T00:00:00Z",
        ),
        ("0 0 29 2 1", "2096-02-29T00:00:00Z", "2097-02-04T00:00:00Z"),
    ];
    for (expr, after, expected) in table {
        assert_eq!(next(expr, after, "UTC"), expected, "{expr} after {after}");
    }
}

#[test]
fn time_zones_and_daylight_saving() {
    let table = [
        // 09:00 in Kolkata (+05:30) is 03:30 UTC.
        (
            "0 9 * * *",
            "2026-01-01T00:00:00Z",
            "Asia/Kolkata",
            "2026-01-01T03:30:00Z",
        ),
        (
            "0 9 * * *",
            "2026-01-01T00:00:00Z",
            "America/New_York",
            "2026-01-01T14:00:00Z",
        ),
        // New York springs forward on 8 March 2026 at 02:00: 02:30 does not exist and fires
        // at 03:30 EDT (07:30 UTC); the next day 02:30 EDT is 06:30 UTC.
        (
            "30 2 * * *",
            "2026-03-08T06:00:00Z",
            "America/New_York",
            "2026-03-08T07:30:00Z",
        ),
        (
            "30 2 * * *",
            "2026-03-08T07:30:00Z",
            "America/New_York",
            "2026-03-09T06:30:00Z",
        ),
        // Only the first time of the gap fires; 02:15 and 02:45 would land on instants already passed.
        (
            "*/15 2 * * *",
            "2026-03-08T06:59:00Z",
            "America/New_York",
            "2026-03-08T07:00:00Z",
        ),
        (
            "*/15 2 * * *",
            "2026-03-08T07:00:00Z",
            "America/New_York",
            "2026-03-09T06:00:00Z",
        ),
        // New York falls back on 1 November 2026: 01:30 happens twice and fires once, at 01:30 EDT.
        (
            "30 1 * * *",
            "2026-11-01T04:00:00Z",
            "America/New_York",
            "2026-11-01T05:30:00Z",
        ),
        (
            "30 1 * * *",
            "2026-11-01T05:30:00Z",
            "America/New_York",
            "2026-11-02T06:30:00Z",
        ),
        // Every half hour: the repeated 01:00-01:59 EST is not fired again; next is 02:00 EST.
        (
            "*/30 * * * *",
            "2026-11-01T05:30:00Z",
            "America/New_York",
            "2026-11-01T07:00:00Z",
        ),
        // Berlin springs forward on 29 March 2026: 02:30 fires at 03:30 CEST (01:30 UTC).
        (
            "30 2 29 3 *",
            "2026-03-28T00:00:00Z",
            "Europe/Berlin",
            "2026-03-29T01:30:00Z",
        ),
        (
            "0 3 * * *",
            "2026-03-28T12:00:00Z",
            "Europe/Berlin",
            "2026-03-29T01:00:00Z",
        ),
        // Found by the property test: the next 9 November on a Sunday after 2070 is in 2081.
        (
            "* * 9 11 */7",
            "2070-11-09T22:59:00Z",
            "Europe/Berlin",
            "2081-11-08T23:00:00Z",
        ),
    ];
    for (expr, after, tz, expected) in table {
        assert_eq!(
            next(expr, after, tz),
            expected,
            "{expr} after {after} in {tz}"
        );
    }
}

#[test]
fn intervals() {
    let utc = TimeZone::UTC;
    let every_30s = Schedule::every(SignedDuration::from_secs(30)).unwrap();
    assert_eq!(
        every_30s.next_after(ts("2026-01-01T00:00:00Z"), &utc),
        Some(ts("2026-01-01T00:00:30Z"))
    );
    let every_10s = Schedule::every(SignedDuration::from_secs(10)).unwrap();
    let fired = ts("2026-01-01T00:00:00Z");
    for (now, expected) in [
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:10Z"),
        ("2026-01-01T00:00:05Z", "2026-01-01T00:00:10Z"),
        ("2026-01-01T00:00:10Z", "2026-01-01T00:00:20Z"),
        // Down for 35 s: one fire for the missed slots, then back on the 10 s grid.
        ("2026-01-01T00:00:35Z", "2026-01-01T00:00:40Z"),
    ] {
        assert_eq!(
            every_10s.next_slot(fired, ts(now), &utc),
            Some(ts(expected)),
            "now {now}"
        );
    }
    let hourly = Schedule::cron("0 * * * *").unwrap();
    assert_eq!(
        hourly.next_slot(fired, ts("2026-01-01T03:20:00Z"), &utc),
        Some(ts("2026-01-01T04:00:00Z"))
    );
    assert!(Schedule::every(SignedDuration::from_millis(500)).is_err());
}

#[test]
fn bad_expressions_say_what_is_wrong() {
    let table = [
        ("* * * *", "5 fields"),
        ("* * * * * *", "got 6"),
        ("60 * * * *", "minute field: 60 is out of range 0-59"),
        ("* 24 * * *", "hour field: 24 is out of range 0-23"),
        ("* * 0 * *", "day-of-month field: 0 is out of range 1-31"),
        ("* * * 13 *", "month field: 13 is out of range 1-12"),
        ("* * * * 8", "day-of-week field: 8 is out of range 0-7"),
        ("*/0 * * * *", "step \"0\" must be a whole number above 0"),
        ("5-1 * * * *", "runs backwards"),
        ("* * * FOO *", "\"FOO\" is not a number or a known name"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
        ("", "got 0"),
    ];
    for (expr, message) in table {
        let err = expr.parse::<CronExpr>().unwrap_err().to_string();
        assert!(err.contains(message), "{expr:?}: {err}");
    }
}

#[test]
fn builder_matches_the_reference_docs() {
    assert_eq!(every(5).minutes().unwrap().to_string(), "*/5 * * * *");
    assert_eq!(every(2).hours().unwrap().to_string(), "0 */2 * * *");
    assert_eq!(
        every(30).seconds().unwrap(),
        Schedule::Every(SignedDuration::from_secs(30))
    );
    assert_eq!(daily().at("09:00").unwrap().to_string(), "0 9 * * *");
    assert_eq!(
        weekly().on("monday").at("09:00").unwrap().to_string(),
        "0 9 * * 1"
    );
    assert_eq!(
        weekly().on("SUN").at("23:59").unwrap().to_string(),
        "59 23 * * 0"
    );
    assert_eq!(
        weekly().on("7").at("00:00").unwrap().to_string(),
        "0 0 * * 0"
    );
    assert_eq!(
        monthly().on_day(15).at("12:00").unwrap().to_string(),
        "0 12 15 * *"
    );
    assert_eq!(cron("*/15 * * * *").unwrap().to_string(), "*/15 * * * *");
    assert_eq!(every(1).minutes().unwrap().to_string(), "* * * * *");
    assert_eq!(every(1).days().unwrap().to_string(), "0 0 * * *");
}

#[test]
fn builder_uses_intervals_where_a_cron_step_would_restart_early() {
    assert_eq!(
        every(7).minutes().unwrap(),
        Schedule::Every(SignedDuration::from_secs(420))
    );
    assert_eq!(
        every(90).minutes().unwrap(),
        Schedule::Every(SignedDuration::from_secs(5400))
    );
    assert_eq!(
        every(5).hours().unwrap(),
        Schedule::Every(SignedDuration::from_secs(18_000))
    );
    assert_eq!(
        every(3).days().unwrap(),
        Schedule::Every(SignedDuration::from_secs(259_200))
    );
}

#[test]
fn builder_refuses_bad_input() {
    assert!(every(0)
        .minutes()
        .unwrap_err()
        .to_string()
        .contains("at least 1"));
    assert!(daily().at("9am").unwrap_err().to_string().contains("HH:MM"));
    assert!(daily()
        .at("24:00")
        .unwrap_err()
        .to_string()
        .contains("between 00:00 and 23:59"));
    assert!(weekly().on("someday").at("09:00").is_err());
    assert!(monthly().on_day(32).at("09:00").is_err());
    assert!(cron("not cron").is_err());
}
