//! Plain SVG charts, no dependency:
//! - [`render`]: demand, supply and decisions over time, one polyline per series, each reduced
//!   to at most [`MAX_POINTS`] points by keeping every bucket's maximum (peaks matter for
//!   provisioning);
//! - [`render_xy`]: points and curves on a logarithmic x axis and a linear y axis, with shaded
//!   bands of x (the risk sweep: cost against tau_U).

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

/// An SVG document's opening: the canvas, a white background, and `title` at `x`.
fn open_svg(title: &str, x: f64) -> String {
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(svg, r#"<text x="{x}" y="20">{}</text>"#, escape(title));
    svg
}

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
    let mut svg = open_svg(title, PAD);
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

/// One series of an x-y chart.
pub struct XySeries<'a> {
    /// Legend label.
    pub label: String,
    /// CSS colour.
    pub color: &'a str,
    /// Points `(x, y)`; x must be positive (the axis is logarithmic).
    pub points: Vec<(f64, f64)>,
    /// Join the points with a line (a curve), or mark them only.
    pub line: bool,
    /// A note beside each point (empty: none), e.g. the risk a point was asked at.
    pub notes: Vec<String>,
}

/// A shaded band of x, e.g. the tau_U that counts as calibrated for a risk asked.
pub struct Band {
    pub from: f64,
    pub to: f64,
    /// Written at the band's top.
    pub label: String,
}

/// Ticks for a logarithmic axis over `[lo, hi]`: 1, 2 and 5 of each decade.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let t = m * decade;
            if t >= lo * (1.0 - 1e-9) && t <= hi * (1.0 + 1e-9) {
                ticks.push(t);
            }
        }
        decade *= 10.0;
    }
    ticks
}

/// Ticks for a linear axis over `[lo, hi]`: about six at a step of 1, 2 or 5 times a power of
/// ten.
fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi - lo).max(f64::MIN_POSITIVE) / 6.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    // Rounded to the step's decimals: 6 * 0.2 is 1.2000000000000002 in binary.
    let scale = 10f64.powi((-step.log10().floor()).max(0.0) as i32);
    (first..=last)
        .map(|i| (i as f64 * step * scale).round() / scale)
        .collect()
}

