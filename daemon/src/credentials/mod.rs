//! Credentials from the centre (issue 9): the room's roster kept sealed in the state directory,
//! applied to identification and to the EF01 modules, acknowledged to the centre; enrolments
//! captured here sent to the centre through a durable outbox.
//!
//! ```text
//! centre --RosterUpdate (parts)--> uplink --> actor: gather parts, decide (sync.rs),
//!     give EF01 slots, save sealed (store.rs) --> swap the accept path's roster,
//!     publish the wanted module library (drivers' LibraryPort) --> RosterAck
//! centre --Command--> actor: Resync (ack want_snapshot), Enrol (enrol.rs), EnrolmentResult
//! control socket `enrol` / centre Enrol --> enrol.rs: capture --> outbox (outbox.rs, durable)
//!     --> Enrolment published, re-sent on reconnect and every minute until its result
//! ```
//!
//! The actor owns the stored roster and the outbox; it talks to MQTT only through the uplink
//! (messages in, publishes out), so the uplink stays the one owner of the MQTT client.

pub mod actor;
mod commands;
pub mod enrol;
pub mod outbox;
pub mod store;
pub mod sync;

use std::collections::HashMap;
use std::sync::Arc;

use rollcall_drivers::{Library, LibraryPort, ReaderConfig, ReaderKind};
use rollcall_protocol::v1::RosterFailure;
use rollcall_protocol::v1::credentials::{FORMAT_CARD, FORMAT_EF01, FORMAT_ISO_19794_2};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

pub use actor::{Actor, CredentialsLink, Inbound, Msg};

use crate::capture::Accept;
use crate::config::{Config, RosterSource};
use crate::keys::Keyring;
use crate::metrics::Metrics;
use crate::roster::Roster;
use crate::templates::Templates;
use store::StoredRoster;

/// The credentials part of rollcalld, connected: the library port of each EF01 reader (for its
/// reader task), the uplink's link, the enroller (for the control socket), and the actor.
#[derive(Debug)]
pub struct Wiring {
    /// Library ports by reader id.
    pub ports: HashMap<String, LibraryPort>,
    /// For the uplink.
    pub link: CredentialsLink,
    /// For the control socket.
    pub enroller: Arc<enrol::Enroller>,
    /// To run until shutdown.
    pub actor: Actor,
}

/// Opens the sealed roster and the outbox, installs the stored roster in the accept path (so
/// punches use it from the first tap), and connects the parts.
pub fn wire(
    config: &Config,
    keyring: &Arc<Keyring>,
    accept: &Arc<Accept>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Wiring> {
    let (state_dir, device_id) = (&config.device.state_dir, config.device.id.as_str());
    let from_centre = config.roster.source == RosterSource::Centre;
    let store = Arc::new(store::RosterStore::with_keyring(
        state_dir,
        device_id,
        keyring.clone(),
    ));
    let outbox = Arc::new(outbox::Outbox::open(state_dir, device_id)?);
    let iso = config
        .readers
        .iter()
        .any(|r| r.kind == ReaderKind::IsoTemplate);
    let (mut held, mut want_snapshot) = (StoredRoster::default(), true);
    if from_centre {
        match store.load() {
            Ok(Some(r)) => {
                tracing::info!(
                    version = r.version,
                    students = r.students.len(),
                    "stored roster opened"
                );
                want_snapshot = r.version == 0;
                held = r;
            }
            Ok(None) => {
                tracing::info!("no roster stored yet: the centre will be asked for a snapshot")
            }
            Err(e) => {
                tracing::error!(error = %e, "stored roster unreadable: the centre will be asked for a snapshot")
            }
        }
        let prepared = prepare(&held, config.capture.match_threshold, iso);
        accept.set_roster(prepared.roster);
    }
    let (desired, _) = watch::channel(Arc::new(Library::default()));
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let mut ports = HashMap::new();
    let mut jobs = HashMap::new();
    let mut modules = Vec::new();
    if from_centre {
        for r in config.readers.iter().filter(|r| is_module(r)) {
            let (job_tx, job_rx) = mpsc::channel(1);
            ports.insert(
                r.id.clone(),
                LibraryPort::new(desired.subscribe(), job_rx, reports_tx.clone()),
            );
            jobs.insert(r.id.clone(), job_tx);
            modules.push(r.id.clone());
        }
    }
    let (actor_tx, rx) = mpsc::unbounded_channel();
    let (out, outbound) = mpsc::channel(64);
    let enroller = Arc::new(enrol::Enroller::new(
        device_id,
        &config.readers,
        jobs,
        accept.clone(),
        actor_tx.clone(),
    ));
    let actor = Actor {
        device_id: device_id.to_owned(),
        store,
        outbox,
        from_centre,
        initial: Some((held, want_snapshot)),
        accept: accept.clone(),
        desired,
        reports,
        modules,
        accepts: accepted_formats(&config.readers),
        iso,
        threshold: config.capture.match_threshold,
        enroller: enroller.clone(),
        metrics: metrics.clone(),
        out,
        rx,
    };
    Ok(Wiring {
        ports,
        link: CredentialsLink {
            inbound: actor_tx,
            outbound,
            roster_from_centre: from_centre,
        },
        enroller,
        actor,
    })
}

/// The credential formats `readers` take, as a RosterAck's `accepts` lists them.
pub fn accepted_formats(readers: &[ReaderConfig]) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |f: &str| {
        if !out.iter().any(|o| o == f) {
            out.push(f.to_owned());
        }
    };
    for r in readers {
        match r.kind {
            ReaderKind::SimulatedCard
            | ReaderKind::Rdm6300
            | ReaderKind::Pn532
            | ReaderKind::Wiegand => add(FORMAT_CARD),
            ReaderKind::SimulatedFingerprint | ReaderKind::Ef01 => add(FORMAT_EF01),
            ReaderKind::IsoTemplate => add(FORMAT_ISO_19794_2),
        }
    }
    out
}

