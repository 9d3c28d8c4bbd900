//! What a run measured: one figure per row, with the yardstick it is compared against (a
//! figure measured in the same run) and the target it is held to; printed as a table or as
//! one JSON document.

use serde_json::{json, Value};
use soniq_runner::cli::output::Output;

/// Which number a target bounds: the figure itself, or its ratio to the yardstick.
#[derive(Clone, Copy)]
pub enum Of {
    Value,
    Ratio,
}

#[derive(Clone, Copy)]
pub struct Target {
    of: Of,
    at_least: bool,
    bound: f64,
}

impl Target {
    pub fn ratio_at_least(bound: f64) -> Self {
        Target {
            of: Of::Ratio,
            at_least: true,
            bound,
        }
    }

    pub fn ratio_at_most(bound: f64) -> Self {
        Target {
            of: Of::Ratio,
            at_least: false,
            bound,
        }
    }

    pub fn value_at_most(bound: f64) -> Self {
        Target {
            of: Of::Value,
            at_least: false,
            bound,
        }
    }

    fn op(&self) -> &'static str {
        if self.at_least {
            ">="
        } else {
            "<="
        }
    }

    fn text(&self, unit: &str) -> String {
        match self.of {
            Of::Ratio => format!("ratio {} {:.2}", self.op(), self.bound),
            Of::Value => format!("{} {} {unit}", self.op(), number(self.bound, unit)),
        }
    }

    fn json(&self) -> Value {
        let of = match self.of {
            Of::Value => "value",
            Of::Ratio => "ratio",
        };
        json!({"of": of, "op": self.op(), "bound": self.bound})
    }
}

pub struct Figure {
    pub scenario: &'static str,
    /// A stable name within the scenario, for yardstick lookups and scripts.
    pub key: String,
    /// What was measured, for people.
    pub measure: String,
    pub value: f64,
    pub unit: &'static str,
    /// (what it is compared against, its value).
    yardstick: Option<(String, f64)>,
    target: Option<Target>,
}

impl Figure {
    pub fn new(
        scenario: &'static str,
        key: impl Into<String>,
        measure: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Self {
        Figure {
            scenario,
            key: key.into(),
            measure: measure.into(),
            value,
            unit,
            yardstick: None,
            target: None,
        }
    }

    /// Compare with a figure of the same run; `None` (not measured in this run) leaves it out.
    pub fn against(mut self, yardstick: Option<(String, f64)>) -> Self {
        self.yardstick = yardstick.filter(|(_, v)| *v > 0.0);
        self
    }

    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    pub fn ratio(&self) -> Option<f64> {
        self.yardstick.as_ref().map(|(_, y)| self.value / y)
    }

    /// Whether the target is met; `None` without a target, or when a ratio target has no
    /// yardstick in this run.
    pub fn met(&self) -> Option<bool> {
        let target = self.target?;
        let x = match target.of {
            Of::Value => self.value,
            Of::Ratio => self.ratio()?,
        };
        Some(if target.at_least {
            x >= target.bound
        } else {
            x <= target.bound
        })
    }

    fn json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "key": self.key,
            "measure": self.measure,
            "value": self.value,
            "unit": self.unit,
            "yardstick": self.yardstick.as_ref().map(|(m, v)| json!({"measure": m, "value": v})),
            "ratio": self.ratio(),
            "target": self.target.map(|t| t.json()),
            "met": self.met(),
        })
    }
}

