//! The HTML report written at the end: one self-contained file (charts are
//! inline SVG drawn by plotters; no script, no network) with copies/s and
//! writes/s over time, copied bytes per snapshot against the prediction,
//! write latency with a snapshot child alive and without, and the table.
use std::{fmt::Write as _, path::PathBuf};

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;

use super::{COMPARISON_HEADER, Setting, Sink, bytes, comparison_cells, micros};
use crate::run::{
    compare::Comparison,
    sample::{End, Sample, Summary},
};

const SIZE: (u32, u32) = (900, 320);
const COPIES: RGBColor = RGBColor(214, 39, 40);
const WRITES: RGBColor = RGBColor(31, 119, 180);

/// One workload's part of the report.
struct Part {
    setting: Setting,
    samples: Vec<Sample>,
    body: String,
}

pub struct Html {
    path: PathBuf,
    parts: Vec<Part>,
    comparison: Option<Comparison>,
}

impl Html {
    pub fn new(path: PathBuf) -> Html {
        Html { path, parts: Vec::new(), comparison: None }
    }

    /// The whole file, rewritten after each workload so it is always complete.
    fn write(&self) -> Result<()> {
        let mut page = String::from(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>snapshot run</title><style>\
             body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}\
             td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style></head><body><h1>snapshot run</h1>",
        );
        if let Some(c) = &self.comparison {
            page.push_str(&comparison_table(c));
        }
        for part in &self.parts {
            page.push_str(&part.body);
        }
        page.push_str("</body></html>\n");
        let mut file = crate::output::create(&self.path)?;
        std::io::Write::write_all(&mut file, page.as_bytes()).with_context(|| format!("writing {}", self.path.display()))
    }
}

impl Sink for Html {
    fn begin(&mut self, setting: &Setting) -> Result<()> {
        self.parts.push(Part { setting: setting.clone(), samples: Vec::new(), body: String::new() });
        Ok(())
    }

    fn interval(&mut self, sample: &Sample) -> Result<()> {
        if let Some(part) = self.parts.last_mut() {
            part.samples.push(sample.clone());
        }
        Ok(())
    }

    fn compare(&mut self, comparison: &Comparison) -> Result<()> {
        self.comparison = Some(comparison.clone());
        self.write()
    }

    fn snapshot(&mut self, _: &Summary) -> Result<()> {
        Ok(())
    }

    fn end(&mut self, end: &End, summaries: &[Summary]) -> Result<()> {
        if let Some(part) = self.parts.last_mut() {
            part.body = render(&part.setting, &part.samples, summaries, end)?;
        }
        self.write()
    }
}

fn render(setting: &Setting, samples: &[Sample], summaries: &[Summary], end: &End) -> Result<String> {
    let mut page = String::new();
    let _ = write!(
        page,
        "<h2>{} pages</h2><p>{} (pid {}) on {}: {} keys &times; {} B = {}, {} ops/s {:?}, reads {:.0}%, \
         snapshot every {} s; {:.0} s, {} writes, {} snapshots.</p>",
        escape(setting.pages_observed.as_deref().unwrap_or("server's")),
        escape(&setting.server),
        setting.pid,
        escape(&setting.addr),
        setting.keys,
        setting.value_size,
        bytes(setting.dataset_bytes),
        setting.rate,
        setting.dist,
        setting.read_ratio * 100.0,
        setting.every_s,
        end.duration_s,
        end.writes,
        summaries.len()
    );
    page.push_str("<h3>Copies/s and writes/s over time</h3>");
    page.push_str(&rates_chart(samples)?);
    page.push_str("<h3>Copied bytes per snapshot: measured (red), predicted (blue)</h3>");
    page.push_str(&bars(summaries, "MiB", |s| [s.copied_bytes as f64 / 1048576.0, s.predicted_bytes as f64 / 1048576.0])?);
    page.push_str("<h3>Write latency p99: snapshot child alive (red), no child (blue)</h3>");
    page.push_str(&bars(summaries, "µs", |s| [s.latency.child_alive.p99_us as f64, s.latency.no_child.p99_us as f64])?);
    page.push_str(&table(summaries));
    Ok(page)
}

