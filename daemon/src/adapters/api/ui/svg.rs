//! Charts drawn on the server as SVG: nothing to download, nothing to run
//! in the browser. Every mark carries a class and its value in a `data-`
//! attribute, so that a test (or a curious user) reads the figures back.

use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 240.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 12.0;
pub const PALETTE: [&str; 8] = [
    "#2b6cb0", "#dd6b20", "#38a169", "#e53e3e", "#805ad5", "#d69e2e", "#319795", "#718096",
];

/// Escapes text for SVG and HTML.
pub use relance_plugin_api::template::escape_html as esc;

fn open(out: &mut String, class: &str, title: &str) {
    let _ = write!(
        out,
        r#"<svg class="chart {class}" viewBox="0 0 {W} {H}" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = esc(title)
    );
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" y1="{y}" x2="{W}" y2="{y}" stroke="#999"/>"##,
        y = H - BOTTOM
    );
}

/// Says so when a chart has nothing to draw.
fn no_data(out: &mut String, empty: bool) {
    if empty {
        let _ = write!(
            out,
            r##"<text class="no-data" x="{x}" y="{y}" font-size="14" text-anchor="middle" fill="#718096">no data</text>"##,
            x = (LEFT + W) / 2.0,
            y = H / 2.0
        );
    }
}

/// The label under column `i` of `n`: every one up to `all`, else about
/// half that many, evenly spread.
fn x_label(out: &mut String, i: usize, n: usize, all: usize, x: f64, label: &str) {
    if n <= all || i.is_multiple_of((n / (all / 2)).max(1)) {
        let _ = write!(
            out,
            r##"<text x="{x:.1}" y="{y}" font-size="9" fill="#555">{l}</text>"##,
            y = H - BOTTOM + 12.0,
            l = esc(label)
        );
    }
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

fn y_axis(out: &mut String, lo: f64, hi: f64) {
    for i in 0..=4 {
        let v = lo + (hi - lo) * f64::from(i) / 4.0;
        let y = H - BOTTOM - (H - BOTTOM - TOP) * f64::from(i) / 4.0;
        let _ = write!(
            out,
            r##"<text x="{x}" y="{y2}" font-size="10" text-anchor="end" fill="#555">{v}</text><line x1="{LEFT}" y1="{y}" x2="{W}" y2="{y}" stroke="#eee"/>"##,
            x = LEFT - 4.0,
            y2 = y + 3.0,
            v = trim_num(v)
        );
    }
}

fn trim_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.2}").trim_end_matches('0').to_string()
    }
}

/// A vertical marker (a band threshold) at value `x` of a bar chart whose
/// bars cover `[x0, x0 + n × width)`.
#[derive(Clone, Debug)]
pub struct Marker {
    pub at: f64,
    pub label: String,
}

/// Vertical bars, one per `(label, value)`; `markers` are drawn at their
/// position on a numeric x axis running from `x0` by `step` per bar.
pub fn histogram(
    title: &str,
    bars: &[(String, u64)],
    x0: f64,
    step: f64,
    markers: &[Marker],
) -> String {
    let mut out = String::new();
    open(&mut out, "histogram", title);
    let max = nice_max(bars.iter().map(|b| b.1).max().unwrap_or(0) as f64);
    y_axis(&mut out, 0.0, max);
    let n = bars.len().max(1) as f64;
    let bw = (W - LEFT) / n;
    for (i, (label, v)) in bars.iter().enumerate() {
        let h = (H - BOTTOM - TOP) * (*v as f64) / max;
        let x = LEFT + bw * i as f64;
        let _ = write!(
            out,
            r##"<rect class="bar" data-label="{l}" data-value="{v}" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="#2b6cb0"><title>{l}: {v}</title></rect>"##,
            l = esc(label),
            y = H - BOTTOM - h,
            w = (bw - 1.0).max(0.5),
        );
        x_label(&mut out, i, bars.len(), 24, x, label);
    }
    no_data(&mut out, bars.iter().all(|b| b.1 == 0));
    for m in markers {
        if step <= 0.0 {
            break;
        }
        let x = LEFT + bw * (m.at - x0) / step;
        if !(LEFT..=W).contains(&x) {
            continue;
        }
        let _ = write!(
            out,
            r##"<line class="marker" data-at="{a}" x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{y}" stroke="#e53e3e" stroke-dasharray="4 3"/><text x="{tx:.1}" y="{ty}" font-size="10" fill="#e53e3e">{l}</text>"##,
            a = m.at,
            y = H - BOTTOM,
            tx = x + 3.0,
            ty = TOP + 10.0,
            l = esc(&m.label)
        );
    }
    out.push_str("</svg>");
    out
}

