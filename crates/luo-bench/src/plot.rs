//! A hand-written SVG line plot, log scale on both axes: data sizes double,
//! and blackouts span milliseconds to seconds.

use std::fmt::Write;

#[derive(Debug)]
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub dashed: bool,
    /// (bytes, milliseconds)
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 800.0;
const H: f64 = 460.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 220.0;
const TOP: f64 = 56.0;
const BOTTOM: f64 = 64.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn size_label(bytes: f64) -> String {
    const G: f64 = (1u64 << 30) as f64;
    const M: f64 = (1u64 << 20) as f64;
    if bytes >= G {
        format!("{} GiB", (bytes / G * 10.0).round() / 10.0)
    } else {
        format!("{} MiB", (bytes / M).round())
    }
}

fn ms_label(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{} s", ms / 1000.0)
    } else if ms >= 1.0 {
        format!("{ms} ms")
    } else {
        format!("{} µs", ms * 1000.0)
    }
}

fn value_label(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// Blackout (ms) against data size (bytes), one line per series.
pub fn blackout_svg(title: &str, subtitle: &str, series: &[Series]) -> String {
    let pts = || series.iter().flat_map(|s| s.points.iter().copied());
    let (mut x0, mut x1) = (f64::MAX, f64::MIN);
    let (mut y0, mut y1) = (f64::MAX, f64::MIN);
    for (x, y) in pts().filter(|&(x, y)| x > 0.0 && y > 0.0) {
        x0 = x0.min(x.log2());
        x1 = x1.max(x.log2());
        y0 = y0.min(y.log10());
        y1 = y1.max(y.log10());
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (20.0, 30.0, 0.0, 1.0);
    }
    // Half a doubling of room either side; whole decades on the time axis.
    let (x0, x1) = (x0 - 0.5, x1 + 0.5);
    let (y0, y1) = (y0.floor(), y1.ceil().max(y0.floor() + 1.0));
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let px = |x: f64| LEFT + (x.log2() - x0) / (x1 - x0) * pw;
    let py = |y: f64| TOP + ph - (y.log10() - y0) / (y1 - y0) * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="22" font-size="16" font-weight="bold">{}</text>"#,
        esc(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="40" fill="#555">{}</text>"##,
        esc(subtitle)
    );
    // Decades of the time axis.
    for d in (y0 as i32)..=(y1 as i32) {
        let v = 10f64.powi(d);
        let y = py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            LEFT + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y + 4.0,
            ms_label(v)
        );
    }
    // Each measured size on the size axis.
    let mut sizes: Vec<f64> = pts().map(|(x, _)| x).collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    for &x in &sizes {
        let xx = px(x);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#eee"/>"##,
            TOP + ph
        );
        let _ = writeln!(
            s,
            r#"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + ph + 18.0,
            size_label(x)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#888"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">data held by the service (log scale)</text>"#,
        LEFT + pw / 2.0,
        H - 16.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">blackout (log scale)</text>"#,
        TOP + ph / 2.0
    );
    for (i, se) in series.iter().enumerate() {
        let dash = if se.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let line: Vec<String> = se
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            line.join(" "),
            se.color
        );
        for &(x, y) in &se.points {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"/>"#,
                px(x),
                py(y),
                se.color
            );
            // A dashed series is a variant of the one before: its values
            // would print on top of that one's.
            if se.dashed {
                continue;
            }
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" fill="{}" font-size="11">{}</text>"#,
                px(x) + 6.0,
                py(y) - 6.0,
                se.color,
                value_label(y)
            );
        }
        // Legend, right of the plot.
        let ly = TOP + 10.0 + i as f64 * 22.0;
        let lx = LEFT + pw + 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2"{dash}/>"#,
            lx + 24.0,
            se.color
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 30.0,
            ly + 4.0,
            esc(&se.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_every_point_inside_the_frame() {
        let s = blackout_svg(
            "t",
            "a < b",
            &[Series {
                name: "luo".into(),
                color: "#1f77b4",
                dashed: false,
                points: vec![(256.0 * 1048576.0, 2.5), (4.0 * 1073741824.0, 3.0)],
            }],
        );
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert_eq!(s.matches("<circle").count(), 2);
        assert!(s.contains("a &lt; b"));
        assert!(s.contains("256 MiB") && s.contains("4 GiB"));
        for c in s.split("<circle").skip(1) {
            let cy: f64 = c
                .split("cy=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!((TOP..=H - BOTTOM).contains(&cy), "{cy}");
        }
    }
}
