//! A plain SVG of demand, supply and decisions over time: one polyline per series, each
//! reduced to at most [`MAX_POINTS`] points by keeping every bucket's maximum (peaks matter
//! for provisioning).

use std::fmt::Write;

/// Points per series after downsampling.
pub const MAX_POINTS: usize = 2000;

/// One series to draw.
pub struct Series<'a> {
    /// Legend label.
    pub label: &'a str,
    /// CSS colour.
    pub color: &'a str,
    /// One value per step; `None` breaks the line.
    pub values: Vec<Option<f64>>,
}

const W: f64 = 1200.0;
const H: f64 = 500.0;
const PAD: f64 = 50.0;

/// Render the series (all of the same length) as an SVG document.
pub fn render(title: &str, series: &[Series<'_>]) -> String {
    let n = series.iter().map(|s| s.values.len()).max().unwrap_or(0);
    let ymax = series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .fold(1.0f64, |a, &b| a.max(b));
    let bucket = n.div_ceil(MAX_POINTS).max(1);
    let x = |i: usize| PAD + (W - 2.0 * PAD) * i as f64 / (n.max(2) - 1) as f64;
    let y = |v: f64| H - PAD - (H - 2.0 * PAD) * v / ymax;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(svg, r#"<text x="{PAD}" y="20">{}</text>"#, escape(title));
    let _ = writeln!(
        svg,
        r#"<line x1="{PAD}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{b}" stroke="black"/>"#,
        b = H - PAD,
        r = W - PAD
    );
    let _ = writeln!(
        svg,
        r#"<text x="5" y="{}">{ymax:.0}</text><text x="5" y="{}">0</text>"#,
        PAD,
        H - PAD
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}">step {n}</text>"#,
        W - PAD - 60.0,
        H - PAD + 20.0
    );
    for (k, s) in series.iter().enumerate() {
        let mut path = String::new();
        let mut pen_down = false;
        for start in (0..s.values.len()).step_by(bucket) {
            let end = (start + bucket).min(s.values.len());
            let peak = s.values[start..end]
                .iter()
                .flatten()
                .copied()
                .reduce(f64::max);
            match peak {
                Some(v) => {
                    let _ = write!(
                        path,
                        "{}{:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        x(start),
                        y(v)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        let _ = writeln!(
            svg,
            r#"<path d="{}" fill="none" stroke="{}" stroke-width="1"/>"#,
            path.trim_end(),
            s.color
        );
        let ly = PAD + 15.0 * k as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{lx}" y="{ry}" width="10" height="10" fill="{c}"/><text x="{tx}" y="{ly}">{l}</text>"#,
            lx = W - PAD - 150.0,
            ry = ly - 9.0,
            c = s.color,
            tx = W - PAD - 135.0,
            l = escape(s.label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsamples_to_bounded_points() {
        let values: Vec<Option<f64>> = (0..10_000)
            .map(|i| if i == 5000 { None } else { Some(i as f64) })
            .collect();
        let svg = render(
            "t",
            &[Series {
                label: "demand",
                color: "black",
                values,
            }],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        let points = svg.matches('L').count() + svg.matches('M').count();
        assert!(points <= MAX_POINTS + 10, "{points}");
    }
}