/// A tick's text: as many decimals as it needs, up to three.
fn tick_label(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Renders `series` (and `bands`) on a logarithmic x axis and a linear y axis as an SVG
/// document. Points with x <= 0 or a value that is not finite are left out.
pub fn render_xy(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[XySeries<'_>],
    bands: &[Band],
) -> String {
    let usable = |&(x, y): &(f64, f64)| x > 0.0 && x.is_finite() && y.is_finite();
    let points = || {
        series
            .iter()
            .flat_map(|s| s.points.iter().filter(|p| usable(p)))
    };
    let xs = points().map(|p| p.0).chain(
        bands
            .iter()
            .flat_map(|b| [b.from, b.to])
            .filter(|x| *x > 0.0),
    );
    let (x_lo, x_hi) = xs.fold((f64::INFINITY, 0.0f64), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    let (x_lo, x_hi) = if x_lo.is_finite() {
        (x_lo / 1.25, x_hi * 1.25)
    } else {
        (0.1, 10.0)
    };
    let (y_lo, y_hi) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let (y_lo, y_hi) = if y_lo.is_finite() {
        let pad = ((y_hi - y_lo) * 0.05).max(0.01);
        (y_lo - pad, y_hi + pad)
    } else {
        (0.0, 1.0)
    };
    let (left, right, top, bottom) = (PAD + 20.0, W - 200.0, PAD, H - PAD);
    let x = |v: f64| left + (right - left) * (v / x_lo).ln() / (x_hi / x_lo).ln();
    let y = |v: f64| bottom - (bottom - top) * (v - y_lo) / (y_hi - y_lo);
    let mut svg = open_svg(title, left);
    for b in bands {
        let (from, to) = (x(b.from.max(x_lo)), x(b.to.min(x_hi)));
        let _ = writeln!(
            svg,
            r##"<rect x="{from:.1}" y="{top}" width="{w:.1}" height="{h}" fill="#2ca02c" fill-opacity="0.08"/><text x="{from:.1}" y="{ty}" fill="#2ca02c">{l}</text>"##,
            w = (to - from).max(0.0),
            h = bottom - top,
            ty = top - 4.0,
            l = escape(&b.label)
        );
    }
    let _ = writeln!(
        svg,
        r#"<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="black"/>"#
    );
    for t in log_ticks(x_lo, x_hi) {
        let _ = writeln!(
            svg,
            r##"<line x1="{p:.1}" y1="{top}" x2="{p:.1}" y2="{bottom}" stroke="#dddddd"/><text x="{p:.1}" y="{ty}" text-anchor="middle">{l}</text>"##,
            p = x(t),
            ty = bottom + 15.0,
            l = tick_label(t)
        );
    }
    for t in linear_ticks(y_lo, y_hi) {
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{p:.1}" x2="{right}" y2="{p:.1}" stroke="#dddddd"/><text x="{tx}" y="{p:.1}" text-anchor="end">{l}</text>"##,
            p = y(t),
            tx = left - 4.0,
            l = tick_label(t)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{cx:.1}" y="{ty}" text-anchor="middle">{l}</text>"#,
        cx = (left + right) / 2.0,
        ty = H - 12.0,
        l = escape(x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text x="14" y="{cy:.1}" text-anchor="middle" transform="rotate(-90 14 {cy:.1})">{l}</text>"#,
        cy = (top + bottom) / 2.0,
        l = escape(y_label)
    );
    for (k, s) in series.iter().enumerate() {
        let mut shown: Vec<(usize, (f64, f64))> = s
            .points
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, p)| usable(p))
            .collect();
        if s.line {
            shown.sort_by(|a, b| a.1.0.total_cmp(&b.1.0));
            let d: Vec<String> = shown
                .iter()
                .enumerate()
                .map(|(i, (_, (px, py)))| {
                    format!(
                        "{}{:.1},{:.1}",
                        if i == 0 { "M" } else { "L" },
                        x(*px),
                        y(*py)
                    )
                })
                .collect();
            let _ = writeln!(
                svg,
                r#"<path d="{}" fill="none" stroke="{}" stroke-width="1.5"/>"#,
                d.join(" "),
                s.color
            );
        }
        for (i, (px, py)) in &shown {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"/>"#,
                x(*px),
                y(*py),
                s.color
            );
            if let Some(note) = s.notes.get(*i).filter(|n| !n.is_empty()) {
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" fill="{}" font-size="10">{}</text>"#,
                    x(*px) + 5.0,
                    y(*py) - 5.0,
                    s.color,
                    escape(note)
                );
            }
        }
        let ly = top + 10.0 + 16.0 * k as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{lx}" y="{ry}" width="10" height="10" fill="{c}"/><text x="{tx}" y="{ly}">{l}</text>"#,
            lx = right + 15.0,
            ry = ly - 9.0,
            c = s.color,
            tx = right + 30.0,
            l = escape(&s.label)
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

    #[test]
    fn axis_ticks_fall_on_round_values_within_the_range() {
        assert_eq!(log_ticks(0.04, 3.0), vec![0.05, 0.1, 0.2, 0.5, 1.0, 2.0]);
        assert_eq!(linear_ticks(0.97, 1.93), vec![1.0, 1.2, 1.4, 1.6, 1.8]);
        assert_eq!(tick_label(0.5), "0.5");
        assert_eq!(tick_label(2.0), "2");
    }

    /// The x-y chart places a point's circle where its coordinates say: larger x to the right
    /// on a logarithmic scale, larger y higher up.
    #[test]
    fn xy_points_sit_where_their_values_say() {
        let series = [
            XySeries {
                label: "curve".into(),
                color: "red",
                points: vec![(1.0, 1.5), (0.1, 2.0), (10.0, 1.1)],
                line: true,
                notes: vec![],
            },
            XySeries {
                label: "a & b".into(),
                color: "blue",
                points: vec![(0.5, 1.2), (-1.0, 9.0), (f64::NAN, 1.0)],
                line: false,
                notes: vec!["0.5 %".into()],
            },
        ];
        let bands = [Band {
            from: 0.25,
            to: 0.75,
            label: "r".into(),
        }];
        let svg = render_xy("t", "tau_U %", "cost", &series, &bands);
        let circles: Vec<(f64, f64)> = svg
            .lines()
            .filter_map(|l| l.strip_prefix("<circle cx=\""))
            .map(|rest| {
                let mut parts = rest.split('"');
                let cx: f64 = parts.next().unwrap().parse().unwrap();
                let cy: f64 = parts.nth(1).unwrap().parse().unwrap();
                (cx, cy)
            })
            .collect();
        // The bad points (x <= 0, NaN) are left out; the curve's are drawn in x order.
        assert_eq!(circles.len(), 4, "{svg}");
        let (p01, p1, p10, blue) = (circles[0], circles[1], circles[2], circles[3]);
        assert!(p01.0 < p1.0 && p1.0 < p10.0);
        // Log scale: 0.1 -> 1 spans what 1 -> 10 spans.
        assert!(((p1.0 - p01.0) - (p10.0 - p1.0)).abs() < 0.2);
        assert!(p01.1 < p1.1 && p1.1 < p10.1, "higher cost is higher up");
        assert!(p01.0 < blue.0 && blue.0 < p1.0);
        assert!(svg.contains("a &amp; b") && svg.contains(">0.5 %<"));
        assert!(svg.contains("fill-opacity"), "the band is shaded");
    }
}
