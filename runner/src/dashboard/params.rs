//! A page's query string, checked: every parameter known to the page, given once, and well
//! formed (names, statuses, times, ids, page cursors). What is wrong is said in a 400 page;
//! nothing malformed reaches the database. An empty value (a form's blank field) is absent.

use super::PageError;
use crate::store::postgres::browse::{DeadKey, Page};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// The extension's rule for task and queue names (`src/names.rs`), restated so a bad filter
/// gets its 400 before any query: a letter, then ASCII letters, digits and `_ . : -`.
fn name_problem(kind: &str, name: &str, max_len: usize) -> Option<String> {
    let well_formed = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
    if name.chars().count() > max_len {
        Some(format!("the {kind} is longer than {max_len} characters"))
    } else if !well_formed {
        Some(format!(
            "{name:?} is not a {kind}: it starts with a letter and holds ASCII letters, digits and _ . : -"
        ))
    } else {
        None
    }
}

const MAX_TASK_NAME_LEN: usize = 200;
const MAX_QUEUE_NAME_LEN: usize = 100;
/// Tags are free text; a filter longer than this is a mistake.
const MAX_TAG_LEN: usize = 200;

pub struct Params {
    values: BTreeMap<String, String>,
    /// The parameters that may repeat (a form's ticked boxes), in order.
    lists: BTreeMap<String, Vec<String>>,
}

fn bad(message: String) -> PageError {
    PageError::BadRequest(message)
}

impl Params {
    /// Parses `query`, refusing a parameter this page does not take or one given twice.
    pub fn parse(query: Option<&str>, known: &[&str]) -> Result<Params, PageError> {
        Params::parse_with_lists(query.unwrap_or(""), known, &[])
    }

