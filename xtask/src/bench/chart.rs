//! One SVG chart per benchmark: a panel per metric, a bar per condition
//! (the median) with a line over its min–max. Drawn by hand: a few rects and
//! lines, no font or plotting dependency.
use std::fmt::Write as _;

use super::stats::{Metric, Summary, fmt, summarize};

const WIDTH: f64 = 900.0;
const LABEL: f64 = 170.0;
const BAR: f64 = 18.0;
const GAP: f64 = 6.0;
const TITLE: f64 = 40.0;

pub fn svg(title: &str, metrics: &[Metric]) -> String {
    let panels: Vec<(&Metric, Vec<Summary>)> =
        metrics.iter().map(|m| (m, summarize(m))).filter(|(_, rows)| !rows.is_empty()).collect();
    let height: f64 = 30.0 + panels.iter().map(|(_, rows)| TITLE + rows.len() as f64 * (BAR + GAP) + 10.0).sum::<f64>();
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="8" y="18" font-size="14" font-weight="bold">{}</text>"#, escape(title));
    let mut y = 30.0;
    for (m, rows) in &panels {
        y = panel(&mut s, m, rows, y);
    }
    s.push_str("</svg>\n");
    s
}

fn panel(s: &mut String, m: &Metric, rows: &[Summary], mut y: f64) -> f64 {
    let better = if m.better == "higher" { "higher is better" } else { "lower is better" };
    let _ = writeln!(s, r#"<text x="8" y="{}" font-weight="bold">{}</text>"#, y + 16.0, escape(&m.title));
    let ratio = m.baseline.as_deref().map(|b| format!(", (×) = ratio to {}", escape(b))).unwrap_or_default();
    let _ = writeln!(s, r##"<text x="8" y="{}" font-size="11" fill="#444444">{}; {better}; bar = median, line = min–max{ratio}</text>"##, y + 31.0, escape(&m.unit));
    y += TITLE;
    let top = rows.iter().map(|r| r.max.max(r.median)).fold(0.0_f64, f64::max);
    let low = rows.iter().map(|r| r.min.min(r.median)).fold(0.0_f64, f64::min);
    let span = if top - low > 0.0 { top - low } else { 1.0 };
    let plot = WIDTH - LABEL - 160.0;
    let x_of = |v: f64| LABEL + (v - low) / span * plot;
    for r in rows {
        let (x0, x1) = (x_of(0.0_f64.max(low)), x_of(r.median));
        let (a, b) = (x0.min(x1), x0.max(x1));
        let color = if Some(&r.cond) == m.baseline.as_ref() { "#888888" } else { "#3b6ea5" };
        let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, LABEL - 6.0, y + 13.0, escape(&r.cond));
        let _ = writeln!(s, r#"<rect x="{a:.1}" y="{y:.1}" width="{:.1}" height="{BAR}" fill="{color}"/>"#, (b - a).max(1.0));
        let mid = y + BAR / 2.0;
        let _ = writeln!(s, r#"<line x1="{:.1}" y1="{mid:.1}" x2="{:.1}" y2="{mid:.1}" stroke="black" stroke-width="1.5"/>"#, x_of(r.min), x_of(r.max));
        let ratio = r.ratio.map(|q| format!(" ({q:.3}×)")).unwrap_or_default();
        let _ = writeln!(s, r#"<text x="{:.1}" y="{}">{}{ratio}</text>"#, x_of(r.max.max(r.median)) + 4.0, y + 13.0, fmt(r.median));
        y += BAR + GAP;
    }
    y + 10.0
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_per_condition_and_text_escaped() {
        let m: Metric = serde_json::from_str(
            r#"{"id":"x","title":"a <b> & c","unit":"s","better":"lower","baseline":"none","samples":{"none":[1,2,3],"t<1>":[2,4]}}"#,
        )
        .unwrap();
        let svg = svg("chart", &[m]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 1 + 2, "background + one bar per condition");
        assert!(svg.contains("a &lt;b&gt; &amp; c") && svg.contains("t&lt;1&gt;"));
        assert!(svg.contains("(1.500×)"), "{svg}");
    }
}
