//! `rollcall status`: the local daemon's state, for people and scripts.
//!
//! Everything comes from rollcalld itself, over its control socket (`status --json`), plus the
//! free space of the state directory read here. The verdict is a pure function of those values
//! ([`assess`]), so what counts as degraded is tested without a daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use rollcall_daemon::Config;
use rollcall_daemon::config::RosterSource;
use rollcall_daemon::control::StatusReport;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// rollcalld's configuration file when `-c` is not given.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/rollcall/rollcalld.toml";

/// Exit status: healthy.
const HEALTHY: u8 = 0;
/// Exit status: running but something needs a person.
const DEGRADED: u8 = 1;
/// Exit status: the daemon's state could not be read.
const UNREACHABLE: u8 = 2;

/// Unacked punches older than this while the link is up mean acks are not coming back.
const ACK_LATE: Duration = Duration::from_secs(300);
/// Free space on the state directory's file system below which the gateway is degraded.
pub(crate) const LOW_DISK: u64 = 100 * 1024 * 1024;

const EXAMPLES: &str = "\
Examples:
  rollcall status
  rollcall status --json | jq .depth
  rollcall status -c /etc/rollcall/rollcalld.toml || echo \"needs attention: exit $?\"

Exit status: 0 healthy (warnings, such as an unsynchronised clock, are shown but keep 0);
1 degraded (offline, acks late, a reader down, journal nearly full, no roster from the centre,
disk nearly full); 2 rollcalld not reachable (not running, wrong socket or user) or its configuration unreadable.";

/// `rollcall status`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// rollcalld's configuration (for the control socket and the state directory).
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// One JSON object on stdout instead of the table (same exit status).
    #[arg(long)]
    pub json: bool,
}

/// Runs `rollcall status`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match load_config(&args.config) {
        Ok(c) => c,
        Err(e) => return Ok(report_unreachable(&args, &e)),
    };
    let socket = config.control_socket();
    let report = match query(&socket).await {
        Ok(r) => r,
        Err(e) => return Ok(report_unreachable(&args, &e)),
    };
    let free = free_bytes(&config.device.state_dir);
    let problems = assess(&config, &report, free);
    let code = if !problems.iter().any(|p| p.degrades) {
        HEALTHY
    } else {
        DEGRADED
    };
    if args.json {
        println!("{}", to_json(&config, &report, free, &problems));
    } else {
        print!("{}", human(&config, &report, free, &problems));
    }
    Ok(ExitCode::from(code))
}

/// Reads and validates rollcalld's configuration; the error says how to fix it.
pub(crate) fn load_config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| {
        anyhow::anyhow!(
            "{e}\nfix: correct {} (check it with `rollcalld validate --config {}`), or name \
             another with -c",
            path.display(),
            path.display()
        )
    })
}

/// Asks the daemon at `socket` for its state.
pub(crate) async fn query(socket: &Path) -> anyhow::Result<StatusReport> {
    let ask = async {
        let stream = tokio::net::UnixStream::connect(socket).await?;
        let (read, mut write) = stream.into_split();
        write.write_all(b"status --json\n").await?;
        let mut line = String::new();
        BufReader::new(read).read_line(&mut line).await?;
        Ok::<_, std::io::Error>(line)
    };
    let line = match tokio::time::timeout(Duration::from_secs(5), ask).await {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => anyhow::bail!("{}", not_answering(socket, &e)),
        Err(_) => anyhow::bail!(
            "rollcalld did not answer on {} within 5 s: it may be stuck; see `journalctl -u \
             rollcalld -n 50`, then `systemctl restart rollcalld`",
            socket.display()
        ),
    };
    serde_json::from_str(line.trim()).map_err(|e| {
        anyhow::anyhow!(
            "rollcalld on {} answered {:?}, not its status ({e}): rollcall and rollcalld must \
             come from the same release: install both from one package",
            socket.display(),
            line.trim()
        )
    })
}

/// Why nobody answers on `socket`, and what to do.
pub(crate) fn not_answering(socket: &Path, e: &std::io::Error) -> String {
    let label = socket.display();
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => format!(
            "rollcalld is not running (nothing answers on {label}: {e}): start it with \
             `systemctl start rollcalld`; if it does not stay up, `journalctl -u rollcalld -n 50` \
             says why"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "{label}: {e}: the control socket is for root and the rollcall user: run `sudo rollcall ...`"
        ),
        _ => {
            format!("rollcalld does not answer on {label}: {e}: check `systemctl status rollcalld`")
        }
    }
}

