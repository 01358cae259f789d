//! The live screen (ratatui): the latest interval, the snapshot in progress
//! with its prediction, a chart of copies/s against writes/s, and the
//! finished snapshots. q, Esc or Ctrl-C quits.
use std::{collections::VecDeque, time::Duration};

use anyhow::{Context, Result};
use ratatui::{
    DefaultTerminal, Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout, Rect},
    style::{Color, Style, Stylize},
    symbols::Marker,
    text::Line,
    widgets::{Axis, Block, Chart, Dataset, GraphType, Paragraph, Row, Table},
};

use super::{SUMMARY_HEADER, Setting, Sink, by_size, bytes, micros, summary_cells};
use crate::run::sample::{End, Sample, Summary};

/// Samples kept for the chart.
const HISTORY: usize = 600;

pub struct Tui {
    terminal: DefaultTerminal,
    setting: Option<Setting>,
    last: Option<Sample>,
    copies: VecDeque<(f64, f64)>,
    writes: VecDeque<(f64, f64)>,
    summaries: Vec<Summary>,
}

impl Tui {
    pub fn start() -> Result<Tui> {
        let terminal = ratatui::try_init().context("starting the live screen")?;
        Ok(Tui { terminal, setting: None, last: None, copies: VecDeque::new(), writes: VecDeque::new(), summaries: Vec::new() })
    }

