//! `status --json` on the control socket: everything `rollcall status` shows, in one line of
//! JSON, so the command line reads the daemon's own view instead of guessing it. The line is
//! written by hand (numbers, booleans and escaped strings only): the daemon needs no JSON library
//! for it, and `rollcall` reads it back into [`StatusReport`] with serde.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rollcall_drivers::ReaderHealth;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Control;

/// The daemon's state as `status --json` answers it. Fields are added, never renamed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StatusReport {
    /// The journal's epoch.
    pub epoch: u64,
    /// Highest seq assigned.
    pub last_seq: u64,
    /// Highest seq the centre acked (0: none in this epoch).
    pub acked: u64,
    /// Unacked punches held.
    pub depth: u64,
    /// Most unacked punches held (`journal.capacity`).
    pub capacity: u64,
    /// Age of the oldest unacked punch, seconds; `None` when the journal is empty.
    pub oldest_unacked_age_s: Option<u64>,
    /// Punches deleted after the centre's acks since rollcalld started.
    pub punches_acked: u64,
    /// Seconds since an ack last moved the journal on; `None`: none since rollcalld started.
    pub last_ack_age_s: Option<u64>,
    /// Whether the MQTT link to the broker is up.
    pub link_up: bool,
    /// Health reported by each reader that reported (a reader absent here never did).
    pub readers: BTreeMap<String, ReaderReport>,
    /// Whether the kernel says the clock is NTP-synchronised.
    pub clock_synced: bool,
    /// The clock's estimated error, ms, when synchronised.
    pub clock_offset_ms: Option<i64>,
    /// Version of the roster in use (0: none yet).
    pub roster_version: u64,
    /// Fingerprint templates loaded into the modules and the software matcher.
    pub templates_loaded: u64,
    /// Library size of the EF01 modules (the smallest); 0 without modules.
    pub module_capacity: u64,
    /// Enrolments waiting for the centre's verdict.
    pub enrolment_outbox: u64,
    /// The device data key's fingerprint (`rollcall keys rotate` changes it; empty from an
    /// older rollcalld).
    #[serde(default)]
    pub key_fingerprint: String,
    /// Seconds since the device data key was made or last rotated.
    #[serde(default)]
    pub key_age_s: Option<u64>,
}

/// One reader's reported health.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReaderReport {
    /// Whether it answers.
    pub healthy: bool,
    /// What is wrong, for a person, when not healthy.
    pub detail: String,
}

impl StatusReport {
    /// One line of JSON, the keys named as the fields.
    pub fn to_json(&self) -> String {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "null".to_owned());
        let mut readers = String::new();
        for (i, (id, r)) in self.readers.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(
                readers,
                "{sep}{}:{{\"healthy\":{},\"detail\":{}}}",
                json_string(id),
                r.healthy,
                json_string(&r.detail)
            );
        }
        format!(
            "{{\"epoch\":{},\"last_seq\":{},\"acked\":{},\"depth\":{},\"capacity\":{},\
             \"oldest_unacked_age_s\":{},\"punches_acked\":{},\"last_ack_age_s\":{},\"link_up\":{},\"readers\":{{{readers}}},\
             \"clock_synced\":{},\"clock_offset_ms\":{},\"roster_version\":{},\
             \"templates_loaded\":{},\"module_capacity\":{},\"enrolment_outbox\":{},\
             \"key_fingerprint\":{},\"key_age_s\":{}}}",
            self.epoch,
            self.last_seq,
            self.acked,
            self.depth,
            self.capacity,
            opt(self.oldest_unacked_age_s.map(|v| v.to_string())),
            self.punches_acked,
            opt(self.last_ack_age_s.map(|v| v.to_string())),
            self.link_up,
            self.clock_synced,
            opt(self.clock_offset_ms.map(|v| v.to_string())),
            self.roster_version,
            self.templates_loaded,
            self.module_capacity,
            self.enrolment_outbox,
            json_string(&self.key_fingerprint),
            opt(self.key_age_s.map(|v| v.to_string())),
        )
    }
}

/// A JSON string literal: quotes, backslashes and control characters escaped.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// When the centre's acks last moved the journal on, as seen since rollcalld started.
#[derive(Debug, Clone, Default)]
pub(super) struct LastAck(Arc<Mutex<Option<Instant>>>);

impl LastAck {
    /// Notes the time of every change of the journal's acked seq until `shutdown`.
    pub(super) fn watch(
        mut stats: watch::Receiver<crate::journal::actor::JournalStats>,
        shutdown: CancellationToken,
    ) -> Self {
        let me = Self::default();
        let seen = me.clone();
        let mut acked = stats.borrow_and_update().acked;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = stats.changed() => if changed.is_err() { return },
                }
                let now = stats.borrow_and_update().acked;
                if now != acked {
                    acked = now;
                    *seen.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                }
            }
        });
        me
    }

    fn age_s(&self) -> Option<u64> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|at| at.elapsed().as_secs())
    }
}