fn rates_chart(samples: &[Sample]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("chart: {e}"))?;
        let x1 = samples.last().map_or(1.0, |s| s.t_s).max(1.0);
        let top = samples.iter().map(|s| s.copies_per_s.max(s.writes_per_s)).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x1, 0.0..top)
            .map_err(|e| anyhow!("chart: {e}"))?;
        chart.configure_mesh().x_desc("seconds").y_desc("per second").draw().map_err(|e| anyhow!("chart: {e}"))?;
        for (name, color, pick) in [
            ("copies/s", COPIES, (|s: &Sample| s.copies_per_s) as fn(&Sample) -> f64),
            ("writes/s", WRITES, |s: &Sample| s.writes_per_s),
        ] {
            chart
                .draw_series(LineSeries::new(samples.iter().map(|s| (s.t_s, pick(s))), color.stroke_width(3)))
                .map_err(|e| anyhow!("chart: {e}"))?
                .label(name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3)));
        }
        chart.configure_series_labels().background_style(WHITE).border_style(BLACK).draw().map_err(|e| anyhow!("chart: {e}"))?;
        root.present().map_err(|e| anyhow!("chart: {e}"))?;
    }
    Ok(svg)
}

/// Two bars per snapshot: red the first value, blue the second.
fn bars(summaries: &[Summary], unit: &str, values: impl Fn(&Summary) -> [f64; 2]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("chart: {e}"))?;
        let n = summaries.len().max(1) as f64;
        let top = summaries.iter().flat_map(&values).fold(1e-9, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..n - 0.5, 0.0..top)
            .map_err(|e| anyhow!("chart: {e}"))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("snapshot")
            .y_desc(unit)
            .x_labels(summaries.len() + 1)
            .x_label_formatter(&|x| if x.fract() == 0.0 && *x >= 0.0 { format!("{}", *x as usize + 1) } else { String::new() })
            .draw()
            .map_err(|e| anyhow!("chart: {e}"))?;
        let rects = summaries.iter().enumerate().flat_map(|(i, s)| {
            let [a, b] = values(s);
            let x = i as f64;
            [
                Rectangle::new([(x - 0.4, 0.0), (x - 0.02, a)], COPIES.filled()),
                Rectangle::new([(x + 0.02, 0.0), (x + 0.4, b)], WRITES.filled()),
            ]
        });
        chart.draw_series(rects).map_err(|e| anyhow!("chart: {e}"))?;
        root.present().map_err(|e| anyhow!("chart: {e}"))?;
    }
    Ok(svg)
}

fn table(summaries: &[Summary]) -> String {
    let mut t = String::from(
        "<h3>Snapshots</h3><table><tr><th>#</th><th>fork</th><th>seconds</th><th>copies</th><th>copied</th>\
         <th>share</th><th>amplification</th><th>writes/s</th><th>p50/p99/p999 child</th>\
         <th>p50/p99/p999 no child</th><th>predicted</th><th>error</th><th>Private_Dirty</th></tr>",
    );
    for s in summaries {
        let lat = |l: &crate::run::sample::Latency| {
            format!("{}/{}/{}", micros(l.p50_us), micros(l.p99_us), micros(l.p999_us))
        };
        let _ = write!(
            t,
            "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{:.1}%</td><td>{:.1}</td>\
             <td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{:+.1}%</td><td>{}</td></tr>",
            s.index,
            micros(s.fork_usec),
            s.duration_s,
            s.copies,
            bytes(s.copied_bytes),
            s.copied_share * 100.0,
            s.amplification,
            s.writes_per_s,
            lat(&s.latency.child_alive),
            lat(&s.latency.no_child),
            bytes(s.predicted_bytes),
            s.prediction_error * 100.0,
            s.private_dirty_bytes.map(bytes).unwrap_or_else(|| "-".into())
        );
    }
    t.push_str("</table>");
    t
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn comparison_table(c: &Comparison) -> String {
    let mut t = String::from("<h2>Workloads compared (medians per snapshot)</h2><table><tr>");
    for h in COMPARISON_HEADER {
        let _ = write!(t, "<th>{h}</th>");
    }
    t.push_str("</tr>");
    for r in &c.rows {
        t.push_str("<tr>");
        for cell in comparison_cells(r) {
            let _ = write!(t, "<td>{}</td>", escape(&cell));
        }
        t.push_str("</tr>");
    }
    t.push_str("</table>");
    t
}