/// Whether a reader is an EF01 module whose library the gateway keeps.
pub fn is_module(reader: &ReaderConfig) -> bool {
    matches!(
        reader.kind,
        ReaderKind::Ef01 | ReaderKind::SimulatedFingerprint
    )
}

/// What identification needs from a stored roster, and what could not be prepared.
#[derive(Debug)]
pub struct Prepared {
    /// The roster the accept path searches.
    pub roster: Roster,
    /// ISO templates prepared for the software matcher.
    pub iso_loaded: u32,
    /// ISO templates that do not parse.
    pub failures: Vec<RosterFailure>,
}

/// Builds the accept path's roster from the stored one: card UIDs, module slots and prepared
/// ISO templates (blocking: preparing templates takes about 1 ms each).
pub fn prepare(held: &StoredRoster, threshold: f32, iso: bool) -> Prepared {
    let mut cards = HashMap::new();
    let mut fingers = HashMap::new();
    let mut gallery = Vec::new();
    let mut failures = Vec::new();
    let mut iso_loaded = 0;
    for s in &held.students {
        for c in &s.cards {
            cards.insert(c.uid.as_bytes().to_vec(), s.student.clone());
        }
        let mut prints = Vec::new();
        for f in &s.fingers {
            match f.format.as_str() {
                FORMAT_EF01 => {
                    if let Some(slot) = held.slot_of(&f.id) {
                        fingers.insert(slot, s.student.clone());
                    }
                }
                FORMAT_ISO_19794_2 if iso => match crate::templates::prepare(f.data.as_bytes()) {
                    Ok(t) => {
                        prints.push(t);
                        iso_loaded += 1;
                    }
                    Err(e) => failures.push(failure(
                        f.id,
                        format!("not a usable ISO/IEC 19794-2 record: {e}"),
                    )),
                },
                other => failures.push(failure(
                    f.id,
                    format!("format {other:?} is not taken by this gateway's readers"),
                )),
            }
        }
        if !prints.is_empty() {
            gallery.push((s.student.clone(), prints));
        }
    }
    let templates = (!gallery.is_empty()).then(|| Templates::new(gallery, threshold));
    Prepared {
        roster: Roster::from_centre(held.version, cards, fingers, templates),
        iso_loaded,
        failures,
    }
}

/// A failure with its reason cut to the protocol's limit.
pub fn failure(id: Uuid, mut reason: String) -> RosterFailure {
    let max = rollcall_protocol::v1::MAX_REFUSAL_TEXT;
    if reason.len() > max {
        let mut cut = max;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    RosterFailure { id, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_protocol::v1::{CardCredential, FingerCredential, RosterStudent, Secret, Subject};

    fn finger(n: u8, format: &str, data: Vec<u8>) -> FingerCredential {
        FingerCredential {
            id: Uuid::from_bytes([n; 16]),
            format: format.into(),
            data: Secret::new(data),
        }
    }

    #[test]
    fn a_stored_roster_identifies_cards_module_slots_and_iso_templates() {
        let fvc = crate::templates::tests::fvc;
        let held = StoredRoster {
            version: 4,
            students: vec![
                RosterStudent {
                    student: "S1".into(),
                    cards: vec![CardCredential {
                        id: Uuid::from_bytes([1; 16]),
                        uid: Secret::new(vec![4, 3, 2, 1]),
                    }],
                    fingers: (1..=3)
                        .map(|i| finger(10 + i, FORMAT_ISO_19794_2, fvc(&format!("101_{i}"))))
                        .collect(),
                },
                RosterStudent {
                    student: "S2".into(),
                    cards: vec![],
                    fingers: vec![
                        finger(20, FORMAT_EF01, vec![7; 512]),
                        finger(21, FORMAT_ISO_19794_2, b"not a record".to_vec()),
                        finger(22, "vendor-x", vec![1; 10]),
                    ],
                },
            ],
            slots: vec![store::SlotEntry {
                id: [20; 16],
                slot: 5,
            }],
            ..Default::default()
        };
        let p = prepare(&held, rollcall_matcher::THRESHOLD, true);
        assert_eq!(p.roster.version, Some(4));
        assert_eq!(
            p.roster.card(&[4, 3, 2, 1], &[0; 32]),
            Subject::Student("S1".into())
        );
        assert_eq!(p.roster.finger(5), Subject::Student("S2".into()));
        assert_eq!(p.iso_loaded, 3);
        let found = p
            .roster
            .templates()
            .expect("templates")
            .identify(&fvc("101_5"))
            .expect("identify");
        assert_eq!(found.subject, Subject::Student("S1".into()));
        let failed: Vec<_> = p.failures.iter().map(|f| f.id.as_bytes()[0]).collect();
        assert_eq!(failed, [21, 22], "{:?}", p.failures);

        // Without an iso-template reader, ISO templates are not the gateway's to load.
        let p = prepare(&held, rollcall_matcher::THRESHOLD, false);
        assert!(p.roster.templates().is_none());
        assert_eq!(p.failures.len(), 5);
    }

    #[test]
    fn failures_are_cut_to_the_protocols_limit_on_a_character_boundary() {
        let f = failure(Uuid::nil(), "é".repeat(400));
        assert!(f.reason.len() <= rollcall_protocol::v1::MAX_REFUSAL_TEXT);
        assert!(f.reason.chars().all(|c| c == 'é'));
    }
}
