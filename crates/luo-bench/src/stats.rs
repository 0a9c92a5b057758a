//! Summaries of timed samples, and number formatting for the tables.

use std::time::Duration;

use serde::Serialize;

use crate::report::num;

/// A window of per-operation timings.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    /// The median, robust to the odd preemption or reallocation in a window.
    #[serde(serialize_with = "num")]
    pub median_ns: f64,
    #[serde(serialize_with = "num")]
    pub mean_ns: f64,
    #[serde(serialize_with = "num")]
    pub min_ns: f64,
    #[serde(serialize_with = "num")]
    pub max_ns: f64,
    pub samples: usize,
}

impl Summary {
    /// Summarises `samples`; all zero when there are none.
    pub fn of(samples: &[Duration]) -> Summary {
        let mut ns: Vec<f64> = samples.iter().map(|d| d.as_nanos() as f64).collect();
        ns.sort_by(f64::total_cmp);
        let n = ns.len();
        if n == 0 {
            return Summary {
                median_ns: 0.0,
                mean_ns: 0.0,
                min_ns: 0.0,
                max_ns: 0.0,
                samples: 0,
            };
        }
        let median_ns = if n % 2 == 1 {
            ns[n / 2]
        } else {
            (ns[n / 2 - 1] + ns[n / 2]) / 2.0
        };
        Summary {
            median_ns,
            mean_ns: ns.iter().sum::<f64>() / n as f64,
            min_ns: ns[0],
            max_ns: ns[n - 1],
            samples: n,
        }
    }
}

/// `1234567` as `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration for people: ns, µs, ms or s with three significant-ish digits.
pub fn human(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_grouping() {
        let d = |n| Duration::from_nanos(n);
        let s = Summary::of(&[d(5), d(1), d(100), d(3)]);
        assert_eq!((s.median_ns, s.min_ns, s.max_ns), (4.0, 1.0, 100.0));
        assert_eq!(Summary::of(&[d(7), d(1), d(9)]).median_ns, 7.0);
        assert_eq!(grouped(1_048_576), "1,048,576");
        assert_eq!(grouped(999), "999");
        assert_eq!(human(2_500.0), "2.50 µs");
    }
}