    /// Parses a query string or a form's body; the `lists` parameters may repeat.
    pub fn parse_with_lists(
        text: &str,
        known: &[&str],
        lists: &[&str],
    ) -> Result<Params, PageError> {
        let mut params = Params {
            values: BTreeMap::new(),
            lists: BTreeMap::new(),
        };
        for (key, value) in form_urlencoded::parse(text.as_bytes()) {
            if !known.contains(&&*key) && !lists.contains(&&*key) {
                let mut takes = known.to_vec();
                takes.extend(lists);
                return Err(bad(format!(
                    "this page takes no parameter {key:?} (it takes {})",
                    takes.join(", ")
                )));
            }
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            if lists.contains(&&*key) {
                params
                    .lists
                    .entry(key.to_string())
                    .or_default()
                    .push(value.to_string());
            } else if params
                .values
                .insert(key.to_string(), value.to_string())
                .is_some()
            {
                return Err(bad(format!("the parameter {key:?} is given twice")));
            }
        }
        Ok(params)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Those of `keys` that are given, as (key, value), in `keys`' order.
    pub fn pairs<'k>(&self, keys: &[&'k str]) -> Vec<(&'k str, &str)> {
        keys.iter()
            .filter_map(|key| self.get(key).map(|value| (*key, value)))
            .collect()
    }

    /// Those of `keys` that are given, as a query string (for links that keep a page's filters).
    pub fn query_of(&self, keys: &[&str]) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.extend_pairs(self.pairs(keys));
        query.finish()
    }

    /// The values of a repeatable parameter, in order.
    pub fn list(&self, key: &str) -> &[String] {
        self.lists.get(key).map_or(&[], Vec::as_slice)
    }

    pub fn queue(&self, key: &str) -> Result<Option<String>, PageError> {
        self.name(key, "queue name", MAX_QUEUE_NAME_LEN)
    }

    pub fn task_name(&self, key: &str) -> Result<Option<String>, PageError> {
        self.name(key, "task name", MAX_TASK_NAME_LEN)
    }

    fn name(&self, key: &str, kind: &str, max_len: usize) -> Result<Option<String>, PageError> {
        let Some(name) = self.get(key) else {
            return Ok(None);
        };
        match name_problem(kind, name, max_len) {
            Some(problem) => Err(bad(format!("{key}: {problem}"))),
            None => Ok(Some(name.to_string())),
        }
    }

    pub fn tag(&self, key: &str) -> Result<Option<String>, PageError> {
        match self.get(key) {
            Some(tag) if tag.chars().count() > MAX_TAG_LEN => Err(bad(format!(
                "{key}: a tag is at most {MAX_TAG_LEN} characters"
            ))),
            tag => Ok(tag.map(str::to_string)),
        }
    }

    /// One of `allowed`.
    pub fn one_of(&self, key: &str, allowed: &[&str]) -> Result<Option<String>, PageError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) if allowed.contains(&value) => Ok(Some(value.to_string())),
            Some(value) => Err(bad(format!(
                "{key}: {value:?} is not one of {}",
                allowed.join(", ")
            ))),
        }
    }

    /// A time: RFC 3339 (`2026-12-02T10:00:00Z`, an offset, fractions), or a date and time
    /// without an offset as a browser's date-time field sends it (`2026-12-02T10:00`), or a
    /// date; both of the latter in UTC.
    pub fn time(&self, key: &str) -> Result<Option<SystemTime>, PageError> {
        let Some(text) = self.get(key) else {
            return Ok(None);
        };
        let parsed = text
            .parse::<jiff::Timestamp>()
            .or_else(|_| {
                text.parse::<jiff::civil::DateTime>()
                    .and_then(|t| jiff::tz::TimeZone::UTC.to_timestamp(t))
            })
            .or_else(|_| {
                text.parse::<jiff::civil::Date>().and_then(|d| {
                    jiff::tz::TimeZone::UTC
                        .to_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
                })
            });
        match parsed.map(SystemTime::try_from) {
            Ok(Ok(t)) => Ok(Some(t)),
            _ => Err(bad(format!(
                "{key}: {text:?} is not a time (e.g. 2026-12-02T10:00:00Z, 2026-12-02T10:00 in UTC, or 2026-12-02)"
            ))),
        }
    }

    /// A time range `from_key`..`to_key`, refused when it ends before it starts.
    pub fn time_range(
        &self,
        from_key: &str,
        to_key: &str,
    ) -> Result<(Option<SystemTime>, Option<SystemTime>), PageError> {
        let (from, to) = (self.time(from_key)?, self.time(to_key)?);
        if let (Some(from), Some(to)) = (from, to) {
            if to < from {
                return Err(bad(format!("{to_key} is before {from_key}")));
            }
        }
        Ok((from, to))
    }

    /// A count: a whole number, 0 or more.
    pub fn count(&self, key: &str) -> Result<Option<u64>, PageError> {
        self.get(key)
            .map(|text| {
                text.parse()
                    .map_err(|_| bad(format!("{key}: {text:?} is not a count")))
            })
            .transpose()
    }

    /// A time given as microseconds since 1970 (what [`micros`] writes).
    pub fn micros(&self, key: &str) -> Result<Option<SystemTime>, PageError> {
        self.get(key)
            .map(|text| {
                from_micros(text).ok_or_else(|| bad(format!("{key}: {text:?} is not a time")))
            })
            .transpose()
    }

    pub fn uuid(&self, key: &str) -> Result<Option<Uuid>, PageError> {
        self.get(key).map(|text| parse_uuid(key, text)).transpose()
    }

    /// The page asked for: `before` (older rows) or `after` (newer rows) a cursor, or the first.
    pub fn page<K>(&self, parse: impl Fn(&str) -> Option<K>) -> Result<Page<K>, PageError> {
        let cursor = |key: &str| {
            self.get(key)
                .map(|text| {
                    parse(text).ok_or_else(|| {
                        bad(format!("{key}: {text:?} is not a page cursor of this page"))
                    })
                })
                .transpose()
        };
        match (cursor("before")?, cursor("after")?) {
            (Some(_), Some(_)) => Err(bad("give before or after, not both".into())),
            (Some(key), None) => Ok(Page::Older(key)),
            (None, Some(key)) => Ok(Page::Newer(key)),
            (None, None) => Ok(Page::First),
        }
    }
}

/// A queue name taken from a path.
pub fn check_queue_name(text: &str) -> Result<String, PageError> {
    match name_problem("queue name", text, MAX_QUEUE_NAME_LEN) {
        Some(problem) => Err(bad(problem)),
        None => Ok(text.to_string()),
    }
}

