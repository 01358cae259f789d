//! `--pages`: the page size backing the dataset, as /proc/self/smaps shows it (INFO memory).

mod common;
use common::{Server, Started, tempdir};

fn populate_and_read(s: &Server) -> (String, u64) {
    assert_eq!(s.cli(&["debug", "populate", "100000", "key", "100"]), "OK");
    (
        s.info_field("memory", "dataset_pages_mode"),
        s.info_u64("memory", "dataset_page_size"),
    )
}

#[test]
fn small_pages_by_default() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", ""]);
    assert_eq!(populate_and_read(&s), ("4k".to_string(), 4096));
    assert_eq!(s.info_u64("memory", "dataset_anon_huge_pages"), 0);
}

#[test]
fn transparent_huge_pages() {
    let dir = tempdir();
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if thp.contains("[never]") {
        match Server::try_start(dir.path(), &["--pages", "thp"], None) {
            Started::Up(_) => panic!("thp mode started with THP disabled"),
            Started::Exited { log, .. } => assert!(log.contains("transparent_hugepage"), "{log}"),
        }
        return;
    }
    let s = Server::start(dir.path(), &["--save", "", "--pages", "thp"]);
    assert_eq!(populate_and_read(&s), ("thp".to_string(), 2 << 20));
    assert!(s.info_u64("memory", "dataset_anon_huge_pages") >= 2 << 20);
    // Snapshots work the same on huge pages.
    assert_eq!(s.cli(&["bgsave"]), "Background saving started");
    s.wait_no_child();
    assert_eq!(s.info_field("persistence", "rdb_last_bgsave_status"), "ok");
}

/// Puts /proc/sys/vm/nr_hugepages back as it was, also when the test fails.
struct RestoreHugepages(String);
impl Drop for RestoreHugepages {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/vm/nr_hugepages", &self.0);
    }
}

fn free_hugepages() -> u64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    m.lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn hugetlb_pages_or_a_clear_error() {
    let dir = tempdir();
    let orig = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .unwrap_or_default()
        .trim()
        .to_string();
    if free_hugepages() == 0 {
        match Server::try_start(dir.path(), &["--pages", "hugetlb"], None) {
            Started::Up(_) => panic!("hugetlb mode started without huge pages"),
            Started::Exited { log, .. } => {
                assert!(log.contains("/proc/sys/vm/nr_hugepages"), "{log}")
            }
        }
    }
    // Reserve some huge pages for the positive case (root only), and put the setting back.
    if !common::privileged("hugetlb_pages_or_a_clear_error") {
        return;
    }
    let want: u64 = orig.parse::<u64>().unwrap_or(0) + 48;
    let _restore = RestoreHugepages(orig.clone());
    // As root the positive case must run: a machine without the memory fails
    // the test instead of passing it untried.
    std::fs::write("/proc/sys/vm/nr_hugepages", want.to_string())
        .unwrap_or_else(|e| panic!("setting nr_hugepages to {want}: {e}"));
    let free = free_hugepages();
    assert!(free >= 24, "only {free} huge pages free after asking for {want}: hugetlb positive case cannot run");
    let s = Server::start(dir.path(), &["--save", "", "--pages", "hugetlb"]);
    assert_eq!(populate_and_read(&s), ("hugetlb".to_string(), 2 << 20));
    assert!(s.info_u64("memory", "dataset_hugetlb") >= 2 << 20);
    assert_eq!(s.cli(&["bgsave"]), "Background saving started");
    s.wait_no_child();
    assert_eq!(s.info_field("persistence", "rdb_last_bgsave_status"), "ok");
    // FLUSHALL gives the pages back before taking new ones, so it works with a small pool.
    assert_eq!(s.cli(&["flushall"]), "OK");
    assert_eq!(s.cli(&["dbsize"]), "(integer) 0");
    assert_eq!(populate_and_read(&s), ("hugetlb".to_string(), 2 << 20));
    drop(s);
}