fn report_unreachable(args: &Args, e: &anyhow::Error) -> ExitCode {
    if args.json {
        println!(
            "{}",
            json!({"state": "unreachable", "exit": UNREACHABLE, "error": format!("{e:#}")})
        );
    }
    eprintln!("error: {e:#}");
    ExitCode::from(UNREACHABLE)
}

/// Something a person should look at, with what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub what: String,
    pub fix: String,
    /// False for a warning that leaves the gateway working as it should (an unsynchronised
    /// clock: every punch carries the clock's state, so the centre can correct its time).
    pub degrades: bool,
}

/// Everything that needs a person; the gateway is degraded when one of them `degrades`.
pub(crate) fn assess(config: &Config, r: &StatusReport, free: Option<u64>) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut add = |what: String, fix: &str| {
        out.push(Problem {
            what,
            fix: fix.to_owned(),
            degrades: true,
        })
    };
    let broker = format!("{}:{}", config.mqtt.host, config.mqtt.port);
    if !r.link_up {
        let backlog = if r.depth > 0 {
            format!(
                ", {} punches waiting{}",
                r.depth,
                r.oldest_unacked_age_s
                    .map(|a| format!(" (oldest {} old)", age(a)))
                    .unwrap_or_default()
            )
        } else {
            String::new()
        };
        add(
            format!("offline: not connected to the broker {broker}{backlog}"),
            "punches are safe in the journal and are sent when the link is back; `rollcall doctor` \
             checks the network, the broker and the certificate",
        );
    } else if r.depth > 0
        && r.oldest_unacked_age_s
            .is_some_and(|a| a >= ACK_LATE.as_secs())
    {
        add(
            format!(
                "acks late: connected, but {} punches wait, the oldest for {}",
                r.depth,
                age(r.oldest_unacked_age_s.unwrap_or(0))
            ),
            "the centre is not acknowledging: check rollcall-ingest is running and that this \
             device is registered and enabled (`rollcall device`)",
        );
    }
    for reader in &config.readers {
        if let Some(h) = r.readers.get(&reader.id)
            && !h.healthy
        {
            add(
                format!(
                    "reader {} ({}) down: {}",
                    reader.id,
                    reader.kind.as_str(),
                    h.detail
                ),
                "check its cable and power; `rollcall doctor` checks its port",
            );
        }
    }
    if r.capacity > 0 && r.depth.saturating_mul(10) >= r.capacity.saturating_mul(9) {
        add(
            format!("journal {} of {} punches full", r.depth, r.capacity),
            "new punches are refused when it is full: restore the link to the centre",
        );
    }
    if config.roster.source == RosterSource::Centre && r.roster_version == 0 {
        add(
            "no roster from the centre yet: nobody is recognised".into(),
            "check the link and that the device is registered and enabled at the centre",
        );
    }
    if let Some(free) = free
        && free < LOW_DISK
    {
        add(
            format!(
                "disk nearly full: {} free in {}",
                bytes(free),
                config.device.state_dir.display()
            ),
            "free space on that file system (old logs: `journalctl --vacuum-size=50M`)",
        );
    }
    if !r.clock_synced {
        out.push(Problem {
            what: "clock not synchronised (NTP)".into(),
            fix: "punch times may be wrong (each punch says so, for the centre to correct): \
                  `timedatectl set-ntp true`, and let UDP 123 reach an NTP server"
                .into(),
            degrades: false,
        });
    }
    out
}

