//! `snapshot trace --stacks`: copies by code path and by mapping, against
//! programs whose copies are known: tests/stacks/cowpaths.c measures its own
//! from /proc/self/pagemap, and a forked Python worker's copies are checked
//! against the process totals the tracer reports beside them.
mod common;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
};

use common::*;
use serde_json::Value;

/// Pages the parent's write_one() rewrites; write_three() rewrites three times as many.
const PAGES: u64 = 2000;
const PAGE: u64 = 4096;

/// tests/stacks/NAME.c, built with frame pointers so the kernel walks whole
/// stacks. At -O1 GCC 12 gives a leaf function that needs no stack no frame
/// of its own, even with -fno-omit-frame-pointer, and the walk then skips its
/// caller: -O0 keeps every frame.
fn build(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    let source = format!("{}/tests/stacks/{name}.c", env!("CARGO_MANIFEST_DIR"));
    let bin = path(dir, name);
    let out = Command::new("cc")
        .args(["-O0", "-fno-omit-frame-pointer", "-pthread", "-Wall", "-o"])
        .arg(&bin)
        .arg(&source)
        .output()
        .expect("running cc (install gcc)");
    assert!(out.status.success(), "cc {source}: {}", String::from_utf8_lossy(&out.stderr));
    bin
}

/// Bytes of the folded lines whose innermost frame is `function`.
fn folded_bytes(folded: &str, function: &str) -> u64 {
    folded
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(stack, _)| stack.rsplit(';').next() == Some(function))
        .map(|(_, bytes)| bytes.parse::<u64>().unwrap())
        .sum()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// `snapshot trace --stacks --json --folded -- COMMAND`: the command's own
/// JSON line (its ground truth), the report, and the folded stacks.
fn trace_folded(dir: &tempfile::TempDir, command: &[&std::ffi::OsStr]) -> (Value, Value, String) {
    let (report, folded) = (path(dir, "report.json"), path(dir, "cow.folded"));
    let out = Command::new(SNAPSHOT)
        .args(["trace", "--stacks", "--json"])
        .arg(&report)
        .arg("--folded")
        .arg(&folded)
        .arg("--")
        .args(command)
        .output()
        .unwrap();
    assert!(out.status.success(), "trace failed: {}", String::from_utf8_lossy(&out.stderr));
    let truth: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{:?} output: {e}: {}", command[0], String::from_utf8_lossy(&out.stdout)));
    (truth, json(&report), std::fs::read_to_string(&folded).unwrap())
}

/// The `--stacks` mappings of `pid` by name, and the process's own totals.
fn mappings(report: &Value, pid: u64) -> (HashMap<String, u64>, &Value) {
    let process = report["processes"].as_array().unwrap().iter().find(|p| u(&p["pid"]) == pid);
    let process = process.unwrap_or_else(|| panic!("no process {pid} in {report:#}"));
    let by_mapping = report["stacks"]["by_mapping"].as_array().unwrap().iter().find(|p| u(&p["pid"]) == pid);
    let by_mapping = by_mapping.unwrap_or_else(|| panic!("no mappings of {pid} in {:#}", report["stacks"]));
    let names = by_mapping["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["mapping"].as_str().unwrap().to_string(), u(&m["copies"])))
        .collect();
    (names, process)
}

fn within(value: u64, truth: u64, percent: f64) -> bool {
    (value as f64 - truth as f64).abs() <= truth as f64 * percent / 100.0
}

#[test]
fn stacks_split_copies_by_function_and_by_mapping() {
    if !privileged("stacks_split_copies_by_function_and_by_mapping") {
        return;
    }
    let dir = temp_dir();
    let bin = build(&dir, "cowpaths");
    let data = path(&dir, "data");
    std::fs::write(&data, vec![5u8; (PAGES * PAGE) as usize]).unwrap();
    let (report, folded, svg) = (path(&dir, "report.json"), path(&dir, "cow.folded"), path(&dir, "cow.svg"));
    let out = Command::new(SNAPSHOT)
        .args(["trace", "--stacks", "--by-mapping", "--json"])
        .arg(&report)
        .arg("--folded")
        .arg(&folded)
        .arg("--flamegraph")
        .arg(&svg)
        .arg("--")
        .arg(&bin)
        .arg(&data)
        .arg(PAGES.to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "trace failed: {stderr}");
    let truth: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("cowpaths output: {e}"));
    assert_eq!((u(&truth["three"]), u(&truth["one"]), u(&truth["file"])), (3 * PAGES, PAGES, PAGES), "pagemap");
    let report = json(&report);
    assert_eq!(u(&report["health"]["dropped_stacks"]), 0);
    assert_eq!(u(&report["health"]["dropped_addresses"]), 0);

    // By code path: each function's bytes, and their ratio, within 2% of the truth.
    let folded = std::fs::read_to_string(&folded).unwrap();
    let (three, one) = (folded_bytes(&folded, "write_three"), folded_bytes(&folded, "write_one"));
    assert!(within(three, 3 * PAGES * PAGE, 2.0), "write_three {three} bytes\n{folded}");
    assert!(within(one, PAGES * PAGE, 2.0), "write_one {one} bytes\n{folded}");
    let ratio = three as f64 / one as f64;
    assert!((ratio - 3.0).abs() <= 0.06, "ratio {ratio}\n{folded}");
    // Whole stacks: the kernel walked the frame pointers up through main.
    assert!(folded.lines().any(|l| l.contains(";main;write_three ")), "no main;write_three in\n{folded}");
    let top = &report["stacks"]["top_paths"][0];
    assert_eq!(top["frames"][0], "write_three", "{top:#}");

    // By mapping: the sum is the process's total; the file's copies show under its path.
    let pid = u(&truth["pid"]);
    let (names, process) = mappings(&report, pid);
    assert_eq!(names.values().sum::<u64>(), u(&process["cow_copies"]), "{names:?}\n{process:#}");
    let file = names.get(data.to_str().unwrap()).copied().unwrap_or(0);
    assert!(within(file, PAGES, 2.0), "{} copies {file} of {PAGES}: {names:?}", data.display());
    // Each anonymous region on its own row: the 4N pages are one region, or
    // two where the kernel let cowpaths name write_one()'s part.
    let largest_unnamed = names.iter().filter(|(n, _)| n.starts_with("[anon ")).map(|(_, &c)| c).max();
    let named = names.get("[anon:cowpaths-one]").copied().unwrap_or(0);
    if u(&truth["named"]) == 1 {
        assert!(within(named, PAGES, 2.0), "[anon:cowpaths-one] copies {named} of {PAGES}: {names:?}");
        assert!(within(largest_unnamed.unwrap_or(0), 3 * PAGES, 2.0), "no region of {} copies: {names:?}", 3 * PAGES);
    } else {
        assert!(within(largest_unnamed.unwrap_or(0), 4 * PAGES, 2.0), "no region of {} copies: {names:?}", 4 * PAGES);
    }
    assert!(stderr.contains("copies by mapping:") && stderr.contains(data.to_str().unwrap()), "{stderr}");

    every_stacks_field_is_documented(&report);
    flame_graph_renders(&svg, &dir);
}