/// A schedule name taken from a path (the task names' rule).
pub fn schedule_name(text: &str) -> Result<String, PageError> {
    match name_problem("schedule name", text, MAX_TASK_NAME_LEN) {
        Some(problem) => Err(bad(problem)),
        None => Ok(text.to_string()),
    }
}

pub fn parse_uuid(what: &str, text: &str) -> Result<Uuid, PageError> {
    Uuid::try_parse(text).map_err(|_| bad(format!("{what}: {text:?} is not a job id (a UUID)")))
}

/// The latest time a page takes (the end of year 9999, as far as PostgreSQL's timestamps go
/// before their limit), in microseconds since 1970.
const MAX_MICROS: u64 = 253_402_300_799_999_999;

/// A time as microseconds since 1970.
pub fn micros(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros())
}

fn from_micros(text: &str) -> Option<SystemTime> {
    let micros: u64 = text.parse().ok()?;
    (micros <= MAX_MICROS).then(|| UNIX_EPOCH + Duration::from_micros(micros))
}

/// A dead job's cursor: its id, a dot, and when it died in microseconds since 1970.
pub fn dead_cursor((moved_at, id): DeadKey) -> String {
    format!("{id}.{}", micros(moved_at))
}

pub fn parse_dead_cursor(text: &str) -> Option<DeadKey> {
    let (id, micros) = text.split_once('.')?;
    Some((from_micros(micros)?, Uuid::try_parse(id).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> Params {
        Params::parse(Some(query), &["queue", "from", "to", "before", "after"]).unwrap()
    }

    fn refusal<T>(result: Result<T, PageError>) -> String {
        match result {
            Err(PageError::BadRequest(message)) => message,
            _ => panic!("expected a 400"),
        }
    }

    #[test]
    fn unknown_repeated_and_malformed_parameters_are_refused_with_the_reason() {
        let unknown = refusal(Params::parse(Some("queue=a&limit=5"), &["queue"]));
        assert!(unknown.contains("\"limit\""), "{unknown}");
        let twice = refusal(Params::parse(Some("queue=a&queue=b"), &["queue"]));
        assert!(twice.contains("twice"), "{twice}");
        assert!(refusal(params("queue=1abc").queue("queue")).contains("starts with a letter"));
        assert!(refusal(params("queue=a%20b").queue("queue")).contains("is not a queue name"));
        let long = format!("queue={}", "q".repeat(101));
        assert!(refusal(params(&long).queue("queue")).contains("longer than 100"));
        assert!(refusal(params("from=yesterday").time("from")).contains("is not a time"));
        assert!(
            refusal(params("from=2026-12-02&to=2026-12-01").time_range("from", "to"))
                .contains("to is before from")
        );
        let both = params("before=a&after=b");
        assert!(refusal(both.page(|_| Some(()))).contains("not both"));
        assert!(
            refusal(params("before=zz").page(|t| Uuid::try_parse(t).ok()))
                .contains("not a page cursor")
        );
    }

    #[test]
    fn blank_fields_are_absent_and_good_values_parse() {
        let p = params("queue=&from=2026-12-02T10:00&to=2026-12-02T11:00:00%2B01:00");
        assert_eq!(p.queue("queue").unwrap(), None);
        let (from, to) = p.time_range("from", "to").unwrap();
        assert_eq!(from, to, "10:00 UTC is 11:00+01:00");
        assert!(params("from=2026-12-02").time("from").unwrap().is_some());
        assert_eq!(params("").page(|_| Some(())).unwrap(), Page::First);
    }

    #[test]
    fn a_dead_cursor_reads_back_to_its_key() {
        let key = (
            UNIX_EPOCH + Duration::from_micros(1_764_670_000_123_456),
            Uuid::from_u128(0x0193_8f2a_7c00_7000_8000_0000_0000_0042),
        );
        assert_eq!(parse_dead_cursor(&dead_cursor(key)), Some(key));
        assert_eq!(parse_dead_cursor("nonsense"), None);
        assert_eq!(parse_dead_cursor(&format!("{}.-5", key.1)), None);
        let beyond = format!("{}.{}", key.1, MAX_MICROS + 1);
        assert_eq!(
            parse_dead_cursor(&beyond),
            None,
            "past what PostgreSQL stores"
        );
    }
}
