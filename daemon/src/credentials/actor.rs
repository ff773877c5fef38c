//! The credentials actor: the one owner of the stored roster and the outbox.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rollcall_drivers::{Library, LibraryReport, Template};
use rollcall_protocol::topic::Kind;
use rollcall_protocol::v1::credentials::MAX_ROSTER_FAILURES;
use rollcall_protocol::v1::{Enrolment, RosterAck, RosterFailure, RosterUpdate};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::enrol::Enroller;
use super::outbox::Outbox;
use super::store::{RosterStore, StoredRoster};
use super::sync::{self, Assembler, Verdict};
use crate::capture::Accept;
use crate::metrics::Metrics;

/// How often enrolments without a result are sent again while online.
pub const RESEND_EVERY: Duration = Duration::from_secs(60);
/// How often a gateway still waiting for a roster (it holds none, or asked for a snapshot) says
/// so again: a roster ack sent while the centre was not yet subscribed (ingest starting, a
/// broker restart) is lost, as MQTT keeps nothing for a subscription that does not exist.
pub const HELLO_EVERY: Duration = Duration::from_secs(10);

/// What the uplink tells the actor.
#[derive(Debug)]
pub enum Inbound {
    /// The MQTT link is up (first time or again): acknowledge the roster, re-send the outbox.
    LinkUp,
    /// The link is down.
    LinkDown,
    /// A message on the roster topic.
    Roster(Bytes),
    /// A message on the command topic.
    Command(Bytes),
}

/// What the actor is asked.
#[derive(Debug)]
pub enum Msg {
    /// From the uplink.
    Link(Inbound),
    /// An enrolment was captured: store it in the outbox (durably), then send it; the reply
    /// says whether it is stored.
    Enrolled(Box<Enrolment>, oneshot::Sender<Result<(), String>>),
    /// Tell me the centre's verdict on this enrolment: (accepted, detail).
    Watch(Uuid, oneshot::Sender<(bool, String)>),
}

/// The uplink's end: messages to the actor, publishes from it.
#[derive(Debug)]
pub struct CredentialsLink {
    /// To the actor.
    pub inbound: mpsc::UnboundedSender<Msg>,
    /// (topic kind, payload) to publish with QoS 1.
    pub outbound: mpsc::Receiver<(Kind, Vec<u8>)>,
    /// Whether the roster comes from the centre (subscribe to the roster topic).
    pub roster_from_centre: bool,
}

/// The credentials actor (see the module docs of `credentials`).
#[derive(Debug)]
pub struct Actor {
    /// This device.
    pub device_id: String,
    /// The sealed roster.
    pub store: Arc<RosterStore>,
    /// The sealed enrolments.
    pub outbox: Arc<Outbox>,
    /// Whether the roster comes from the centre (else a roster file: no roster sync).
    pub from_centre: bool,
    /// The stored roster as opened at start, and whether to ask for a snapshot.
    pub initial: Option<(StoredRoster, bool)>,
    /// The accept path, whose roster is swapped when an update is applied.
    pub accept: Arc<Accept>,
    /// The wanted EF01 library, read by every EF01 reader task.
    pub desired: watch::Sender<Arc<Library>>,
    /// What the EF01 reader tasks did.
    pub reports: mpsc::UnboundedReceiver<LibraryReport>,
    /// Ids of the EF01 readers.
    pub modules: Vec<String>,
    /// Formats the readers take.
    pub accepts: Vec<String>,
    /// Whether an `iso-template` reader matches in software.
    pub iso: bool,
    /// The matcher threshold.
    pub threshold: f32,
    /// Runs enrolments the centre commands.
    pub enroller: Arc<Enroller>,
    /// Gauges.
    pub metrics: Arc<Metrics>,
    /// Publishes through the uplink.
    pub out: mpsc::Sender<(Kind, Vec<u8>)>,
    /// Messages in.
    pub rx: mpsc::UnboundedReceiver<Msg>,
}

pub(super) struct State {
    pub(super) held: StoredRoster,
    pub(super) want_snapshot: bool,
    pub(super) assembler: Assembler,
    pub(super) generation: u64,
    pub(super) latest: HashMap<String, LibraryReport>,
    pub(super) failures: Vec<RosterFailure>,
    pub(super) iso_loaded: u32,
    pub(super) online: bool,
    pub(super) ack_due: Option<Instant>,
    pub(super) waiters: HashMap<Uuid, Vec<oneshot::Sender<(bool, String)>>>,
}

