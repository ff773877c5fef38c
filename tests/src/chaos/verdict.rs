//! The soak's verdict: what the taps were told against what the database holds, as a pure
//! function of both, and its one-screen report.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use super::centre::{Row, STUDENTS};
use super::gateway::same_subject;

/// What one gateway contributes to the judgement.
#[derive(Debug, Clone)]
pub struct GatewayFacts {
    /// Device id.
    pub device: String,
    /// Its session.
    pub session: i64,
    /// Epochs it reported at its starts.
    pub epochs: BTreeSet<u64>,
    /// Stored punches the taps were told about: (epoch, seq) -> subject as printed.
    pub stored: BTreeMap<(u64, u64), String>,
    /// Seqs answered twice within one epoch.
    pub reused: Vec<(u64, u64)>,
    /// Final journal counters (last_seq, acked, depth), if it answered.
    pub journal: Option<(u64, u64, u64)>,
    /// Whether its clock was stepped (its punches may be held or find no session).
    pub clock_stepped: bool,
}

/// The judgement over the database, plus the run's counters filled in by the caller.
#[derive(Debug, Default, Clone)]
pub struct Verdict {
    /// The seed (rerun with `ROLLCALL_CHAOS_SEED`).
    pub seed: u64,
    /// Tapping time.
    pub ran_for: Duration,
    /// Gateways, ingest replicas.
    pub topology: (usize, usize),
    /// Taps answered accepted or unknown (stored, fsync'd).
    pub accepted: u64,
    /// Taps answered storage_full.
    pub storage_full: u64,
    /// Ledger rows.
    pub ledger_rows: u64,
    /// Ledger rows by outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// Ledger rows taken while a clock was stepped (more than an hour off).
    pub skewed: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Hostile messages injected at the broker, by kind.
    pub injected: BTreeMap<&'static str, u64>,
    /// Largest total backlog seen while the broker was away.
    pub max_backlog: u64,
    /// Longest drain: broker back to every punch queued before it acked.
    pub longest_drain: Duration,
    /// Final drain: taps stopped and faults healed to every journal empty.
    pub final_drain: Duration,
    /// Unsynced bytes dropped by power cuts.
    pub dropped_bytes: u64,
    /// Accepted punches missing from the ledger (or there with another subject).
    pub lost: Vec<String>,
    /// Punches counted more than once.
    pub duplicated: Vec<String>,
    /// Ledger rows or records nobody was told about or the rules do not allow.
    pub wrong: Vec<String>,
    /// Journals that did not drain to empty.
    pub undrained: Vec<String>,
}

impl Verdict {
    /// Faults that killed a process without warning: kill -9 of any component, or a power cut.
    pub fn kill_cycles(&self) -> u64 {
        self.faults
            .iter()
            .filter(|(k, _)| k.starts_with("kill9_") || **k == "power_cut")
            .map(|(_, n)| n)
            .sum()
    }

    /// Whether the run passed: nothing lost, nothing duplicated, nothing wrong, all drained.
    pub fn passed(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.wrong.is_empty()
            && self.undrained.is_empty()
    }
}

fn ledger_ok(subject: &str, outcome: &str, clock_stepped: bool) -> bool {
    let clock_ok = clock_stepped && ["held", "no_session"].contains(&outcome);
    clock_ok
        || if subject.starts_with("card:") || subject.starts_with("finger:") {
            outcome == "unknown_credential"
        } else {
            ["recorded", "duplicate"].contains(&outcome)
        }
}