fn human(config: &Config, r: &StatusReport, free: Option<u64>, problems: &[Problem]) -> String {
    let mut s = format!(
        "rollcalld {} (site {})\n",
        config.device.id, config.device.site
    );
    let mut row = |k: &str, v: String| s.push_str(&format!("  {k:<9} {v}\n"));
    let broker = format!("{}:{}", config.mqtt.host, config.mqtt.port);
    row(
        "link",
        if r.link_up {
            format!("up ({broker})")
        } else {
            format!("DOWN ({broker})")
        },
    );
    let oldest = r
        .oldest_unacked_age_s
        .map(|a| format!(", oldest {} old", age(a)))
        .unwrap_or_default();
    row(
        "journal",
        format!(
            "{} unacked of {}{oldest}; last seq {}, acked up to {} (epoch {})",
            r.depth, r.capacity, r.last_seq, r.acked, r.epoch
        ),
    );
    row(
        "last ack",
        match r.last_ack_age_s {
            Some(a) => format!(
                "{} ago; {} punches acked since start",
                age(a),
                r.punches_acked
            ),
            None => "none since rollcalld started".to_owned(),
        },
    );
    for reader in &config.readers {
        let state = match r.readers.get(&reader.id) {
            Some(h) if h.healthy => "ok".to_owned(),
            Some(h) => format!("DOWN: {}", h.detail),
            // The drivers report a reader's first start only by its failures (and a recovery
            // after one), so a reader absent from the health map has not failed.
            None => "ok (no failure since rollcalld started)".to_owned(),
        };
        row(
            "reader",
            format!("{} ({}): {state}", reader.id, reader.kind.as_str()),
        );
    }
    row(
        "clock",
        match (r.clock_synced, r.clock_offset_ms) {
            (true, Some(ms)) => format!("NTP synchronised (estimated error {ms} ms)"),
            (true, None) => "NTP synchronised".into(),
            (false, _) => "NOT synchronised".into(),
        },
    );
    row(
        "roster",
        format!(
            "version {}; {} templates loaded, module capacity {}",
            r.roster_version, r.templates_loaded, r.module_capacity
        ),
    );
    row(
        "outbox",
        format!("{} enrolments waiting for the centre", r.enrolment_outbox),
    );
    if !r.key_fingerprint.is_empty() {
        row(
            "data key",
            match r.key_age_s {
                Some(s) => format!(
                    "{} (made or rotated {} days ago; rollcall keys rotate)",
                    r.key_fingerprint,
                    s / 86_400
                ),
                None => r.key_fingerprint.clone(),
            },
        );
    }
    if let Some(free) = free {
        row(
            "disk",
            format!(
                "{} free in {}",
                bytes(free),
                config.device.state_dir.display()
            ),
        );
    }
    let degraded = problems.iter().any(|p| p.degrades);
    s.push_str(if degraded {
        "state: DEGRADED\n"
    } else {
        "state: healthy\n"
    });
    for p in problems {
        let tag = if p.degrades { "problem" } else { "warning" };
        s.push_str(&format!("  {tag}: {}\n    fix: {}\n", p.what, p.fix));
    }
    s
}

fn to_json(
    config: &Config,
    r: &StatusReport,
    free: Option<u64>,
    problems: &[Problem],
) -> serde_json::Value {
    let readers: Vec<_> = config
        .readers
        .iter()
        .map(|reader| {
            let h = r.readers.get(&reader.id);
            json!({
                "id": reader.id,
                "kind": reader.kind.as_str(),
                "reported": h.is_some(),
                "healthy": h.is_none_or(|h| h.healthy),
                "detail": h.map(|h| h.detail.clone()).unwrap_or_default(),
            })
        })
        .collect();
    let healthy = !problems.iter().any(|p| p.degrades);
    let list = |degrades: bool| -> Vec<_> {
        problems
            .iter()
            .filter(|p| p.degrades == degrades)
            .map(|p| json!({"what": p.what, "fix": p.fix}))
            .collect()
    };
    json!({
        "state": if healthy { "healthy" } else { "degraded" },
        "exit": if healthy { HEALTHY } else { DEGRADED },
        "problems": list(true),
        "warnings": list(false),
        "device_id": config.device.id,
        "site": config.device.site,
        "broker": format!("{}:{}", config.mqtt.host, config.mqtt.port),
        "link_up": r.link_up,
        "epoch": r.epoch,
        "last_seq": r.last_seq,
        "acked": r.acked,
        "depth": r.depth,
        "capacity": r.capacity,
        "oldest_unacked_age_s": r.oldest_unacked_age_s,
        "punches_acked": r.punches_acked,
        "last_ack_age_s": r.last_ack_age_s,
        "readers": readers,
        "clock_synced": r.clock_synced,
        "clock_offset_ms": r.clock_offset_ms,
        "roster_version": r.roster_version,
        "templates_loaded": r.templates_loaded,
        "module_capacity": r.module_capacity,
        "enrolment_outbox": r.enrolment_outbox,
        "key_fingerprint": r.key_fingerprint,
        "key_age_s": r.key_age_s,
        "free_disk_bytes": free,
    })
}

/// Free bytes for unprivileged users on the file system holding `path`.
pub(crate) fn free_bytes(path: &Path) -> Option<u64> {
    rollcall_daemon::sys::free_bytes(path)
}

/// `3h 12m`, `45s`: an age for people.
pub(crate) fn age(secs: u64) -> String {
    let d = Duration::from_secs(secs);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", d.as_secs() / 86400, secs % 86400 / 3600),
    }
}

