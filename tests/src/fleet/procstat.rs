//! CPU time and memory of the benchmark's child processes, read from /proc.
//!
//! CPU of a process tree (PostgreSQL's postmaster and its backends) is the live processes'
//! `utime + stime` plus the root's `cutime + cstime` (its reaped children: a backend that exited
//! is counted there once the postmaster has waited for it), so the difference of two readings is
//! the tree's CPU time between them. Memory: `VmHWM` (peak resident set) of a single process;
//! for a tree, whose processes share PostgreSQL's shared buffers, the sum of `Pss` (each shared
//! page divided among the processes that map it) from `smaps_rollup`, sampled, its peak kept.

use std::collections::HashMap;

/// Clock ticks per second of /proc's CPU fields (`getconf CLK_TCK`; USER_HZ is 100 on Linux
/// whatever the kernel's tick rate, so that is the fallback).
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// (ppid, utime + stime, cutime + cstime) of a process, in ticks.
fn stat(pid: u32) -> Option<(u32, u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, utime..cstime fields 14-17.
    let n = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    Some((n(4)? as u32, n(14)? + n(15)?, n(16)? + n(17)?))
}

/// Every live process's parent, for walking trees.
fn parents() -> HashMap<u32, u32> {
    let mut m = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                && let Some((ppid, _, _)) = stat(pid)
            {
                m.insert(pid, ppid);
            }
        }
    }
    m
}

/// `root` and its live descendants.
pub fn tree(root: u32) -> Vec<u32> {
    let parents = parents();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parents.iter().filter(|(_, pp)| **pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// CPU seconds used so far by `root` and its descendants (live, and reaped by `root`).
pub fn cpu_seconds(root: u32, whole_tree: bool) -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let pids = if whole_tree { tree(root) } else { vec![root] };
    let mut ticks = 0;
    for pid in pids {
        if let Some((_, own, reaped)) = stat(pid) {
            ticks += own;
            if pid == root && whole_tree {
                ticks += reaped;
            }
        }
    }
    ticks as f64 / *TICKS.get_or_init(ticks_per_second)
}

/// A `kB` field of /proc/<pid>/status or smaps_rollup, in MiB.
fn kb_field(path: &str, field: &str) -> Option<f64> {
    let s = std::fs::read_to_string(path).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Peak resident set (`VmHWM`) of one process, MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    kb_field(&format!("/proc/{pid}/status"), "VmHWM:")
}

/// Proportional set size of `root`'s tree now, MiB (shared pages counted once in all).
pub fn tree_pss_mib(root: u32) -> f64 {
    tree(root)
        .into_iter()
        .filter_map(|p| kb_field(&format!("/proc/{p}/smaps_rollup"), "Pss:"))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_cpu_time_and_memory() {
        let me = std::process::id();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_seconds(me, false) > 0.0);
        assert!(peak_rss_mib(me).is_some_and(|m| m > 0.5));
        assert!(tree_pss_mib(me) > 0.5);
    }

    #[test]
    fn a_child_is_in_its_parents_tree() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        let t = tree(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(t.contains(&child.id()), "{t:?}");
    }
}