/// Judges the ledger and the attendance records (`(session, roll number, mark)`) against what
/// the gateways' taps were told, filling `lost`, `duplicated`, `wrong` and `undrained`.
pub fn judge(
    v: &mut Verdict,
    gateways: &[GatewayFacts],
    ledger: &[Row],
    records: &[(i64, String, String)],
) {
    v.ledger_rows = ledger.len() as u64;
    for r in ledger {
        *v.outcomes.entry(r.outcome.clone()).or_default() += 1;
        v.skewed += u64::from(r.skewed);
    }
    let mut rows: BTreeMap<(&str, u64, u64), &Row> = BTreeMap::new();
    for r in ledger {
        let key = (r.device.as_str(), r.epoch as u64, r.seq as u64);
        if rows.insert(key, r).is_some() {
            v.duplicated.push(format!("{key:?}: two ledger rows"));
        }
    }
    let mut expected_records: BTreeSet<(i64, String)> = BTreeSet::new();
    for g in gateways {
        for key in &g.reused {
            v.duplicated.push(format!(
                "{} epoch {} seq {}: answered twice",
                g.device, key.0, key.1
            ));
        }
        match g.journal {
            Some((last, acked, depth)) if acked == last && depth == 0 => {}
            other => v.undrained.push(format!("{}: journal {other:?}", g.device)),
        }
        for ((epoch, seq), reply) in &g.stored {
            match rows.get(&(g.device.as_str(), *epoch, *seq)) {
                None => v
                    .lost
                    .push(format!("{} epoch {epoch} seq {seq} ({reply})", g.device)),
                Some(r) if !same_subject(reply, &r.subject) => v.lost.push(format!(
                    "{} epoch {epoch} seq {seq}: tap said {reply}, ledger has {}",
                    g.device, r.subject
                )),
                Some(_) => {}
            }
        }
        let mine: Vec<&Row> = ledger.iter().filter(|r| r.device == g.device).collect();
        let epochs: BTreeSet<u64> = mine.iter().map(|r| r.epoch as u64).collect();
        if epochs.len() > 1 {
            v.duplicated.push(format!(
                "{}: {} journal epochs in the ledger ({epochs:?}): a journal started over and re-sent",
                g.device,
                epochs.len()
            ));
        }
        let last = g.journal.map_or(0, |j| j.0);
        for epoch in &epochs {
            if !g.epochs.contains(epoch) {
                v.wrong
                    .push(format!("{}: ledger epoch {epoch} never reported", g.device));
            }
            let seqs: Vec<u64> = mine
                .iter()
                .filter(|r| r.epoch as u64 == *epoch)
                .map(|r| r.seq as u64)
                .collect();
            if seqs != (1..=last).collect::<Vec<_>>() {
                let have: BTreeSet<u64> = seqs.iter().copied().collect();
                let missing: Vec<u64> = (1..=last).filter(|s| !have.contains(s)).take(10).collect();
                let beyond: Vec<u64> = seqs
                    .iter()
                    .copied()
                    .filter(|s| *s > last)
                    .take(10)
                    .collect();
                v.wrong.push(format!(
                    "{} epoch {epoch}: ledger seqs are not 1..={last} (missing {missing:?}, beyond {beyond:?})",
                    g.device
                ));
            }
        }
        for r in &mine {
            if !ledger_ok(&r.subject, &r.outcome, g.clock_stepped) {
                v.wrong.push(format!(
                    "{} seq {}: {} has outcome {}",
                    g.device, r.seq, r.subject, r.outcome
                ));
            }
            if r.outcome == "recorded" && r.session != Some(g.session) {
                v.wrong.push(format!(
                    "{} seq {}: recorded in session {:?}, the room's is {}",
                    g.device, r.seq, r.session, g.session
                ));
            }
        }
        for student in STUDENTS {
            let recorded = mine
                .iter()
                .filter(|r| r.subject == student && r.outcome == "recorded")
                .count();
            let tapped = mine
                .iter()
                .any(|r| r.subject == student && r.outcome != "held" && r.outcome != "no_session");
            match recorded {
                0 if tapped => v
                    .lost
                    .push(format!("{}: {student} tapped, never recorded", g.device)),
                0 => {}
                1 => {
                    expected_records.insert((g.session, student.to_owned()));
                }
                n => v
                    .duplicated
                    .push(format!("{}: {student} recorded {n} times", g.device)),
            }
        }
    }
    let known: BTreeSet<&str> = gateways.iter().map(|g| g.device.as_str()).collect();
    for r in ledger
        .iter()
        .filter(|r| !known.contains(r.device.as_str()))
        .take(10)
    {
        v.wrong
            .push(format!("ledger row of unknown device {}", r.device));
    }
    let mut have: BTreeMap<(i64, String), Vec<&str>> = BTreeMap::new();
    for (session, roll, mark) in records {
        have.entry((*session, roll.clone())).or_default().push(mark);
    }
    for (key, marks) in &have {
        if marks.len() > 1 {
            v.duplicated
                .push(format!("{key:?}: {} attendance records", marks.len()));
        }
        if !expected_records.contains(key) {
            v.wrong.push(format!(
                "{key:?}: attendance record {marks:?} without a recorded punch"
            ));
        } else if marks.iter().any(|m| *m != "present") {
            v.wrong
                .push(format!("{key:?}: marked {marks:?}, expected present"));
        }
    }
    for key in &expected_records {
        if !have.contains_key(key) {
            v.lost
                .push(format!("{key:?}: recorded punch, no attendance record"));
        }
    }
}

fn list(f: &mut fmt::Formatter<'_>, name: &str, items: &[String]) -> fmt::Result {
    write!(f, "  {name:<11}{}", items.len())?;
    for item in items.iter().take(5) {
        write!(f, "\n      {item}")?;
    }
    if items.len() > 5 {
        write!(f, "\n      ... and {} more", items.len() - 5)?;
    }
    writeln!(f)
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
        writeln!(
            f,
            "chaos soak verdict: {} (seed {}, rerun with ROLLCALL_CHAOS_SEED={})",
            if self.passed() { "PASS" } else { "FAIL" },
            self.seed,
            self.seed
        )?;
        writeln!(
            f,
            "  ran        {} of taps; {} gateways, {} ingest replicas, Mosquitto, PostgreSQL",
            secs(self.ran_for),
            self.topology.0,
            self.topology.1
        )?;
        writeln!(
            f,
            "  punches    {} accepted (fsync'd, answered); {} ledger rows; {} storage_full answers",
            self.accepted, self.ledger_rows, self.storage_full
        )?;
        write!(f, "  outcomes  ")?;
        for (k, n) in &self.outcomes {
            write!(f, " {k} {n},")?;
        }
        writeln!(f, " {} taken under a stepped clock", self.skewed)?;
        let total: u64 = self.faults.values().sum();
        write!(
            f,
            "  faults     {total} ({} kill cycles: kill -9 or power cut):",
            self.kill_cycles()
        )?;
        for (k, n) in &self.faults {
            write!(f, " {k} {n},")?;
        }
        writeln!(f)?;
        write!(f, "  injected  ")?;
        for (k, n) in &self.injected {
            write!(f, " {k} {n},")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "  backlog    {} punches at most while the broker was away; longest drain {}; final drain {}",
            self.max_backlog,
            secs(self.longest_drain),
            secs(self.final_drain)
        )?;
        writeln!(
            f,
            "  power cuts dropped {} unsynced bytes",
            self.dropped_bytes
        )?;
        list(f, "lost", &self.lost)?;
        list(f, "duplicated", &self.duplicated)?;
        list(f, "wrong", &self.wrong)?;
        list(f, "undrained", &self.undrained)
    }
}