/// `12.3 MB`: a size for people.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use rollcall_daemon::control::ReaderReport;

    fn config(roster: &str) -> Config {
        Config::parse(&format!(
            r#"
            [device]
            id = "room-101"
            site = "north"
            state_dir = "/var/lib/rollcall"
            [mqtt]
            host = "127.0.0.1"
            port = 1883
            allow_plaintext = true
            {roster}
            [[reader]]
            id = "door-card"
            kind = "simulated-card"
            "#
        ))
        .expect("valid config")
    }

    fn healthy() -> StatusReport {
        StatusReport {
            epoch: 1,
            last_seq: 10,
            acked: 10,
            depth: 0,
            capacity: 1000,
            oldest_unacked_age_s: None,
            punches_acked: 10,
            last_ack_age_s: Some(5),
            link_up: true,
            readers: BTreeMap::from([(
                "door-card".to_owned(),
                ReaderReport {
                    healthy: true,
                    detail: String::new(),
                },
            )]),
            clock_synced: true,
            clock_offset_ms: Some(3),
            roster_version: 4,
            templates_loaded: 0,
            module_capacity: 0,
            enrolment_outbox: 0,
            key_fingerprint: "3f0c9a2e51d4b7a6".into(),
            key_age_s: Some(3600),
        }
    }

    #[test]
    fn a_connected_gateway_with_everything_acked_is_healthy() {
        let c = config("");
        assert_eq!(assess(&c, &healthy(), Some(1 << 30)), vec![]);
    }

    #[test]
    fn offline_with_a_backlog_names_the_broker_and_the_waiting_punches() {
        let c = config("");
        let r = StatusReport {
            link_up: false,
            depth: 5,
            oldest_unacked_age_s: Some(125),
            ..healthy()
        };
        let p = assess(&c, &r, Some(1 << 30));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            p[0].what,
            "offline: not connected to the broker 127.0.0.1:1883, 5 punches waiting (oldest 2m 5s old)"
        );
    }

    #[test]
    fn a_down_reader_late_acks_a_full_journal_and_low_disk_degrade_an_unsynced_clock_warns() {
        let c = config("");
        let mut r = StatusReport {
            depth: 950,
            oldest_unacked_age_s: Some(600),
            clock_synced: false,
            ..healthy()
        };
        r.readers.insert(
            "door-card".into(),
            ReaderReport {
                healthy: false,
                detail: "port gone".into(),
            },
        );
        let problems = assess(&c, &r, Some(5 << 20));
        assert_eq!(
            problems.iter().map(|p| p.degrades).collect::<Vec<_>>(),
            [true, true, true, true, false]
        );
        let what: Vec<_> = problems.into_iter().map(|p| p.what).collect();
        assert_eq!(what.len(), 5, "{what:?}");
        assert!(what[0].starts_with("acks late"), "{what:?}");
        assert_eq!(what[1], "reader door-card (simulated-card) down: port gone");
        assert!(what[2].starts_with("journal 950 of 1000"), "{what:?}");
        assert!(what[4].starts_with("clock not synchronised"), "{what:?}");
        assert!(
            what[3].starts_with("disk nearly full: 5.2 MB free"),
            "{what:?}"
        );
    }

    #[test]
    fn an_unsynchronised_clock_alone_is_a_warning_not_degraded() {
        let r = StatusReport {
            clock_synced: false,
            ..healthy()
        };
        let p = assess(&config(""), &r, None);
        assert!(p.len() == 1 && !p[0].degrades, "{p:?}");
        let v = to_json(&config(""), &r, None, &p);
        assert_eq!(
            (v["state"].as_str(), v["exit"].as_u64()),
            (Some("healthy"), Some(0))
        );
        assert_eq!(v["warnings"][0]["what"], "clock not synchronised (NTP)");
    }

    #[test]
    fn no_roster_matters_only_when_the_centre_sends_it() {
        let r = StatusReport {
            roster_version: 0,
            ..healthy()
        };
        let p = assess(&config(""), &r, None);
        assert_eq!(p.len(), 1);
        assert!(p[0].what.starts_with("no roster from the centre"));
        let file = config("[roster]\nsource = \"file\"\npath = \"/etc/rollcall/roster.toml\"");
        assert_eq!(assess(&file, &r, None), vec![]);
    }

    #[test]
    fn the_json_has_every_field_and_the_verdict() {
        let c = config("");
        let v = to_json(&c, &healthy(), Some(7), &[]);
        for key in [
            "state",
            "exit",
            "depth",
            "oldest_unacked_age_s",
            "last_ack_age_s",
            "acked",
            "link_up",
            "readers",
            "clock_synced",
            "clock_offset_ms",
            "roster_version",
            "templates_loaded",
            "module_capacity",
            "enrolment_outbox",
            "free_disk_bytes",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        assert_eq!(v["state"], "healthy");
        assert_eq!(v["readers"][0]["id"], "door-card");
    }

    #[test]
    fn ages_and_sizes_read_as_people_say_them() {
        assert_eq!(age(45), "45s");
        assert_eq!(age(3725), "1h 2m");
        assert_eq!(age(90_000), "1d 1h");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(12_345_678), "12.3 MB");
    }
}
