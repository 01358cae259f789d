//! `snapshot run --stacks`: who makes the store's copies, live. The code
//! paths and the mappings of the copies the server and its snapshot
//! children made since the start, reduced to a few rows for the sinks.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::stacks::{MappingCopies, StacksReport};

/// Code paths in a sample.
const PATHS: usize = 5;
/// Mappings in a sample; the rest are summed in one row.
const MAPPINGS: usize = 8;

/// One code path of the server or of a snapshot child.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct PathRow {
    /// `server` or `child` (a snapshot child).
    pub process: &'static str,
    pub pid: u32,
    pub copies: u64,
    pub bytes: u64,
    /// Function names, innermost (the copying instruction) first.
    pub frames: Vec<String>,
}

#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct Stacks {
    /// The code paths that copied most bytes since the start, most first.
    pub top_paths: Vec<PathRow>,
    /// The server's and its children's copies by mapping (the same mapping
    /// in both added up), most bytes first; they sum to the copies.
    pub top_mappings: Vec<MappingCopies>,
}

/// The part of `report` made by `server` and by processes whose parent is
/// `server` (`parent_of` tells).
pub fn view(report: &StacksReport, server: u32, parent_of: impl Fn(u32) -> Option<u32>) -> Stacks {
    let role = |pid: u32| match pid == server {
        true => Some("server"),
        false => (parent_of(pid) == Some(server)).then_some("child"),
    };
    let top_paths = report
        .paths
        .iter()
        .filter_map(|p| {
            Some(PathRow { process: role(p.pid)?, pid: p.pid, copies: p.copies, bytes: p.bytes, frames: p.frames.clone() })
        })
        .take(PATHS)
        .collect();
    let mut merged: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    // From all rows: a mapping past one process's top ones is still added
    // to the same mapping of the other.
    for process in report.all_mappings.iter().filter(|p| role(p.pid).is_some()) {
        for m in &process.mappings {
            let entry = merged.entry(&m.mapping).or_default();
            entry.0 += m.copies;
            entry.1 += m.bytes;
        }
    }
    let mut rows: Vec<MappingCopies> = merged
        .into_iter()
        .map(|(mapping, (copies, bytes))| MappingCopies { mapping: mapping.to_string(), copies, bytes })
        .collect();
    rows.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.mapping.cmp(&b.mapping)));
    crate::stacks::cap(&mut rows, MAPPINGS);
    Stacks { top_paths, top_mappings: rows }
}

/// A code path on one line, outermost last: `Table::set < data::set < main`.
pub fn path_line(p: &PathRow, frames: usize) -> String {
    let mut line = p.frames.iter().take(frames).map(|f| crate::run::escape(f)).collect::<Vec<_>>().join(" < ");
    if p.frames.len() > frames {
        line.push_str(" < ...");
    }
    line
}

/// The panel as text: a line per code path, then the mappings on one line.
pub fn lines(s: &Stacks) -> Vec<String> {
    let mut out: Vec<String> = s
        .top_paths
        .iter()
        .map(|p| format!("{:>10}  {:<6} {}", crate::report::human(p.bytes), p.process, path_line(p, 4)))
        .collect();
    if out.is_empty() {
        out.push("no copies yet".into());
    }
    let mappings: Vec<String> = s
        .top_mappings
        .iter()
        .map(|m| format!("{} {}", crate::run::escape(&m.mapping), crate::report::human(m.bytes)))
        .collect();
    out.push(format!("by mapping: {}", if mappings.is_empty() { "-".into() } else { mappings.join(", ") }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stacks::{CodePath, ProcessMappings};

    fn path(pid: u32, bytes: u64, frames: &[&str]) -> CodePath {
        let frames = frames.iter().map(|f| f.to_string()).collect();
        CodePath { pid, comm: String::new(), copies: bytes / 4096, bytes, frames }
    }

    fn mapping(mapping: &str, copies: u64) -> MappingCopies {
        MappingCopies { mapping: mapping.into(), copies, bytes: copies * 4096 }
    }

    #[test]
    fn only_the_server_and_its_children_and_their_mappings_added_up() {
        let report = StacksReport {
            paths: vec![path(9, 1 << 20, &["other"]), path(1, 1 << 19, &["Table::set"]), path(2, 4096, &["save"])],
            all_mappings: vec![
                ProcessMappings { pid: 1, comm: String::new(), copies: 3, bytes: 0, mappings: vec![mapping("[heap]", 3)] },
                ProcessMappings {
                    pid: 2,
                    comm: String::new(),
                    copies: 2,
                    bytes: 0,
                    mappings: vec![mapping("[heap]", 1), mapping("[stack]", 1)],
                },
                ProcessMappings { pid: 9, comm: String::new(), copies: 7, bytes: 0, mappings: vec![mapping("[x]", 7)] },
            ],
            ..StacksReport::default()
        };
        let parents = |pid| match pid {
            2 => Some(1),
            9 => Some(4),
            _ => None,
        };
        let view = view(&report, 1, parents);
        let roles: Vec<(&str, u32)> = view.top_paths.iter().map(|p| (p.process, p.pid)).collect();
        assert_eq!(roles, [("server", 1), ("child", 2)]);
        assert_eq!(view.top_mappings, [mapping("[heap]", 4), mapping("[stack]", 1)]);
    }

    #[test]
    fn a_mapping_past_the_servers_top_rows_still_adds_up_with_the_childs() {
        // The server copied in 14 mappings, the least in "shared"; its child
        // copied most in "shared".
        let mut server: Vec<MappingCopies> = (0..13).map(|i| mapping(&format!("m{i:02}"), 100 - i)).collect();
        server.push(mapping("shared", 1));
        let child = vec![mapping("shared", 200)];
        let report = StacksReport {
            all_mappings: vec![
                ProcessMappings { pid: 1, comm: String::new(), copies: 0, bytes: 0, mappings: server },
                ProcessMappings { pid: 2, comm: String::new(), copies: 0, bytes: 0, mappings: child },
            ],
            ..StacksReport::default()
        };
        let view = view(&report, 1, |pid| (pid == 2).then_some(1));
        let shared = view.top_mappings.iter().find(|m| m.mapping == "shared");
        assert_eq!(shared, Some(&mapping("shared", 201)), "{:?}", view.top_mappings);
        let rest = view.top_mappings.last().unwrap();
        assert_eq!(rest.mapping, "[6 other mappings]", "{:?}", view.top_mappings);
        assert_eq!(view.top_mappings.iter().map(|m| m.copies).sum::<u64>(), (88..=100).sum::<u64>() + 201);
    }

    #[test]
    fn long_paths_are_cut_and_say_so() {
        let row = PathRow { process: "server", pid: 1, copies: 1, bytes: 1, frames: vec!["a".into(), "b".into(), "c".into()] };
        assert_eq!(path_line(&row, 2), "a < b < ...");
        assert_eq!(path_line(&row, 3), "a < b < c");
    }
}