    fn draw(&mut self) -> Result<()> {
        let Tui { terminal, setting, last, copies, writes, summaries } = self;
        terminal
            .draw(|f| render(f, setting.as_ref(), last.as_ref(), copies, writes, summaries))
            .context("drawing the live screen")?;
        Ok(())
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

impl Sink for Tui {
    /// A new workload: a clean screen.
    fn begin(&mut self, setting: &Setting) -> Result<()> {
        self.setting = Some(setting.clone());
        self.last = None;
        self.copies.clear();
        self.writes.clear();
        self.summaries.clear();
        self.draw()
    }

    fn interval(&mut self, sample: &Sample) -> Result<()> {
        for (series, value) in [(&mut self.copies, sample.copies_per_s), (&mut self.writes, sample.writes_per_s)] {
            series.push_back((sample.t_s, value));
            if series.len() > HISTORY {
                series.pop_front();
            }
        }
        self.last = Some(sample.clone());
        self.draw()
    }

    fn snapshot(&mut self, summary: &Summary) -> Result<()> {
        self.summaries.push(summary.clone());
        self.draw()
    }

    fn end(&mut self, _: &End, _: &[Summary]) -> Result<()> {
        Ok(())
    }

    fn quit_requested(&mut self) -> Result<bool> {
        while event::poll(Duration::ZERO).context("reading the keyboard")? {
            if let Event::Key(key) = event::read().context("reading the keyboard")? {
                let ctrl_c = key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c');
                if key.kind == KeyEventKind::Press && (ctrl_c || matches!(key.code, KeyCode::Char('q') | KeyCode::Esc)) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

fn render(
    f: &mut Frame,
    setting: Option<&Setting>,
    last: Option<&Sample>,
    copies: &VecDeque<(f64, f64)>,
    writes: &VecDeque<(f64, f64)>,
    summaries: &[Summary],
) {
    let who = last.and_then(|s| s.stacks.as_ref()).map(crate::run::stacks::lines).unwrap_or_default();
    let [head, now, copiers, chart, table, foot] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(5),
        Constraint::Length(if who.is_empty() { 0 } else { who.len() as u16 + 2 }),
        Constraint::Min(8),
        Constraint::Length((summaries.len().min(8) + 3) as u16),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(setting.map(header).unwrap_or_default()), head);
    f.render_widget(Paragraph::new(current(last)).block(Block::bordered().title(" now ")), now);
    if !who.is_empty() {
        let text: Vec<Line> = who.into_iter().map(Line::from).collect();
        f.render_widget(Paragraph::new(text).block(Block::bordered().title(" who copies (--stacks) ")), copiers);
    }
    render_chart(f, chart, copies, writes);
    f.render_widget(snapshot_table(summaries), table);
    f.render_widget(Line::from("q quit").dim(), foot);
}

fn header(s: &Setting) -> Vec<Line<'static>> {
    vec![
        Line::from(format!(
            "snapshot run: {}{} (pid {}) on {}",
            s.server,
            s.pages_observed.as_ref().map(|o| format!(" (dataset in {o} pages)")).unwrap_or_default(),
            s.pid,
            s.addr
        ))
        .bold(),
        Line::from(format!(
            "dataset {} keys x {} B = {} in {} pages; load {} ops/s {:?}, reads {:.0}%; snapshot every {} s",
            s.keys,
            s.value_size,
            bytes(s.dataset_bytes),
            bytes(s.page_bytes),
            s.rate,
            s.dist,
            s.read_ratio * 100.0,
            s.every_s
        )),
    ]
}

fn current(last: Option<&Sample>) -> Vec<Line<'static>> {
    let Some(s) = last else { return vec![Line::from("waiting for the first sample...")] };
    let mut lines = vec![
        Line::from(format!(
            "t {:.0}s  writes/s {:.0}  copies/s {:.0} ({}/s) [{}]  total copied {}  rss {}{}",
            s.t_s,
            s.writes_per_s,
            s.copies_per_s,
            bytes(s.copied_bytes_per_s as u64),
            by_size(&s.copies_by_size),
            bytes(s.cow_bytes_total),
            bytes(s.parent_rss_bytes),
            s.child_rss_bytes.map(|c| format!(" + child {}", bytes(c))).unwrap_or_default()
        )),
        Line::from(format!(
            "write latency p50/p99/p999: child alive {}/{}/{} ({} ops)  no child {}/{}/{} ({} ops)",
            micros(s.latency.child_alive.p50_us),
            micros(s.latency.child_alive.p99_us),
            micros(s.latency.child_alive.p999_us),
            s.latency.child_alive.count,
            micros(s.latency.no_child.p50_us),
            micros(s.latency.no_child.p99_us),
            micros(s.latency.no_child.p999_us),
            s.latency.no_child.count,
        )),
    ];
    lines.push(match &s.snapshot {
        Some(r) => {
            let line = Line::from(format!(
                "SNAPSHOT child {} {:.1}s of ~{:.1}s: copied {} ({} copies), predicted peak {}{}",
                r.child_pid,
                r.elapsed_s,
                r.expected_duration_s,
                bytes(r.copied_bytes),
                r.copies,
                bytes(r.predicted_peak_bytes),
                r.warning.as_ref().map(|w| format!("  WARNING: {w}")).unwrap_or_default()
            ));
            if r.warning.is_some() { line.red().bold() } else { line.yellow() }
        }
        None => Line::from(format!("no snapshot running; MemAvailable {}", bytes(s.mem_available_bytes))).dim(),
    });
    lines
}

fn render_chart(f: &mut Frame, area: Rect, copies: &VecDeque<(f64, f64)>, writes: &VecDeque<(f64, f64)>) {
    let copies: Vec<(f64, f64)> = copies.iter().copied().collect();
    let writes: Vec<(f64, f64)> = writes.iter().copied().collect();
    let x0 = copies.first().map_or(0.0, |p| p.0);
    let x1 = copies.last().map_or(1.0, |p| p.0).max(x0 + 1.0);
    let top = copies.iter().chain(&writes).map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let datasets = vec![
        Dataset::default()
            .name("copies/s")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::default().fg(Color::Red))
            .data(&copies),
        Dataset::default()
            .name("writes/s")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::default().fg(Color::Cyan))
            .data(&writes),
    ];
    let chart = Chart::new(datasets)
        .block(Block::bordered().title(" copies/s against writes/s "))
        .x_axis(Axis::default().title("s").bounds([x0, x1]).labels([format!("{x0:.0}"), format!("{x1:.0}")]))
        .y_axis(Axis::default().bounds([0.0, top]).labels(["0".to_string(), format!("{top:.0}")]));
    f.render_widget(chart, area);
}

fn snapshot_table(summaries: &[Summary]) -> Table<'static> {
    let header = Row::new(SUMMARY_HEADER).bold();
    let rows = summaries.iter().rev().take(8).map(|s| Row::new(summary_cells(s)));
    let widths = [
        Constraint::Length(3),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Length(10),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Length(10),
        Constraint::Length(9),
        Constraint::Length(10),
        Constraint::Length(8),
    ];
    Table::new(rows, widths).header(header).block(Block::bordered().title(" snapshots "))
}