/// Stacked bars: one column per x label, one segment per series.
pub fn stacked(title: &str, xs: &[String], series: &[(String, Vec<u64>)]) -> String {
    let mut out = String::new();
    open(&mut out, "stacked", title);
    let totals: Vec<u64> = (0..xs.len())
        .map(|i| {
            series
                .iter()
                .map(|s| s.1.get(i).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let max = nice_max(totals.iter().copied().max().unwrap_or(0) as f64);
    y_axis(&mut out, 0.0, max);
    let bw = (W - LEFT) / xs.len().max(1) as f64;
    for (i, x_label_text) in xs.iter().enumerate() {
        let x = LEFT + bw * i as f64;
        let mut base = H - BOTTOM;
        for (k, (name, values)) in series.iter().enumerate() {
            let v = values.get(i).copied().unwrap_or(0);
            if v == 0 {
                continue;
            }
            let h = (H - BOTTOM - TOP) * v as f64 / max;
            base -= h;
            let _ = write!(
                out,
                r##"<rect class="seg" data-x="{xl}" data-series="{s}" data-value="{v}" x="{x:.1}" y="{base:.1}" width="{w:.1}" height="{h:.1}" fill="{c}"><title>{xl} {s}: {v}</title></rect>"##,
                xl = esc(x_label_text),
                s = esc(name),
                w = (bw - 2.0).max(0.5),
                c = PALETTE[k % PALETTE.len()]
            );
        }
        x_label(&mut out, i, xs.len(), 16, x, x_label_text);
    }
    no_data(&mut out, totals.iter().all(|t| *t == 0));
    out.push_str("</svg>");
    legend(&mut out, series.iter().map(|s| s.0.as_str()));
    out
}

/// Bars side by side: one group per x, one bar per series (each drawn,
/// zeros included, so a group always has one bar per series).
pub fn grouped(title: &str, xs: &[String], series: &[(String, Vec<u64>)]) -> String {
    let mut out = String::new();
    open(&mut out, "grouped", title);
    let top = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .max()
        .unwrap_or(0);
    let max = nice_max(top as f64);
    y_axis(&mut out, 0.0, max);
    let gw = (W - LEFT) / xs.len().max(1) as f64;
    let bw = ((gw - 6.0) / series.len().max(1) as f64).max(0.5);
    for (i, x_label_text) in xs.iter().enumerate() {
        let x0 = LEFT + gw * i as f64 + 3.0;
        for (k, (name, values)) in series.iter().enumerate() {
            let v = values.get(i).copied().unwrap_or(0);
            let h = (H - BOTTOM - TOP) * v as f64 / max;
            let _ = write!(
                out,
                r##"<rect class="bar" data-x="{xl}" data-series="{s}" data-value="{v}" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{c}"><title>{xl} {s}: {v}</title></rect>"##,
                xl = esc(x_label_text),
                s = esc(name),
                x = x0 + bw * k as f64,
                y = H - BOTTOM - h,
                w = (bw - 1.0).max(0.5),
                c = PALETTE[k % PALETTE.len()]
            );
        }
        x_label(
            &mut out,
            i,
            xs.len(),
            16,
            LEFT + gw * i as f64,
            x_label_text,
        );
    }
    no_data(&mut out, top == 0);
    out.push_str("</svg>");
    legend(&mut out, series.iter().map(|s| s.0.as_str()));
    out
}

fn legend<'a>(out: &mut String, names: impl Iterator<Item = &'a str>) {
    out.push_str(r#"<p class="legend">"#);
    for (k, n) in names.enumerate() {
        let _ = write!(
            out,
            r#"<span><i style="background:{}"></i>{}</span> "#,
            PALETTE[k % PALETTE.len()],
            esc(n)
        );
    }
    out.push_str("</p>");
}

/// A point of a line chart: x in seconds (any origin), y, and a label.
#[derive(Clone, Debug)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub label: String,
}

/// Lines over a shared x axis; `levels` are horizontal rules, `marks`
/// vertical ticks (planned sends), `crossings` highlighted points.
#[derive(Debug)]
pub struct Lines<'a> {
    pub title: &'a str,
    pub class: &'a str,
    pub series: Vec<(String, Vec<Point>)>,
    pub levels: Vec<(f64, String)>,
    pub marks: Vec<(f64, String)>,
    pub crossings: Vec<Point>,
    pub x_labels: Vec<(f64, String)>,
}

impl Lines<'_> {
    pub fn render(&self) -> String {
        let mut out = String::new();
        open(&mut out, self.class, self.title);
        let all = self.series.iter().flat_map(|s| s.1.iter());
        let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (f64::MAX, f64::MIN, 0.0f64, 0.0f64);
        for p in all.clone().chain(&self.crossings) {
            x_lo = x_lo.min(p.x);
            x_hi = x_hi.max(p.x);
            y_lo = y_lo.min(p.y);
            y_hi = y_hi.max(p.y);
        }
        for (x, _) in self.marks.iter().chain(&self.x_labels) {
            x_lo = x_lo.min(*x);
            x_hi = x_hi.max(*x);
        }
        for (y, _) in &self.levels {
            y_hi = y_hi.max(*y);
            y_lo = y_lo.min(*y);
        }
        if x_lo > x_hi {
            (x_lo, x_hi) = (0.0, 1.0);
        }
        if (x_hi - x_lo).abs() < 1e-9 {
            x_hi = x_lo + 1.0;
        }
        let y_hi = nice_max(y_hi * 1.05);
        let y_lo = if y_lo < 0.0 { -nice_max(-y_lo) } else { 0.0 };
        y_axis(&mut out, y_lo, y_hi);
        let px = |x: f64| LEFT + (W - LEFT - 8.0) * (x - x_lo) / (x_hi - x_lo);
        let py = |y: f64| H - BOTTOM - (H - BOTTOM - TOP) * (y - y_lo) / (y_hi - y_lo);
        for (y, name) in &self.levels {
            let _ = write!(
                out,
                r##"<line class="level" data-level="{n}" data-value="{y}" x1="{LEFT}" y1="{p:.1}" x2="{W}" y2="{p:.1}" stroke="#e53e3e" stroke-dasharray="4 3"/><text x="{tx}" y="{ty:.1}" font-size="10" fill="#e53e3e">{n} {y}</text>"##,
                n = esc(name),
                p = py(*y),
                tx = LEFT + 4.0,
                ty = py(*y) - 3.0
            );
        }
        for (x, label) in &self.x_labels {
            let at = px(*x);
            let anchor = if at > W - 40.0 {
                "end"
            } else if at < LEFT + 20.0 {
                "start"
            } else {
                "middle"
            };
            let _ = write!(
                out,
                r##"<text x="{at:.1}" y="{y}" font-size="9" fill="#555" text-anchor="{anchor}">{l}</text>"##,
                y = H - BOTTOM + 12.0,
                l = esc(label)
            );
        }
        for (k, (name, points)) in self.series.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            let mut d = String::new();
            for (i, p) in points.iter().enumerate() {
                let _ = write!(
                    d,
                    "{}{:.1} {:.1} ",
                    if i == 0 { "M" } else { "L" },
                    px(p.x),
                    py(p.y)
                );
            }
            let _ = write!(
                out,
                r#"<path class="line" data-series="{n}" d="{d}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                n = esc(name)
            );
            for p in points {
                let _ = write!(
                    out,
                    r#"<circle class="pt" data-series="{n}" data-value="{v}" cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{color}"><title>{l}: {v}</title></circle>"#,
                    n = esc(name),
                    v = trim_num(p.y),
                    x = px(p.x),
                    y = py(p.y),
                    l = esc(&p.label)
                );
            }
        }
        no_data(&mut out, self.series.iter().all(|s| s.1.is_empty()));
        for p in &self.crossings {
            let _ = write!(
                out,
                r##"<circle class="crossing" data-value="{v}" cx="{x:.1}" cy="{y:.1}" r="6" fill="none" stroke="#e53e3e" stroke-width="2"><title>{l}</title></circle>"##,
                v = trim_num(p.y),
                x = px(p.x),
                y = py(p.y),
                l = esc(&p.label)
            );
        }
        for (x, label) in &self.marks {
            let _ = write!(
                out,
                r##"<path class="send" d="M{p:.1} {b} l-5 -9 h10 z" fill="#805ad5"><title>{l}</title></path>"##,
                p = px(*x),
                b = H - BOTTOM,
                l = esc(label)
            );
        }
        out.push_str("</svg>");
        legend(&mut out, self.series.iter().map(|s| s.0.as_str()));
        out
    }
}