/// Each figure of several rounds (in the first round's order): the round whose ratio (or, with
/// no yardstick, value) is the median, the lower one of the middle two for an even count, so
/// its value, yardstick and ratio come from one round. One round is returned as it is.
pub fn median_rounds(mut rounds: Vec<Vec<Figure>>) -> Vec<Figure> {
    if rounds.len() <= 1 {
        return rounds.pop().unwrap_or_default();
    }
    let count = rounds.len();
    let order: Vec<(&'static str, String)> = rounds[0]
        .iter()
        .map(|f| (f.scenario, f.key.clone()))
        .collect();
    let mut all: Vec<Figure> = rounds.into_iter().flatten().collect();
    let mut medians = Vec::with_capacity(order.len());
    for (scenario, key) in order {
        let (mut same, rest): (Vec<Figure>, Vec<Figure>) = all
            .into_iter()
            .partition(|f| f.scenario == scenario && f.key == key);
        all = rest;
        same.sort_by(|a, b| {
            let rank = |f: &Figure| f.ratio().unwrap_or(f.value);
            rank(a).total_cmp(&rank(b))
        });
        let seen = same.len();
        let mut median = same.swap_remove((seen - 1) / 2);
        median.measure = format!("{} (median of {seen} of {count} rounds)", median.measure);
        medians.push(median);
    }
    medians
}

/// A figure as people read it: rates as whole numbers with thousands separators.
pub fn number(value: f64, unit: &str) -> String {
    match unit {
        "jobs/s" | "jobs" => thousands(value.round() as i64),
        "ms" => format!("{value:.2}"),
        "xacts/job" => format!("{value:.3}"),
        "s" => format!("{value:.3}"),
        _ => format!("{value:.2}"),
    }
}

fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// A sample of soniq.jobs' size during churn.
pub struct SizeSample {
    pub seconds: f64,
    pub total_bytes: i64,
    pub table_bytes: i64,
    pub index_bytes: i64,
    pub queued: i64,
}

#[derive(Default)]
pub struct Report {
    /// In the order people read it (a JSON object would sort it).
    pub header: Vec<(String, Value)>,
    pub figures: Vec<Figure>,
    pub churn_samples: Vec<SizeSample>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn add(&mut self, figure: Figure) {
        eprintln!(
            "bench: {:<9} {} = {} {}",
            figure.scenario,
            figure.measure,
            number(figure.value, figure.unit),
            figure.unit
        );
        self.figures.push(figure);
    }

    /// A remark on the run (said once, however often it applies).
    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        if self.notes.contains(&note) {
            return;
        }
        eprintln!("bench: note: {note}");
        self.notes.push(note);
    }

    /// A figure of this run as a yardstick: (its description, its value).
    pub fn yardstick(&self, scenario: &str, key: &str) -> Option<(String, f64)> {
        self.figures
            .iter()
            .find(|f| f.scenario == scenario && f.key == key)
            .map(|f| (format!("{}/{}", f.scenario, f.key), f.value))
    }

    pub fn json(&self) -> Value {
        json!({
            "header": self.header.iter().cloned().collect::<serde_json::Map<_, _>>(),
            "figures": self.figures.iter().map(Figure::json).collect::<Vec<_>>(),
            "churn_samples": self.churn_samples.iter().map(|s| json!({
                "seconds": s.seconds,
                "total_bytes": s.total_bytes,
                "table_bytes": s.table_bytes,
                "index_bytes": s.index_bytes,
                "queued": s.queued,
            })).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }

    pub fn print(&self, out: &Output) {
        if out.json {
            out.print_json(&self.json());
            return;
        }
        for (name, value) in &self.header {
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Object(map) => map
                    .iter()
                    .map(|(k, v)| {
                        format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_string))
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                other => other.to_string(),
            };
            println!("{name}: {value}");
        }
        println!();
        let rows: Vec<Vec<String>> = self
            .figures
            .iter()
            .map(|f| {
                vec![
                    f.scenario.to_string(),
                    f.measure.clone(),
                    number(f.value, f.unit),
                    f.unit.to_string(),
                    f.yardstick
                        .as_ref()
                        .map(|(m, v)| format!("{m} ({})", number(*v, f.unit)))
                        .unwrap_or_else(|| "-".into()),
                    f.ratio().map_or("-".into(), |r| format!("{r:.3}")),
                    f.target.map_or("-".into(), |t| t.text(f.unit)),
                    match f.met() {
                        Some(true) => out.state("met"),
                        Some(false) => out.state("missed"),
                        None => "-".into(),
                    },
                ]
            })
            .collect();
        out.table(
            &[
                "scenario",
                "measure",
                "value",
                "unit",
                "yardstick",
                "ratio",
                "target",
                "result",
            ],
            &rows,
        );
        if !self.churn_samples.is_empty() {
            println!("\nchurn: size of soniq.jobs");
            let mb = |b: i64| format!("{:.1}", b as f64 / 1_048_576.0);
            let rows: Vec<Vec<String>> = self
                .churn_samples
                .iter()
                .map(|s| {
                    vec![
                        format!("{:.0}", s.seconds),
                        mb(s.total_bytes),
                        mb(s.table_bytes),
                        mb(s.index_bytes),
                        thousands(s.queued),
                    ]
                })
                .collect();
            out.table(
                &["seconds", "total MB", "table MB", "indexes MB", "queued"],
                &rows,
            );
        }
        for note in &self.notes {
            println!("note: {note}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(-1234), "-1,234");
    }

    #[test]
    fn the_median_round_of_each_figure_keeps_its_own_yardstick() {
        let drain = |value: f64, limit: f64| {
            Figure::new("drain", "best", "best", value, "jobs/s")
                .against(Some(("limit".into(), limit)))
        };
        let p50 = |value: f64| Figure::new("latency", "p50", "p50", value, "ms");
        let rounds = vec![
            vec![drain(60.0, 100.0), p50(0.7)],
            vec![drain(50.0, 50.0), p50(0.5)],
            vec![p50(0.6), drain(40.0, 100.0)],
        ];
        let medians = median_rounds(rounds);
        let keys: Vec<&str> = medians.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["best", "p50"]);
        // The ratios 0.6, 1.0, 0.4: the median is 0.6, of the first round, with its yardstick.
        assert_eq!((medians[0].value, medians[0].ratio()), (60.0, Some(0.6)));
        assert_eq!(medians[0].measure, "best (median of 3 of 3 rounds)");
        assert_eq!(medians[1].value, 0.6);
        // Two rounds: the lower of the two.
        let two = median_rounds(vec![vec![p50(0.9)], vec![p50(0.4)]]);
        assert_eq!(two[0].value, 0.4);
        // One round is left as it is.
        let one = median_rounds(vec![vec![p50(0.9)]]);
        assert_eq!(one[0].measure, "p50");
    }

    #[test]
    fn targets_on_ratio_and_value() {
        let f = Figure::new("drain", "c1", "c=1", 60.0, "jobs/s")
            .against(Some(("limit".into(), 100.0)))
            .target(Target::ratio_at_least(0.5));
        assert_eq!(f.ratio(), Some(0.6));
        assert_eq!(f.met(), Some(true));
        let f = Figure::new("latency", "p50", "p50", 3.0, "ms").target(Target::value_at_most(2.0));
        assert_eq!(f.met(), Some(false));
        let f = Figure::new("drain", "c1", "c=1", 60.0, "jobs/s")
            .against(None)
            .target(Target::ratio_at_least(0.5));
        assert_eq!(f.met(), None);
    }
}
