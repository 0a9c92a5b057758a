//! The JSON reports: serde structs, written pretty-printed.

use std::time::Duration;

use serde::{Serialize, Serializer};

/// A measurement: written with at most three decimals; NaN and infinities
/// become `null`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Num(pub f64);

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_finite() {
            s.serialize_f64((self.0 * 1000.0).round() / 1000.0)
        } else {
            s.serialize_none()
        }
    }
}

/// [`Num`] for `#[serde(serialize_with)]` on an `f64` field.
pub fn num<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    Num(*x).serialize(s)
}

/// Durations in milliseconds.
pub fn ms(v: &[Duration]) -> Vec<Num> {
    v.iter().map(|d| Num(d.as_secs_f64() * 1e3)).collect()
}

/// An object whose keys are known only at run time, in the given order.
#[derive(Debug, Clone)]
pub struct Fields<T>(pub Vec<(&'static str, T)>);

impl<T: Serialize> Serialize for Fields<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// `value` as JSON: two-space indent, keys in the structs' order, a
/// trailing newline.
pub fn to_json(value: &impl Serialize) -> String {
    let mut out = serde_json::to_string_pretty(value).expect("reports are plain data");
    out.push('\n');
    out
}

/// Writes `text` to `path` (its directory made if need be) and says so.
pub fn write(path: &std::path::Path, text: &str) -> Result<(), crate::cli::Failure> {
    use crate::cli::Failure;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::run(format!("creating {}: {e}", dir.display())))?;
    }
    std::fs::write(path, text)
        .map_err(|e| Failure::run(format!("writing {}: {e}", path.display())))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// Writes a benchmark's report to `path` as [`to_json`].
pub fn write_json(
    path: &std::path::Path,
    value: &impl Serialize,
) -> Result<(), crate::cli::Failure> {
    write(path, &to_json(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Sample {
        a: Vec<Num>,
        s: &'static str,
        nan: Num,
        e: Fields<u64>,
        f: Fields<Num>,
        none: Option<bool>,
    }

    #[test]
    fn renders_nested_values_rounds_and_escapes() {
        let v = Sample {
            a: vec![Num(1.0), Num(2.5), Num(0.123_456)],
            s: "q\"\\\n\u{1}",
            nan: Num(f64::NAN),
            e: Fields(vec![]),
            f: Fields(vec![("z", Num(1.5)), ("a", Num(f64::INFINITY))]),
            none: None,
        };
        let want = "{\n  \"a\": [\n    1.0,\n    2.5,\n    0.123\n  ],\n  \
                    \"s\": \"q\\\"\\\\\\n\\u0001\",\n  \"nan\": null,\n  \"e\": {},\n  \
                    \"f\": {\n    \"z\": 1.5,\n    \"a\": null\n  },\n  \"none\": null\n}\n";
        assert_eq!(to_json(&v), want);
    }
}