/// Horizontal bars from a zero line, one per `(label, value)`: a score's
/// contributions (negative ones to the left).
pub fn contributions(title: &str, items: &[(String, f64)]) -> String {
    let row = 20.0;
    let h = TOP + row * items.len().max(1) as f64 + 8.0;
    let width = W;
    let label_w = 230.0;
    let max = items.iter().map(|i| i.1.abs()).fold(0.0, f64::max).max(1.0);
    let has_neg = items.iter().any(|i| i.1 < 0.0);
    let zero = if has_neg {
        label_w + (width - label_w) / 2.0
    } else {
        label_w + 4.0
    };
    let span = if has_neg {
        (width - label_w) / 2.0 - 40.0
    } else {
        width - label_w - 60.0
    };
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart contributions" viewBox="0 0 {width} {h}" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = esc(title)
    );
    for (i, (label, v)) in items.iter().enumerate() {
        let y = TOP + row * i as f64;
        let len = span * v.abs() / max;
        let x = if *v < 0.0 { zero - len } else { zero };
        let color = if *v < 0.0 { "#e53e3e" } else { "#38a169" };
        let _ = write!(
            out,
            r##"<text x="{lx}" y="{ty:.1}" font-size="11" text-anchor="end" fill="#333">{l}</text><rect class="contrib" data-rule="{l}" data-points="{v}" x="{x:.1}" y="{y:.1}" width="{len:.1}" height="{bh}" fill="{color}"><title>{l}: {v}</title></rect><text x="{vx:.1}" y="{ty:.1}" font-size="10" fill="#555">{v}</text>"##,
            lx = label_w - 6.0,
            ty = y + 13.0,
            l = esc(label),
            v = trim_num(*v),
            bh = row - 6.0,
            vx = if *v < 0.0 { x - 34.0 } else { x + len + 4.0 },
        );
    }
    let _ = write!(
        out,
        r##"<line x1="{zero:.1}" y1="{TOP}" x2="{zero:.1}" y2="{b:.1}" stroke="#333"/></svg>"##,
        b = h - 4.0
    );
    out
}

