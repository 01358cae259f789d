//! BGSAVE semantics: the snapshot is the dataset at the fork instant, one child at a time,
//! no table resize (= no whole-dataset copy) while the child lives, latency split by save state.

mod common;
use common::{Reply, Server, encode, populate_value, tempdir};
use snapshot_store::{PagesMode, snapfile, table::Table};
use std::io::Write;

fn load_snapshot(dir: &std::path::Path) -> Table {
    let mut t = Table::new(PagesMode::Small).unwrap();
    snapfile::load(&dir.join("dump.rdb"), &mut t, 0)
        .unwrap()
        .expect("snapshot exists");
    t
}

#[test]
fn snapshot_holds_the_fork_instant_under_concurrent_overwrites() {
    const N: u64 = 200_000;
    const SIZE: usize = 200;
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", ""]);
    assert_eq!(
        s.cli(&[
            "debug",
            "populate",
            &N.to_string(),
            "key",
            &SIZE.to_string()
        ]),
        "OK"
    );

    // BGSAVE, a second BGSAVE and SAVE, then an overwrite of every key, all in one write:
    // the server runs them in order, so every SET lands after the fork.
    let mut batch = Vec::new();
    encode(&[b"BGSAVE"], &mut batch);
    encode(&[b"BGSAVE"], &mut batch);
    encode(&[b"SAVE"], &mut batch);
    for i in 0..N {
        let k = format!("key:{i}");
        let v = format!("new-{i}");
        encode(&[b"SET", k.as_bytes(), v.as_bytes()], &mut batch);
    }
    let mut c = s.connect();
    let mut w = c.w.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&batch).unwrap());
    assert_eq!(c.read(), Reply::Simple("Background saving started".into()));
    assert_eq!(
        c.read(),
        Reply::Error("ERR Background save already in progress".into())
    );
    assert_eq!(
        c.read(),
        Reply::Error("ERR Background save already in progress".into())
    );
    for _ in 0..N {
        assert_eq!(c.read(), Reply::Simple("OK".into()));
    }
    writer.join().unwrap();
    let during = s.info_field("persistence", "rdb_bgsave_in_progress") == "1";
    s.wait_no_child();
    assert_eq!(s.info_field("persistence", "rdb_last_bgsave_status"), "ok");
    let cow = s.info_u64("persistence", "rdb_last_cow_size");
    assert!(cow > 0, "the child reports its COW size");
    eprintln!("child still alive after all overwrites: {during}; rdb_last_cow_size {cow}");

    // Every key in the snapshot holds its pre-fork value; the live server the new one.
    let mut t = load_snapshot(dir.path());
    assert_eq!(t.len() as u64, N);
    for i in 0..N {
        let k = format!("key:{i}");
        assert_eq!(
            t.get(k.as_bytes(), 0),
            Some(&populate_value(i, SIZE)[..]),
            "{k} in snapshot"
        );
    }
    for i in (0..N).step_by(997) {
        assert_eq!(
            c.cmd(&["get", &format!("key:{i}")]),
            Reply::Bulk(Some(format!("new-{i}").into_bytes()))
        );
    }
    // Writes were timed both with and without the child.
    let lat = match c.cmd(&["info", "latencystats"]) {
        Reply::Bulk(Some(b)) => String::from_utf8(b).unwrap(),
        r => panic!("{r:?}"),
    };
    assert!(
        lat.contains("latency_percentiles_usec_set_during_save:p50="),
        "{lat}"
    );
    assert!(lat.contains("latency_percentiles_usec_debug:p50="), "{lat}");
    if during {
        // The child outlived the last SET, so every SET was timed as "during save".
        assert!(!lat.contains("latency_percentiles_usec_set:"), "{lat}");
    }
    assert_eq!(s.info_u64("stats", "total_forks"), 1);
    assert!(s.info_u64("stats", "latest_fork_usec") > 0);
}

#[test]
fn crossing_a_resize_threshold_during_a_save_does_not_copy_the_dataset() {
    let dir = tempdir();
    let s = Server::start(dir.path(), &["--save", ""]);
    // Just under a power of two: DEBUG POPULATE sizes the table to 2^20 buckets.
    const N: u64 = 1_040_000;
    const EXTRA: u64 = 30_000;
    assert_eq!(
        s.cli(&["debug", "populate", &N.to_string(), "key", "48"]),
        "OK"
    );
    let buckets = s.info_u64("memory", "dataset_table_buckets");
    let grow_at = s.info_u64("memory", "dataset_table_grow_at");
    assert_eq!(buckets, 1 << 20);
    assert!(N < grow_at && N + EXTRA > grow_at);
    let used = s.info_u64("memory", "used_memory");

    let mut batch = Vec::new();
    encode(&[b"BGSAVE"], &mut batch);
    for i in 0..EXTRA {
        let k = format!("new:{i}");
        encode(&[b"SET", k.as_bytes(), b"v"], &mut batch);
    }
    encode(&[b"INFO", b"memory"], &mut batch);
    encode(&[b"INFO", b"persistence"], &mut batch);
    let mut c = s.connect();
    c.send_raw(&batch);
    assert_eq!(c.read(), Reply::Simple("Background saving started".into()));
    for _ in 0..EXTRA {
        assert_eq!(c.read(), Reply::Simple("OK".into()));
    }
    let text = |r: Reply| match r {
        Reply::Bulk(Some(b)) => String::from_utf8(b).unwrap(),
        r => panic!("{r:?}"),
    };
    let mem = text(c.read());
    let pers = text(c.read());
    // The premise: the child (writing ~100 MB) still runs when the SETs are done.
    assert!(pers.contains("rdb_bgsave_in_progress:1"), "{pers}");
    assert!(
        pers.contains(&format!("current_save_keys_total:{N}\r\n")),
        "{pers}"
    );
    assert!(pers.contains("rdb_current_bgsave_time_sec:"), "{pers}");
    assert!(
        mem.contains(&format!("dataset_table_buckets:{buckets}\r\n")),
        "no resize while the child lives: {mem}"
    );
    s.wait_no_child();
    assert_eq!(s.info_field("persistence", "rdb_last_bgsave_status"), "ok");
    // The deferred growth happened once the child was gone.
    assert_eq!(s.info_u64("memory", "dataset_table_buckets"), 2 << 20);
    let cow = s.info_u64("persistence", "rdb_last_cow_size");
    // A resize would rewrite every record's link, i.e. copy ~all of `used`. The inserts alone
    // touch at most the bucket array (8 MiB) and a few record pages.
    eprintln!("used_memory {used}, rdb_last_cow_size {cow}");
    assert!(
        cow < used / 4,
        "COW {cow} bytes is not small next to the dataset's {used}"
    );
    assert_eq!(s.cli(&["dbsize"]), format!("(integer) {}", N + EXTRA));
    let t = load_snapshot(dir.path());
    assert_eq!(
        t.len() as u64,
        N,
        "the snapshot is the fork instant's dataset"
    );
}
