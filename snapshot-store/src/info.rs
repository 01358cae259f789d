//! INFO: Redis's sections and field names, plus the dataset's page facts and latency split.

use crate::arena;
use crate::commands::{State, cmd_name};
use std::fmt::Write;

const SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "latencystats",
    "keyspace",
];

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2}G", b / (1u64 << 30) as f64)
    } else if b >= (1 << 20) as f64 {
        format!("{:.2}M", b / (1 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.2}K", b / 1024.0)
    } else {
        format!("{bytes}B")
    }
}

/// Resident set size of this process, from /proc/self/statm.
fn rss_bytes() -> u64 {
    let statm = procfs::process::Process::myself().and_then(|p| p.statm());
    statm.map(|m| m.resident * procfs::page_size()).unwrap_or(0)
}

pub fn render(st: &State, asked: &[String]) -> String {
    let all = asked.is_empty()
        || asked
            .iter()
            .any(|s| s == "all" || s == "everything" || s == "default");
    let want = |s: &str| all || asked.iter().any(|a| a == s);
    let mut o = String::with_capacity(4096);
    let p = &st.persist;
    if want("server") {
        let up = st.stats.start.elapsed().as_secs();
        let _ = write!(
            o,
            "# Server\r\nredis_version:7.0.0\r\nsnapshot_store_version:{}\r\nredis_mode:standalone\r\n\
             os:Linux\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{up}\r\nuptime_in_days:{}\r\n\
             executable:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            st.port,
            up / 86400,
            std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        );
    }
    if want("clients") {
        let _ = write!(
            o,
            "# Clients\r\nconnected_clients:{}\r\n\r\n",
            st.connected_clients
        );
    }
    if want("memory") {
        let a = st.table.arena();
        let used = a.live_bytes() as u64;
        let rss = rss_bytes();
        let _ = write!(
            o,
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\n\
             used_memory_rss_human:{}\r\ndataset_arena_mapped:{}\r\ndataset_pages_requested:{}\r\n",
            human(used),
            human(rss),
            a.mapped_bytes(),
            st.mode.name(),
        );
        match arena::page_report(&a.ranges()) {
            Ok(r) => {
                let _ = write!(
                    o,
                    "dataset_pages_mode:{}\r\ndataset_page_size:{}\r\ndataset_rss:{}\r\n\
                     dataset_anon_huge_pages:{}\r\ndataset_hugetlb:{}\r\n",
                    r.observed, r.page_size, r.rss_bytes, r.anon_huge_bytes, r.hugetlb_bytes
                );
            }
            Err(e) => {
                let _ = write!(o, "dataset_pages_mode:unknown ({e})\r\n");
            }
        }
        let _ = write!(
            o,
            "dataset_table_buckets:{}\r\ndataset_table_grow_at:{}\r\ndataset_table_forced_resizes:{}\r\n\r\n",
            st.table.nbuckets(),
            st.table.grow_at(),
            st.table.forced_resizes()
        );
    }
    if want("persistence") {
        let in_progress = p.child_alive();
        let perc = if in_progress && p.keys_total > 0 {
            p.keys_processed as f64 * 100.0 / p.keys_total as f64
        } else {
            0.0
        };
        let _ = write!(
            o,
            "# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:{}\r\nrdb_bgsave_in_progress:{}\r\n\
             rdb_last_save_time:{}\r\nrdb_last_bgsave_status:{}\r\nrdb_last_bgsave_time_sec:{}\r\n\
             rdb_current_bgsave_time_sec:{}\r\nrdb_last_cow_size:{}\r\ncurrent_cow_peak:{}\r\ncurrent_cow_size:{}\r\n\
             current_fork_perc:{perc:.2}\r\ncurrent_save_keys_processed:{}\r\ncurrent_save_keys_total:{}\r\n\
             rdb_saves:{}\r\nrdb_saves_pid:{}\r\nsave_policy:{}\r\nrdb_last_bgsave_method:{}\r\n\
             default_bgsave_method:{}\r\nforkless_last_setup_usec:{}\r\n\
             forkless_copied_before_write_bytes:{}\r\nforkless_copied_before_write_keys:{}\r\n\
             cow_strategy:{}\r\nfork_shared_index_pages_written:{}\r\n\
             fork_shared_record_pages_written:{}\r\n\
             aof_enabled:0\r\n",
            p.dirty,
            in_progress as u8,
            p.lastsave,
            if p.last_bgsave_ok { "ok" } else { "err" },
            p.last_bgsave_time_sec,
            p.current_save_secs(),
            p.last_cow,
            if in_progress { p.current_cow_peak } else { 0 },
            if in_progress { p.current_cow } else { 0 },
            if in_progress { p.keys_processed } else { 0 },
            if in_progress { p.keys_total } else { 0 },
            p.rdb_saves,
            p.child_pid().unwrap_or(-1),
            crate::persist::format_save(&p.save_points),
            p.last_method.map_or("none", |m| m.name()),
            p.default_method.name(),
            p.forkless_setup_usec,
            p.forkless_early_bytes,
            p.forkless_early_keys,
            st.table.strategy.name(),
            st.table.fork_pages().0,
            st.table.fork_pages().1,
        );
        if let Some(t) = &st.tracer {
            t.info_lines(&mut o);
        }
        o.push_str("\r\n");
    }
    if want("stats") {
        let _ = write!(
            o,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             instantaneous_ops_per_sec:{}\r\nlatest_fork_usec:{}\r\ntotal_forks:{}\r\n\
             client_output_buffer_limit_disconnections:{}\r\n\r\n",
            st.stats.total_connections,
            st.stats.total_commands,
            st.stats.ops_per_sec(),
            p.latest_fork_usec,
            p.total_forks,
            st.output_limit_disconnections,
        );
    }
    if want("latencystats") {
        o.push_str("# Latencystats\r\n");
        st.latency.info(&mut o, cmd_name);
        o.push_str("\r\n");
    }
    if want("keyspace") {
        o.push_str("# Keyspace\r\n");
        if !st.table.is_empty() {
            let _ = write!(
                o,
                "db0:keys={},expires={},avg_ttl=0\r\n",
                st.table.len(),
                st.table.expires()
            );
        }
        o.push_str("\r\n");
    }
    let _ = SECTIONS;
    while o.ends_with("\r\n\r\n") {
        o.truncate(o.len() - 2);
    }
    o
}