/// Gathers the report from the parts `control` holds.
pub(super) async fn report(control: &Control, last_ack: &LastAck) -> StatusReport {
    let s = *control.journal.stats().borrow();
    let (now, clock) = crate::clock::now();
    let oldest = match control.journal.oldest_captured_at_ms().await {
        Ok(Some(at)) => Some(((now - at).max(0) / 1000) as u64),
        _ => None,
    };
    let m = &control.metrics;
    let gauge = |g: &prometheus_client::metrics::gauge::Gauge| g.get().max(0) as u64;
    StatusReport {
        epoch: s.epoch,
        last_seq: s.last_seq,
        acked: s.acked,
        depth: s.depth,
        capacity: s.capacity,
        oldest_unacked_age_s: if s.depth == 0 { None } else { oldest },
        punches_acked: m.punches_acked.get(),
        last_ack_age_s: last_ack.age_s(),
        link_up: m.link_up.get() == 1,
        readers: readers(&control.accept.reader_health_snapshot()),
        clock_synced: clock.ntp_synced,
        clock_offset_ms: clock.offset_ms,
        roster_version: control.accept.roster().version.unwrap_or(0),
        templates_loaded: gauge(&m.templates_loaded),
        module_capacity: gauge(&m.module_capacity),
        enrolment_outbox: gauge(&m.enrolment_outbox),
        key_fingerprint: control.keyring.fingerprint(),
        key_age_s: control.keyring.age_s(),
    }
}

fn readers(health: &crate::capture::ReaderHealthMap) -> BTreeMap<String, ReaderReport> {
    health
        .iter()
        .map(|(id, h)| {
            let (healthy, detail) = match h {
                ReaderHealth::Ok => (true, String::new()),
                ReaderHealth::Down(why) => (false, why.clone()),
            };
            (id.clone(), ReaderReport { healthy, detail })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_health_becomes_one_entry_per_reader_with_what_is_wrong() {
        let health = crate::capture::ReaderHealthMap::from([
            ("door-card".to_owned(), ReaderHealth::Ok),
            (
                "door-finger".to_owned(),
                ReaderHealth::Down("/dev/ttyAMA0: no such file".into()),
            ),
        ]);
        let got = readers(&health);
        assert_eq!(
            got["door-finger"],
            ReaderReport {
                healthy: false,
                detail: "/dev/ttyAMA0: no such file".into()
            }
        );
        assert!(got["door-card"].healthy);
    }

    #[tokio::test]
    async fn the_last_ack_is_when_the_acked_seq_last_moved() {
        use crate::journal::actor::JournalStats;
        let (tx, rx) = watch::channel(JournalStats::default());
        let stop = CancellationToken::new();
        let last = LastAck::watch(rx, stop.clone());
        assert_eq!(last.age_s(), None, "no ack yet");
        tx.send_modify(|s| s.depth = 3);
        tokio::task::yield_now().await;
        assert_eq!(last.age_s(), None, "a new punch is not an ack");
        tx.send_modify(|s| s.acked = 3);
        for _ in 0..100 {
            if last.age_s().is_some() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(last.age_s(), Some(0));
        stop.cancel();
    }

    #[test]
    fn strings_are_escaped_for_json() {
        assert_eq!(
            json_string("a \"b\" c\\d\ne\u{1b}"),
            r#""a \"b\" c\\d\ne\u001b""#
        );
    }

    #[test]
    fn the_report_is_one_line_of_json() {
        let r = StatusReport {
            epoch: 3,
            last_seq: 20,
            acked: 12,
            depth: 8,
            capacity: 100,
            oldest_unacked_age_s: Some(42),
            punches_acked: 12,
            last_ack_age_s: Some(9),
            link_up: false,
            readers: readers(&crate::capture::ReaderHealthMap::from([(
                "door".to_owned(),
                ReaderHealth::Down("line\nbreak \"quoted\"".into()),
            )])),
            clock_synced: true,
            clock_offset_ms: Some(5),
            roster_version: 7,
            templates_loaded: 2,
            module_capacity: 200,
            enrolment_outbox: 1,
            key_fingerprint: "3f0c9a2e51d4b7a6".into(),
            key_age_s: Some(86_400),
        };
        let line = r.to_json();
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(
            line,
            r#"{"epoch":3,"last_seq":20,"acked":12,"depth":8,"capacity":100,"oldest_unacked_age_s":42,"punches_acked":12,"last_ack_age_s":9,"link_up":false,"readers":{"door":{"healthy":false,"detail":"line\nbreak \"quoted\""}},"clock_synced":true,"clock_offset_ms":5,"roster_version":7,"templates_loaded":2,"module_capacity":200,"enrolment_outbox":1,"key_fingerprint":"3f0c9a2e51d4b7a6","key_age_s":86400}"#
        );
        let empty = StatusReport {
            oldest_unacked_age_s: None,
            last_ack_age_s: None,
            clock_offset_ms: None,
            readers: BTreeMap::new(),
            key_age_s: None,
            ..r
        };
        let line = empty.to_json();
        assert!(
            line.contains(r#""oldest_unacked_age_s":null"#)
                && line.contains(r#""readers":{}"#)
                && line.contains(r#""clock_offset_ms":null"#)
                && line.contains(r#""key_age_s":null"#),
            "{line}"
        );
    }
}