/// A grid of counts; `href(row, col)` links each cell. Rows top to bottom.
pub fn heatmap(
    title: &str,
    rows: &[String],
    cols: &[String],
    counts: &[Vec<u64>],
    href: &dyn Fn(usize, usize) -> String,
) -> String {
    let cell_w = 110.0;
    let cell_h = 40.0;
    let left = 110.0;
    let width = left + cell_w * cols.len() as f64;
    let height = 24.0 + cell_h * rows.len() as f64 + 24.0;
    let max = counts.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart heatmap" viewBox="0 0 {width} {height}" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = esc(title)
    );
    for (j, c) in cols.iter().enumerate() {
        let _ = write!(
            out,
            r##"<text x="{x:.1}" y="16" font-size="11" text-anchor="middle" fill="#333">{c}</text>"##,
            x = left + cell_w * (j as f64 + 0.5),
            c = esc(c)
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let y = 24.0 + cell_h * i as f64;
        let _ = write!(
            out,
            r##"<text x="{x}" y="{ty:.1}" font-size="11" text-anchor="end" fill="#333">{r}</text>"##,
            x = left - 6.0,
            ty = y + cell_h / 2.0 + 4.0,
            r = esc(r)
        );
        for (j, col) in cols.iter().enumerate() {
            let n = counts
                .get(i)
                .and_then(|row| row.get(j))
                .copied()
                .unwrap_or(0);
            let alpha = 0.08 + 0.85 * n as f64 / max;
            let _ = write!(
                out,
                r##"<a href="{h}"><rect class="cell" data-row="{ri}" data-col="{ci}" data-count="{n}" x="{x:.1}" y="{y:.1}" width="{w}" height="{hh}" fill="#dd6b20" fill-opacity="{alpha:.2}" stroke="#fff"><title>{ri} × {ci}: {n}</title></rect><text x="{tx:.1}" y="{ty:.1}" font-size="12" text-anchor="middle" fill="#111">{n}</text></a>"##,
                h = esc(&href(i, j)),
                ri = esc(r),
                ci = esc(col),
                x = left + cell_w * j as f64,
                w = cell_w - 2.0,
                hh = cell_h - 2.0,
                tx = left + cell_w * (j as f64 + 0.5),
                ty = y + cell_h / 2.0 + 4.0,
            );
        }
    }
    let _ = write!(
        out,
        r##"<text x="{x:.1}" y="{y:.1}" font-size="11" text-anchor="middle" fill="#555">value →</text></svg>"##,
        x = left + cell_w * cols.len() as f64 / 2.0,
        y = height - 6.0
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_has_one_bar_per_bucket_and_escapes_labels() {
        let svg = histogram(
            "t",
            &[("<a>".into(), 3), ("b".into(), 0)],
            0.0,
            10.0,
            &[Marker {
                at: 10.0,
                label: "hot".into(),
            }],
        );
        assert_eq!(svg.matches(r#"class="bar""#).count(), 2);
        assert_eq!(svg.matches(r#"class="marker""#).count(), 1);
        assert!(svg.contains("&lt;a&gt;") && !svg.contains("<a>"));
    }

    #[test]
    fn a_heatmap_links_every_cell() {
        let rows = vec!["r1".to_string(), "r2".to_string()];
        let cols = vec!["c1".to_string()];
        let svg = heatmap("t", &rows, &cols, &[vec![1], vec![2]], &|i, j| {
            format!("/ui/x?r={i}&c={j}")
        });
        assert_eq!(svg.matches(r#"class="cell""#).count(), 2);
        assert!(svg.contains("/ui/x?r=1&amp;c=0"));
    }
}
