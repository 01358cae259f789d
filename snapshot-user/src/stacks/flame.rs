//! Folded stacks (the format flamegraph.pl and inferno read) and the SVG
//! flame graph drawn from them, weighted by copied bytes.
use std::io::{self, Write};

use inferno::flamegraph::{self, Options};

use super::CodePath;
use crate::report::escape;

/// One line per code path: `comm;outermost;...;innermost bytes`.
pub fn folded(paths: &[CodePath]) -> Vec<String> {
    let mut lines: Vec<String> = paths
        .iter()
        .filter(|p| p.bytes > 0)
        .map(|p| {
            let mut frames = vec![clean(&p.comm)];
            frames.extend(p.frames.iter().rev().map(|f| clean(f)));
            format!("{} {}", frames.join(";"), p.bytes)
        })
        .collect();
    lines.sort();
    lines
}

/// A frame as one token of a folded line: no `;` (the separator), no
/// whitespace (the count follows the last one), nothing that drives a terminal.
fn clean(frame: &str) -> String {
    escape(frame).replace(';', ":").replace(char::is_whitespace, "_")
}

pub fn write_folded(lines: &[String], out: &mut dyn Write) -> io::Result<()> {
    lines.iter().try_for_each(|l| writeln!(out, "{l}"))
}

pub fn write_svg(lines: &[String], out: &mut dyn Write) -> io::Result<()> {
    let mut options = Options::default();
    options.title = "Copy-on-write copies by code path".into();
    options.count_name = "bytes".into();
    if lines.is_empty() {
        // inferno refuses an empty graph; one saying so is more useful than none.
        return flamegraph::from_lines(&mut options, ["no_copies 1"], out);
    }
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_lines_run_from_the_process_to_the_copying_function() {
        let paths = vec![CodePath {
            pid: 1,
            comm: "my app".into(),
            copies: 2,
            bytes: 8192,
            frames: vec!["write_page".into(), "a;b".into(), "main".into()],
        }];
        assert_eq!(folded(&paths), ["my_app;main;a:b;write_page 8192"]);
        let mut svg = Vec::new();
        write_svg(&folded(&paths), &mut svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(svg.contains("<svg") && svg.contains("write_page"), "{svg}");
    }

    #[test]
    fn names_others_control_stay_text_in_the_svg() {
        let paths = vec![CodePath {
            pid: 1,
            comm: "<script>x\n".into(),
            copies: 1,
            bytes: 4096,
            frames: vec!["f<T>&".into()],
        }];
        let mut svg = Vec::new();
        write_svg(&folded(&paths), &mut svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(!svg.contains("<script>x") && !svg.contains("f<T>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;x") && svg.contains("f&lt;T&gt;&amp;"), "{svg}");
    }
}