impl Actor {
    /// Loads the stored roster and runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut st = State {
            held: StoredRoster::default(),
            want_snapshot: true,
            assembler: Assembler::default(),
            generation: 0,
            latest: HashMap::new(),
            failures: Vec::new(),
            iso_loaded: 0,
            online: false,
            ack_due: None,
            waiters: HashMap::new(),
        };
        if let Some((held, want_snapshot)) = self.initial.take() {
            st.held = held;
            st.want_snapshot = want_snapshot;
        }
        if self.from_centre {
            self.install(&mut st, Vec::new()).await;
        }
        self.gauges(&st);
        let mut resend = tokio::time::interval(RESEND_EVERY);
        resend.reset();
        let mut hello = tokio::time::interval(HELLO_EVERY);
        hello.reset();
        let far = || Instant::now() + Duration::from_secs(3600);
        loop {
            let due = st.ack_due.unwrap_or_else(far);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                msg = self.rx.recv() => match msg {
                    Some(msg) => self.on_msg(&mut st, msg).await,
                    None => return,
                },
                Some(report) = self.reports.recv() => self.on_report(&mut st, report).await,
                _ = tokio::time::sleep_until(due), if st.ack_due.is_some() => {
                    st.ack_due = None;
                    self.send_ack(&st).await;
                }
                _ = resend.tick() => if st.online { self.resend_outbox().await },
                _ = hello.tick() => if st.want_snapshot || st.held.version == 0 {
                    self.send_ack(&st).await
                },
            }
            self.gauges(&st);
        }
    }

    async fn on_msg(&mut self, st: &mut State, msg: Msg) {
        match msg {
            Msg::Link(Inbound::LinkUp) => {
                st.online = true;
                if self.from_centre {
                    self.send_ack(st).await;
                }
                self.resend_outbox().await;
            }
            Msg::Link(Inbound::LinkDown) => st.online = false,
            Msg::Link(Inbound::Roster(payload)) if self.from_centre => {
                self.on_roster(st, &payload).await
            }
            Msg::Link(Inbound::Roster(_)) => {
                tracing::warn!("roster update ignored: roster.source is \"file\"")
            }
            Msg::Link(Inbound::Command(payload)) => self.on_command(st, &payload).await,
            Msg::Enrolled(enrolment, reply) => self.on_enrolled(*enrolment, reply, st.online).await,
            Msg::Watch(id, tx) => st.waiters.entry(id).or_default().push(tx),
        }
    }

    async fn on_roster(&mut self, st: &mut State, payload: &[u8]) {
        let update = match RosterUpdate::decode(payload) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(bytes = payload.len(), error = %e, "bad roster update ignored");
                return;
            }
        };
        if update.device_id != self.device_id {
            tracing::warn!(device = %update.device_id, "roster update for another device ignored");
            return;
        }
        let Some(whole) = st.assembler.offer(update, payload.len()) else {
            return;
        };
        let (version, snapshot) = (whole.version, whole.base_version.is_none());
        match sync::decide(&st.held, whole) {
            Verdict::Stale => {
                tracing::info!(
                    version,
                    held = st.held.version,
                    "stale roster update: acknowledged again"
                );
                self.send_ack(st).await;
            }
            Verdict::WrongBase => {
                tracing::warn!(
                    version,
                    held = st.held.version,
                    "roster delta on another base: asking for a snapshot"
                );
                st.want_snapshot = true;
                self.send_ack(st).await;
            }
            Verdict::Apply(students) => {
                let mut next = StoredRoster {
                    version,
                    students,
                    capacity: self.capacity(st),
                    ..Default::default()
                };
                let capacity = next.capacity;
                let failures = sync::assign_slots(&st.held, &mut next, capacity);
                if !self.save(&next).await {
                    self.send_ack(st).await;
                    return;
                }
                tracing::info!(
                    version,
                    snapshot,
                    students = next.students.len(),
                    "roster applied"
                );
                st.held = next;
                if snapshot {
                    st.want_snapshot = false;
                }
                self.install(st, failures).await;
            }
        }
    }

    /// Makes the held roster the one identification uses and the modules hold; acknowledges
    /// once the modules have synced (or at once without modules).
    async fn install(&mut self, st: &mut State, failures: Vec<RosterFailure>) {
        let held = st.held.clone();
        let (threshold, iso) = (self.threshold, self.iso);
        let prepared =
            tokio::task::spawn_blocking(move || super::prepare(&held, threshold, iso)).await;
        let Ok(prepared) = prepared else {
            tracing::error!("preparing the roster failed");
            return;
        };
        self.accept.set_roster(prepared.roster);
        st.iso_loaded = prepared.iso_loaded;
        st.failures = failures;
        st.failures.extend(prepared.failures);
        st.generation += 1;
        let slots = st
            .held
            .module_slots()
            .into_iter()
            .map(|(slot, _, _, data)| (slot, Template::new(Zeroizing::new(data.to_vec()))))
            .collect();
        let library = Library {
            generation: st.generation,
            slots,
        };
        let loads = library.slots.len() as u32;
        self.desired.send_replace(Arc::new(library));
        if self.modules.is_empty() {
            if st.online && st.held.version > 0 {
                self.send_ack(st).await;
            }
        } else {
            // A 1536-byte template takes about 0.3 s at 57600 baud.
            st.ack_due =
                Some(Instant::now() + Duration::from_secs(10) + Duration::from_millis(500) * loads);
        }
    }

    async fn on_report(&mut self, st: &mut State, report: LibraryReport) {
        if report.generation == st.generation && st.held.capacity != Some(report.capacity) {
            st.held.capacity = Some(report.capacity);
        }
        st.latest.insert(report.reader.clone(), report);
        if let Some(capacity) = self.capacity(st)
            && st.held.slots.iter().any(|s| s.slot >= capacity)
        {
            // Slots were given before the module's size was known: give them again inside it.
            let mut next = st.held.clone();
            next.capacity = Some(capacity);
            let failures = sync::assign_slots(&st.held, &mut next, Some(capacity));
            if self.save(&next).await {
                tracing::info!(capacity, "module slots given again inside the library");
                st.held = next;
                self.install(st, failures).await;
            }
            return;
        }
        let synced = self.modules.iter().all(|m| {
            st.latest
                .get(m)
                .is_some_and(|r| r.generation == st.generation)
        });
        if synced {
            // Every module deleted what the roster no longer has: freed slots may be given again.
            st.held.freed.clear();
            if st.ack_due.take().is_some() || st.online {
                self.send_ack(st).await;
            }
        }
    }

    /// Stores `roster` (on a blocking thread); false, logged, when it could not be.
    async fn save(&self, roster: &StoredRoster) -> bool {
        let (store, to_save) = (self.store.clone(), roster.clone());
        match tokio::task::spawn_blocking(move || store.save(&to_save)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(error = %e, version = roster.version, "roster NOT stored; the held one stays");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "roster store task failed");
                false
            }
        }
    }

    fn capacity(&self, st: &State) -> Option<u16> {
        let reported = self
            .modules
            .iter()
            .filter_map(|m| st.latest.get(m).map(|r| r.capacity))
            .min();
        reported.or(st.held.capacity)
    }

    fn ack(&self, st: &State) -> RosterAck {
        let mut failures = st.failures.clone();
        let mut module_loaded: Option<u32> = None;
        for m in &self.modules {
            let Some(r) = st.latest.get(m).filter(|r| r.generation == st.generation) else {
                module_loaded = Some(0);
                continue;
            };
            module_loaded = Some(module_loaded.map_or(r.loaded, |l| l.min(r.loaded)));
            for (slot, reason) in &r.failures {
                if let Some(s) = st.held.slots.iter().find(|s| s.slot == *slot) {
                    let id = Uuid::from_bytes(s.id);
                    if !failures.iter().any(|f| f.id == id) {
                        failures.push(super::failure(id, format!("reader {}: {reason}", r.reader)));
                    }
                }
            }
        }
        failures.truncate(MAX_ROSTER_FAILURES);
        RosterAck {
            device_id: self.device_id.clone(),
            version: st.held.version,
            want_snapshot: st.want_snapshot || st.held.version == 0,
            templates_loaded: module_loaded.unwrap_or(0) + st.iso_loaded,
            capacity: self.capacity(st).map(u32::from),
            failures,
            accepts: self.accepts.clone(),
        }
    }

    pub(super) async fn send_ack(&self, st: &State) {
        if !self.from_centre || !st.online {
            return;
        }
        let ack = self.ack(st);
        tracing::info!(
            version = ack.version,
            want_snapshot = ack.want_snapshot,
            templates = ack.templates_loaded,
            failures = ack.failures.len(),
            "roster acknowledged"
        );
        self.publish(Kind::RosterAck, ack.encode()).await;
    }

    pub(super) async fn publish(&self, kind: Kind, payload: Vec<u8>) {
        let _ = self.out.send((kind, payload)).await;
    }

    fn gauges(&self, st: &State) {
        let m = &self.metrics;
        m.roster_version.set(st.held.version as i64);
        m.templates_loaded
            .set(i64::from(self.ack(st).templates_loaded));
        m.module_capacity
            .set(self.capacity(st).map_or(0, i64::from));
        m.enrolment_outbox.set(self.outbox.depth() as i64);
    }
}