/// The README's JSON tables name every field of `stacks` and `health`.
fn every_stacks_field_is_documented(report: &Value) {
    fn keys(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => m.iter().for_each(|(k, v)| {
                out.push(k.clone());
                keys(v, out)
            }),
            Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
            _ => {}
        }
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let mut found = vec!["stacks".to_string()];
    keys(&report["stacks"], &mut found);
    keys(&report["health"], &mut found);
    for key in found {
        assert!(readme.contains(&format!("| `{key}` |")), "README documents no field `{key}`");
    }
}

/// The SVG parses as XML, names the two functions, and headless Chromium
/// draws it: the screenshot holds thousands of the flame graph's warm pixels.
fn flame_graph_renders(svg: &Path, dir: &tempfile::TempDir) {
    let text = std::fs::read_to_string(svg).unwrap();
    let mut reader = quick_xml::Reader::from_str(&text);
    let (mut rects, mut titles) = (0, Vec::new());
    let mut in_title = false;
    loop {
        match reader.read_event().unwrap_or_else(|e| panic!("{} is not XML: {e}", svg.display())) {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                rects += usize::from(e.name().as_ref() == b"rect");
                in_title = e.name().as_ref() == b"title";
            }
            quick_xml::events::Event::Text(t) if in_title => titles.push(String::from_utf8_lossy(&t).into_owned()),
            _ => in_title = false,
        }
    }
    assert!(rects > 3, "{rects} rects in {}", svg.display());
    for function in ["write_three", "write_one", "main"] {
        assert!(titles.iter().any(|t| t.starts_with(function)), "no frame {function} in {titles:?}");
    }
    let (pixels, channels) = screenshot(svg, dir, "1200,800");
    // inferno's default palette: reds, oranges and yellows (red high, blue low).
    let warm = pixels.chunks(channels).filter(|p| p[0] > 180 && p[2] < 110).count();
    assert!(warm > 5000, "flame graph not drawn: {warm} warm pixels of {}", svg.display());
}

