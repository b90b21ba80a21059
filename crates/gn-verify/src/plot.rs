//! Minimal SVG line charts (no dependencies, one function): the harness report's figures
//! and the accuracy-for-energy chart of `verify --pareto`.

use std::fmt::Write as _;

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
    /// Draw a dot at each point.
    pub dots: bool,
    /// Indices of points to ring (the points no other point beats).
    pub ringed: Vec<usize>,
}

impl Series {
    /// A plain line.
    pub fn line(name: impl Into<String>, color: &'static str, points: Vec<(f64, f64)>, dashed: bool) -> Series {
        Series { name: name.into(), color, points, dashed, dots: false, ringed: Vec::new() }
    }
}

/// A tick label: three significant digits, without trailing zeros.
fn tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".into();
    }
    let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Axes of a chart.
pub struct Axes {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    /// Draw lines as steps (for staircases).
    pub steps: bool,
}

/// Renders series as an SVG line chart, 640×400.
pub fn line_chart(axes: &Axes, series: &[Series]) -> String {
    let (w, h, left, right, top, bottom) = (640.0, 400.0, 70.0, 170.0, 40.0, 50.0);
    let tx = |v: f64| if axes.log_x { v.max(1e-12).log2() } else { v };
    let ty = |v: f64| if axes.log_y { v.max(1e-12).log10() } else { v };
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.iter().map(|&(x, y)| (tx(x), ty(y)))).collect();
    let (mut x0, mut x1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, mut y1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if axes.log_y {
        y0 = y0.floor();
        y1 = y1.ceil();
    } else {
        let pad = (y1 - y0).max(1e-9) * 0.05;
        y0 -= pad;
        y1 += pad;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    x0 = x0.min(x1);
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        (w - right + left) / 2.0,
        axes.title
    );
    let _ =
        writeln!(s, r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#, h - bottom, w - right, h - bottom);
    let _ = writeln!(s, r#"<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>"#, h - bottom);
    // Ticks: on a log axis (T), at the first series' points when they are few.
    let xticks: Vec<f64> = series.first().map(|s| s.points.iter().map(|p| tx(p.0)).collect()).unwrap_or_default();
    let xticks: Vec<f64> = if axes.log_x && xticks.len() <= 12 {
        xticks
    } else {
        (0..=6).map(|i| x0 + (x1 - x0) * i as f64 / 6.0).collect()
    };
    for x in xticks {
        let label = if axes.log_x { tick(2f64.powf(x)) } else { tick(x) };
        let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">{label}</text>"#, px(x), h - bottom + 16.0);
    }
    let ny = if axes.log_y { (y1 - y0) as usize } else { 5 };
    for i in 0..=ny.max(1) {
        let y = y0 + (y1 - y0) * i as f64 / ny.max(1) as f64;
        let label = if axes.log_y { format!("1e{}", y.round()) } else { tick(y) };
        let _ = writeln!(s, r##"<line x1="{left}" y1="{0}" x2="{1}" y2="{0}" stroke="#ddd"/>"##, py(y), w - right);
        let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="end">{label}</text>"#, left - 6.0, py(y) + 4.0);
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (w - right + left) / 2.0,
        h - 12.0,
        axes.x_label
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(16,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
        (h - bottom + top) / 2.0,
        axes.y_label
    );
    for (i, series) in series.iter().enumerate() {
        let mut d = String::new();
        let mut prev: Option<(f64, f64)> = None;
        for &(x, y) in &series.points {
            let (x, y) = (px(tx(x)), py(ty(y)));
            match prev {
                None => {
                    let _ = write!(d, "M{x:.1},{y:.1}");
                }
                Some((_, py0)) if axes.steps => {
                    let _ = write!(d, " L{x:.1},{py0:.1} L{x:.1},{y:.1}");
                }
                Some(_) => {
                    let _ = write!(d, " L{x:.1},{y:.1}");
                }
            }
            prev = Some((x, y));
        }
        let dash = if series.dashed { r#" stroke-dasharray="6,4""# } else { "" };
        let _ = writeln!(s, r#"<path d="{d}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#, series.color);
        for (k, &(x, y)) in series.points.iter().enumerate() {
            let (x, y) = (px(tx(x)), py(ty(y)));
            if series.dots {
                let _ = writeln!(s, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{}"/>"#, series.color);
            }
            if series.ringed.contains(&k) {
                let _ = writeln!(s, r#"<circle cx="{x:.1}" cy="{y:.1}" r="7" fill="none" stroke="black"/>"#);
            }
        }
        let ly = top + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/>"#,
            w - right + 10.0,
            w - right + 30.0,
            series.color
        );
        let _ = writeln!(s, r#"<text x="{}" y="{}">{}</text>"#, w - right + 36.0, ly + 4.0, series.name);
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_keep_three_significant_digits() {
        assert_eq!(
            [tick(12.345), tick(0.012345), tick(4.0), tick(1234.6), tick(0.0)],
            ["12.3", "0.0123", "4", "1235", "0"]
        );
    }

    #[test]
    fn a_chart_draws_every_series_its_dots_and_its_rings() {
        let axes = Axes {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            log_x: false,
            log_y: false,
            steps: false,
        };
        let mut a = Series::line("a", "red", vec![(1.0, 1.0), (2.0, 3.0), (3.0, 2.0)], false);
        a.dots = true;
        a.ringed = vec![1];
        let b = Series::line("b", "blue", vec![(1.0, 0.0), (3.0, 1.0)], true);
        let svg = line_chart(&axes, &[a, b]);
        assert_eq!(svg.matches("<path").count(), 2);
        assert_eq!(svg.matches(r#"r="3""#).count(), 3);
        assert_eq!(svg.matches(r#"r="7""#).count(), 1);
        assert!(svg.contains(">a</text>") && svg.contains(">b</text>") && svg.ends_with("</svg>\n"));
    }
}
