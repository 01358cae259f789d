//! The live table of `snapshot top` (ratatui): refreshed every second,
//! sorted by a column the keys choose. q, Esc and Ctrl-C quit; the terminal
//! is restored on every way out (ratatui's panic hook covers panics).
use std::{
    os::fd::AsFd as _,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use ratatui::{
    DefaultTerminal, Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::Stylize,
    text::Line,
    widgets::{Paragraph, Row as TableRow, Table},
};

use super::{Filter, HEADER, KEYS, Row, SortKey, TopArgs, rows, sort};
use crate::exporter::Source;

const INTERVAL: Duration = Duration::from_secs(1);

/// What the keyboard (or a signal) asked for.
enum Input {
    Quit,
    Sort(SortKey),
    Tick,
}

/// The terminal in raw mode on the alternate screen, given back on drop:
/// errors and early returns restore it too.
struct Screen(DefaultTerminal);

impl Drop for Screen {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

pub fn run(mut source: Source, args: &TopArgs) -> Result<ExitCode> {
    // Raw mode makes Ctrl-C a key; these come from kill(1) and a closed terminal.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(signal, stop.clone()).context("installing the signal handler")?;
    }
    let filter = Filter::new(args)?;
    let mut key = args.sort;
    let mut shown: Vec<Row> = Vec::new();
    let mut before = source.read()?;
    let mut screen = Screen(ratatui::try_init().context("starting the live table")?);
    let mut next = Instant::now() + INTERVAL;
    loop {
        screen.0.draw(|f| render(f, &filter, key, &shown)).context("drawing the live table")?;
        match wait(next, key, &stop)? {
            Input::Quit => return Ok(ExitCode::SUCCESS),
            Input::Sort(new) => key = new,
            Input::Tick => {
                let after = source.read()?;
                shown = rows(&filter, &before, &after);
                before = after;
                next += INTERVAL;
            }
        }
        sort(&mut shown, key);
    }
}

/// Reads keys until `next`, the time of the next refresh.
fn wait(next: Instant, key: SortKey, stop: &AtomicBool) -> Result<Input> {
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(Input::Quit);
        }
        let left = next.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Input::Tick);
        }
        // Short waits: a signal's flag is seen within 100 ms.
        if !keys_waiting(left.min(Duration::from_millis(100)))? {
            continue;
        }
        let Event::Key(press) = event::read().context("reading the keyboard")? else { continue };
        if press.kind != KeyEventKind::Press {
            continue;
        }
        let ctrl = press.modifiers.contains(KeyModifiers::CONTROL);
        let input = match press.code {
            KeyCode::Char('c') if ctrl => Input::Quit,
            KeyCode::Char('q') | KeyCode::Esc => Input::Quit,
            KeyCode::Char('<') | KeyCode::Left => Input::Sort(key.step(-1)),
            KeyCode::Char('>') | KeyCode::Right => Input::Sort(key.step(1)),
            KeyCode::Char('p') => Input::Sort(SortKey::Pid),
            KeyCode::Char('n') => Input::Sort(SortKey::Comm),
            KeyCode::Char('c') => Input::Sort(SortKey::Copies),
            KeyCode::Char('b') => Input::Sort(SortKey::Bytes),
            KeyCode::Char('f') => Input::Sort(SortKey::Forks),
            KeyCode::Char('r') => Input::Sort(SortKey::Reuse),
            _ => continue,
        };
        return Ok(input);
    }
}

/// Whether an event can be read now. crossterm's own poll spins forever on
/// a terminal that hung up (its reads return EIO), so the terminal (stdin)
/// is checked before crossterm looks at it; a hang-up ends the view.
fn keys_waiting(timeout: Duration) -> Result<bool> {
    // Events crossterm parsed already, if the terminal is still there.
    input_ready(Duration::ZERO)?;
    if event::poll(Duration::ZERO).context("reading the keyboard")? {
        return Ok(true);
    }
    if !input_ready(timeout)? {
        return Ok(false);
    }
    event::poll(Duration::ZERO).context("reading the keyboard")
}

/// Waits up to `timeout` for input on stdin; an error when it hung up.
fn input_ready(timeout: Duration) -> Result<bool> {
    let stdin = std::io::stdin();
    let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
    let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    match poll(&mut fds, PollTimeout::from(millis)) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(false),
        Ok(_) => {}
        Err(error) => return Err(error).context("waiting for the keyboard"),
    }
    let revents = fds[0].revents().unwrap_or(PollFlags::empty());
    if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
        anyhow::bail!("the terminal went away");
    }
    Ok(revents.contains(PollFlags::POLLIN))
}

fn render(f: &mut Frame, filter: &Filter, key: SortKey, shown: &[Row]) {
    let [head, table, foot] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(2), Constraint::Length(1)]).areas(f.area());
    f.render_widget(Paragraph::new(title(filter, shown.len()).bold()), head);
    // The sorted column is marked with `*` (plain ASCII: any terminal shows it).
    let header = HEADER.iter().enumerate().map(|(i, name)| {
        if i == key.column() { format!("{name}*").reversed() } else { name.to_string().into() }
    });
    let widths = [
        Constraint::Length(8),
        Constraint::Length(16),
        Constraint::Length(9),
        Constraint::Length(11),
        Constraint::Length(22),
        Constraint::Min(20),
        Constraint::Length(8),
    ];
    let body = shown.iter().map(|r| TableRow::new(r.cells()));
    f.render_widget(Table::new(body, widths).header(TableRow::new(header).bold()), table);
    f.render_widget(Line::from(KEYS).dim(), foot);
}

fn title(filter: &Filter, count: usize) -> Line<'static> {
    let mut text = format!("snapshot top: {count} processes copying on write or sharing a fork (every 1 s)");
    if let Some(comm) = &filter.comm {
        text.push_str(&format!(", comm {}", crate::report::escape(comm)));
    }
    if let Some(pid) = filter.pid {
        text.push_str(&format!(", pid {pid}"));
    }
    Line::from(text)
}