/// A forked Python worker that only reads a big object graph still copies:
/// reference counts and the collector write into the objects' pages. Its
/// copies are in the heap and anonymous arenas, and sum to its total.
#[test]
fn forked_python_reader_copies_heap_and_arenas() {
    if !privileged("forked_python_reader_copies_heap_and_arenas") {
        return;
    }
    let dir = temp_dir();
    let report = path(&dir, "report.json");
    let script = "import os\n\
        graph = [{'k': i, 'v': [i, str(i)]} for i in range(300000)]\n\
        pid = os.fork()\n\
        if pid == 0:\n\
        \x20   total = sum(d['k'] + len(d['v'][1]) for d in graph)\n\
        \x20   os._exit(0 if total > 0 else 1)\n\
        print(pid)\n\
        os.waitpid(pid, 0)\n";
    let out = Command::new(SNAPSHOT)
        .args(["trace", "--stacks", "--json"])
        .arg(&report)
        .args(["--", "python3", "-c", script])
        .output()
        .expect("running snapshot");
    assert!(out.status.success(), "trace failed: {}", String::from_utf8_lossy(&out.stderr));
    let child: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("the child's pid");
    let report = json(&report);
    assert_eq!(u(&report["health"]["dropped_addresses"]), 0);
    let (names, process) = mappings(&report, child);
    let total = u(&process["cow_copies"]);
    assert!(total > 1000, "a reader of 300000 objects copies thousands of pages: {process:#}");
    assert_eq!(names.values().sum::<u64>(), total, "{names:?}");
    // Past the top 12, the rows are summed in one: the ranking is of those listed.
    let mut ranked: Vec<(&String, &u64)> = names.iter().filter(|(n, _)| !n.ends_with(" other mappings]")).collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1));
    assert!(ranked.len() <= 12, "more rows than the cap: {ranked:?}");
    let arena = |name: &str| name == "[heap]" || name.starts_with("[anon");
    assert!(arena(ranked[0].0), "top mapping {ranked:?}");
    let elsewhere: u64 = ranked.iter().filter(|(n, _)| !arena(n)).map(|(_, c)| **c).sum();
    assert!(elsewhere * 10 <= total, "{elsewhere} of {total} copies listed outside the heap and arenas: {ranked:?}");
}

/// A copy taken back (a private file page copied from the page cache: a file
/// copy, not COW) leaves the stack of the thread whose fault made it, while
/// another thread of the process makes real COW copies on the same CPU.
#[test]
fn copies_taken_back_leave_their_own_threads_stack() {
    if !privileged("copies_taken_back_leave_their_own_threads_stack") {
        return;
    }
    let (pages, rounds) = (2000u64, 5u64);
    let dir = temp_dir();
    let bin = build(&dir, "takeback");
    let data = path(&dir, "data");
    std::fs::write(&data, vec![5u8; (pages * PAGE) as usize]).unwrap();
    let (n, r) = (pages.to_string(), rounds.to_string());
    let command = [bin.as_os_str(), data.as_os_str(), n.as_ref(), r.as_ref()];
    let (truth, report, folded) = trace_folded(&dir, &command);
    assert_eq!((u(&truth["anon"]), u(&truth["file_writes"])), (pages, pages * rounds), "pagemap");
    assert_eq!(u(&report["health"]["dropped_stacks"]), 0);
    let pid = u(&truth["pid"]);
    let process = report["processes"].as_array().unwrap().iter().find(|p| u(&p["pid"]) == pid).unwrap();
    assert!(within(u(&process["file_copies"]), pages * rounds, 1.0), "the file writes are file copies: {process:#}");

    // A take-back from the wrong stack would leave write_cow() below the
    // pages it really copied, and the file writer's copies on its stack.
    let cow = folded_bytes(&folded, "write_cow");
    assert!(
        cow >= pages * PAGE && within(cow, pages * PAGE, 1.0),
        "write_cow {cow} bytes of {}:\n{folded}",
        pages * PAGE
    );
    let file = folded_bytes(&folded, "write_file_pages");
    assert!(file <= pages * rounds * PAGE / 100, "file copies left on their stack: {file} bytes\n{folded}");
    let all: u64 = folded.lines().filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok()).sum();
    let copied: u64 = report["processes"].as_array().unwrap().iter().map(|p| u(&p["cow_bytes"])).sum();
    assert_eq!(all, copied, "the stacks' bytes sum to the processes' copies:\n{folded}");
}

/// More distinct stacks than the kernel's stack table keeps apart: the
/// copies whose stack was lost to a full bucket are in the folded output as
/// `[stack table full]` and counted, each one, in `health.dropped_stacks`;
/// all copies together are the pages pagemap saw change.
#[test]
fn stacks_lost_to_a_full_stack_table_are_counted_in_health() {
    if !privileged("stacks_lost_to_a_full_stack_table_are_counted_in_health") {
        return;
    }
    let dir = temp_dir();
    let bin = build(&dir, "manystacks");
    let (truth, report, folded) = trace_folded(&dir, &[bin.as_os_str(), "12".as_ref()]);
    assert_eq!(u(&truth["changed"]), u(&truth["pages"]), "pagemap");
    let lost = folded_bytes(&folded, "[stack_table_full]") / PAGE;
    // 4096 stacks in 8192 buckets: hundreds share a bucket.
    assert!(lost > 0, "no stack lost: the test shows nothing\n{folded}");
    assert_eq!(u(&report["health"]["dropped_stacks"]), lost, "copies without their stack\n{folded}");
    // The others kept their stack (the paths differ in return addresses
    // only, so by name they are one line).
    let kept = folded_bytes(&folded, "descend") / PAGE;
    assert!(within(kept + lost, u(&truth["changed"]), 1.0), "{kept} + {lost} copies\n{folded}");
    let pid = u(&truth["pid"]);
    let process = report["processes"].as_array().unwrap().iter().find(|p| u(&p["pid"]) == pid).unwrap();
    assert!(within(u(&process["cow_copies"]), u(&truth["changed"]), 1.0), "{process:#}");
}
