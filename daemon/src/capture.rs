//! The accept path: reader event -> identify -> duplicate check -> journal (fsync) -> signal.
//!
//! Fingerprint templates from `iso-template` readers are identified here, in software, against
//! the roster's prepared templates (see `templates.rs`), on a blocking thread.
//!
//! A punch is signalled "accepted" only after the journal has committed it. Each reader has its
//! own task; events that queue up while a commit is running are taken as one burst and go into
//! one journal transaction (and the journal thread merges bursts of different readers too).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rollcall_drivers::{ReaderEvent, ReaderHealth, Signal};
use rollcall_protocol::v1::{CredentialKind, Punch, Subject, flags};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use uuid::Uuid;

use crate::clock;
use crate::journal::actor::{JournalHandle, StoreError};
use crate::metrics::{Metrics, Outcome, ReaderLabels};
use crate::roster::Roster;

/// Most events taken into one burst.
const MAX_BURST: usize = 256;

/// A reader as the accept path knows it.
#[derive(Debug, Clone)]
pub struct ReaderInfo {
    /// Its id in the config.
    pub id: String,
    /// Its family, as sent in punches.
    pub kind: String,
    /// Whether it is simulated (punches get the SIMULATED flag).
    pub simulated: bool,
}

/// What became of one presented credential (for the control socket, logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The reader it was presented to.
    pub reader: String,
    /// Accepted, unknown, duplicate, or not stored (and why): what the indicators showed.
    pub outcome: Outcome,
    /// Its seq, when stored.
    pub seq: Option<u64>,
    /// Who it was, as far as the device could tell.
    pub subject: Subject,
}

/// The last health each reader reported, by reader id (readers that never reported are absent).
pub type ReaderHealthMap = HashMap<String, ReaderHealth>;

/// The way to every indicator: cheap to clone, so the accept path and the uplink (online,
/// offline, refused) each hold one without holding each other.
#[derive(Debug, Clone, Default)]
pub struct Signals(Arc<[mpsc::Sender<Signal>]>);

impl Signals {
    /// Signals to these indicators (one sender per indicator task).
    pub fn new(senders: Vec<mpsc::Sender<Signal>>) -> Self {
        Self(senders.into())
    }

    /// Sends `signal` to every indicator without ever waiting on one: a slow or stuck
    /// indicator misses a blink, the accept path never stalls on it.
    pub fn send(&self, signal: Signal) {
        for s in self.0.iter() {
            let _ = s.try_send(signal);
        }
    }
}

/// Shared state of the accept path.
#[derive(Debug)]
pub struct Accept {
    journal: JournalHandle,
    /// Swapped whole when the centre's roster changes; a burst uses the one it started with.
    roster: RwLock<Arc<Roster>>,
    /// Card readers in enrolment mode: their next tap goes here, not into the journal.
    enrolling: Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>,
    /// Readers whose tap was taken for an enrolment (for the control socket's answer).
    enrolment_taps: broadcast::Sender<String>,
    hash_key: [u8; 32],
    window: Duration,
    recent: Mutex<HashMap<Subject, Instant>>,
    signals: Signals,
    metrics: Arc<Metrics>,
    decisions: broadcast::Sender<Decision>,
    health: watch::Sender<ReaderHealthMap>,
}

impl Accept {
    /// The accept path over `journal`, answering through `signals` (one sender per indicator).
    pub fn new(
        journal: JournalHandle,
        roster: Roster,
        hash_key: [u8; 32],
        window: Duration,
        signals: Vec<mpsc::Sender<Signal>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (decisions, _) = broadcast::channel(4096);
        Self {
            journal,
            roster: RwLock::new(Arc::new(roster)),
            enrolling: Mutex::new(HashMap::new()),
            enrolment_taps: broadcast::channel(64).0,
            hash_key,
            window,
            recent: Mutex::new(HashMap::new()),
            signals: Signals::new(signals),
            metrics,
            decisions,
            health: watch::Sender::new(HashMap::new()),
        }
    }

    /// The roster identification uses now.
    pub fn roster(&self) -> Arc<Roster> {
        self.roster
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the roster; bursts already running finish with the old one.
    pub fn set_roster(&self, roster: Roster) {
        *self.roster.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(roster);
    }

    /// Puts card reader `reader` in enrolment mode: its next tap answers the receiver (and is
    /// not a punch). A second call replaces the first.
    pub fn arm_enrolment(&self, reader: &str) -> oneshot::Receiver<Vec<u8>> {
        let (tx, rx) = oneshot::channel();
        self.lock_enrolling().insert(reader.to_owned(), tx);
        rx
    }

    /// Ends enrolment mode at `reader`.
    pub fn disarm_enrolment(&self, reader: &str) {
        self.lock_enrolling().remove(reader);
    }

    /// Reader ids whose tap was taken for an enrolment, from now on.
    pub fn subscribe_enrolment_taps(&self) -> broadcast::Receiver<String> {
        self.enrolment_taps.subscribe()
    }

    /// Whether `reader` is in enrolment mode.
    pub fn is_enrolling(&self, reader: &str) -> bool {
        self.lock_enrolling().contains_key(reader)
    }

    fn lock_enrolling(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Vec<u8>>>> {
        self.enrolling.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every decision from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Decision> {
        self.decisions.subscribe()
    }

    /// Sends a signal to every indicator without ever waiting on one.
    pub fn signal(&self, signal: Signal) {
        self.signals.send(signal);
    }

    /// A handle on the same indicators, for parts that signal without capturing (the uplink).
    pub fn signals(&self) -> Signals {
        self.signals.clone()
    }

    /// Reader health as it changes, for parts that report it without capturing (the uplink's
    /// status).
    pub fn reader_health(&self) -> watch::Receiver<ReaderHealthMap> {
        self.health.subscribe()
    }

    /// Serves one reader's events until its channel closes.
    pub async fn run_reader(&self, reader: ReaderInfo, mut events: mpsc::Receiver<ReaderEvent>) {
        while let Some(first) = events.recv().await {
            let mut burst = vec![first];
            while burst.len() < MAX_BURST {
                match events.try_recv() {
                    Ok(e) => burst.push(e),
                    Err(_) => break,
                }
            }
            self.handle_burst(&reader, burst).await;
        }
    }

    /// Handles a burst of events from one reader, in order.
    pub async fn handle_burst(&self, reader: &ReaderInfo, events: Vec<ReaderEvent>) {
        let now = Instant::now();
        let roster = self.roster();
        let mut to_store: Vec<(Subject, Punch)> = Vec::new();
        let mut in_burst: HashSet<Subject> = HashSet::new();
        for event in events {
            let (credential, subject, score) = match event {
                ReaderEvent::Card { uid } => {
                    let enrolling = self.lock_enrolling().remove(&reader.id);
                    if let Some(tx) = enrolling {
                        tracing::info!(reader = %reader.id, "card taken for an enrolment, not punched");
                        let _ = tx.send(uid);
                        let _ = self.enrolment_taps.send(reader.id.clone());
                        self.signal(Signal::Accepted);
                        continue;
                    }
                    (
                        CredentialKind::Card,
                        roster.card(&uid, &self.hash_key),
                        None,
                    )
                }
                ReaderEvent::Fingerprint { slot, score } => (
                    CredentialKind::Fingerprint,
                    roster.finger(slot),
                    Some(score),
                ),
                ReaderEvent::FingerprintNoMatch => {
                    (CredentialKind::Fingerprint, Subject::UnknownFinger, None)
                }
                ReaderEvent::FingerprintTemplate { template } => {
                    match self.identify(reader, &roster, template).await {
                        Some((subject, score)) => (CredentialKind::Fingerprint, subject, score),
                        None => continue,
                    }
                }
                ReaderEvent::Health(health) => {
                    self.record_health(reader, &health);
                    continue;
                }
            };
            if self.is_duplicate(&subject, now) || in_burst.contains(&subject) {
                self.decide(reader, Outcome::duplicate, None, subject);
                continue;
            }
            if subject != Subject::UnknownFinger {
                in_burst.insert(subject.clone());
            }
            let (captured_at_ms, clock) = clock::now();
            let mut punch_flags = if reader.simulated {
                flags::SIMULATED
            } else {
                0
            };
            if !clock.ntp_synced {
                punch_flags |= flags::CLOCK_UNSYNCED;
            }
            let punch = Punch {
                seq: 0,
                event_id: Uuid::now_v7(),
                captured_at_ms,
                clock,
                reader_id: reader.id.clone(),
                reader_kind: reader.kind.clone(),
                credential,
                subject: subject.clone(),
                score,
                flags: punch_flags,
            };
            to_store.push((subject, punch));
        }
        if to_store.is_empty() {
            return;
        }
        let (subjects, punches): (Vec<Subject>, Vec<Punch>) = to_store.into_iter().unzip();
        match self.journal.append(punches).await {
            Ok(seqs) => {
                for (subject, seq) in subjects.into_iter().zip(seqs) {
                    match seq {
                        Some(seq) => {
                            let outcome = if matches!(subject, Subject::Student(_)) {
                                Outcome::accepted
                            } else {
                                Outcome::unknown
                            };
                            if self.window > Duration::ZERO && subject != Subject::UnknownFinger {
                                self.lock_recent().insert(subject.clone(), now);
                            }
                            tracing::info!(reader = %reader.id, seq, outcome = ?outcome, "punch journaled");
                            self.decide(reader, outcome, Some(seq), subject);
                        }
                        None => {
                            tracing::error!(reader = %reader.id, "journal full: punch refused; the uplink must drain it (check the broker link)");
                            self.decide(reader, Outcome::storage_full, None, subject);
                        }
                    }
                }
            }
            Err(e) => {
                let outcome = match e {
                    StoreError::DiskFull(_) => Outcome::storage_full,
                    StoreError::Failed(_) => Outcome::failed,
                };
                tracing::error!(reader = %reader.id, error = %e, "punch NOT stored");
                for subject in subjects {
                    self.decide(reader, outcome, None, subject);
                }
            }
        }
    }

    /// Matches a sensor's template against the roster's (unknown with no score when the roster
    /// has none). `None` for a record that cannot be read: nothing is stored, the person places
    /// the finger again.
    async fn identify(
        &self,
        reader: &ReaderInfo,
        roster: &Roster,
        template: Vec<u8>,
    ) -> Option<(Subject, Option<u16>)> {
        let template = zeroize::Zeroizing::new(template);
        let templates = roster.templates().cloned();
        let searched = tokio::task::spawn_blocking(move || match &templates {
            Some(t) => t
                .identify(&template)
                .map(|found| (found.subject.clone(), Some(found.score_u16()))),
            None => crate::templates::prepare(&template).map(|_| (Subject::UnknownFinger, None)),
        })
        .await;
        match searched {
            Ok(Ok((subject, score))) => {
                tracing::debug!(reader = %reader.id, ?score, known = matches!(subject, Subject::Student(_)), "template identified");
                Some((subject, score))
            }
            Ok(Err(e)) => {
                tracing::warn!(reader = %reader.id, error = %e, "unreadable template from the sensor: not stored (is it set to output ISO/IEC 19794-2?)");
                None
            }
            Err(e) => {
                tracing::error!(reader = %reader.id, error = %e, "template search failed: not stored");
                None
            }
        }
    }

    fn lock_recent(&self) -> std::sync::MutexGuard<'_, HashMap<Subject, Instant>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_duplicate(&self, subject: &Subject, now: Instant) -> bool {
        if self.window == Duration::ZERO || *subject == Subject::UnknownFinger {
            return false;
        }
        let mut recent = self.lock_recent();
        if recent.len() > 10_000 {
            recent.retain(|_, at| now.duration_since(*at) < self.window);
        }
        recent
            .get(subject)
            .is_some_and(|at| now.duration_since(*at) < self.window)
    }

    fn decide(&self, reader: &ReaderInfo, outcome: Outcome, seq: Option<u64>, subject: Subject) {
        self.metrics.punch(outcome);
        self.signal(match outcome {
            Outcome::accepted => Signal::Accepted,
            Outcome::unknown => Signal::Unknown,
            Outcome::duplicate => Signal::Duplicate,
            Outcome::storage_full | Outcome::failed => Signal::StorageFull,
        });
        let _ = self.decisions.send(Decision {
            reader: reader.id.clone(),
            outcome,
            seq,
            subject,
        });
    }

    /// Last reported health per reader id (readers that never reported are absent).
    pub fn reader_health_snapshot(&self) -> ReaderHealthMap {
        self.health.borrow().clone()
    }

    fn record_health(&self, reader: &ReaderInfo, health: &ReaderHealth) {
        // send_modify, not send: it updates the value even while nobody is subscribed.
        self.health.send_modify(|map| {
            map.insert(reader.id.clone(), health.clone());
        });
        let up = self.metrics.reader_up.get_or_create(&ReaderLabels {
            reader: reader.id.clone(),
        });
        match health {
            ReaderHealth::Ok => {
                up.set(1);
                tracing::info!(reader = %reader.id, "reader healthy");
            }
            ReaderHealth::Down(why) => {
                up.set(0);
                tracing::error!(reader = %reader.id, problem = %why, "reader down");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Journal;
    use crate::journal::powercut::PowerCutBackend;

    fn accept(window: Duration, capacity: u64) -> (Accept, mpsc::Receiver<Signal>, JournalHandle) {
        let (backend, _) = PowerCutBackend::new();
        let journal =
            JournalHandle::spawn(Journal::open_backend(backend, "mem", capacity).expect("journal"));
        let (tx, rx) = mpsc::channel(64);
        let roster = Roster::from_pairs(
            [
                (vec![1, 2, 3, 4], "S1".to_owned()),
                (vec![5, 6, 7, 8], "S2".to_owned()),
            ],
            [(3, "S1".to_owned())],
        );
        let a = Accept::new(
            journal.clone(),
            roster,
            [9; 32],
            window,
            vec![tx],
            Arc::new(Metrics::default()),
        );
        (a, rx, journal)
    }

    fn reader() -> ReaderInfo {
        ReaderInfo {
            id: "door".into(),
            kind: "simulated-card".into(),
            simulated: true,
        }
    }

    fn card(uid: &[u8]) -> ReaderEvent {
        ReaderEvent::Card { uid: uid.to_vec() }
    }

    /// The next `n` signals. They come at once; a capture that never signals fails the test
    /// after 20 s instead of hanging it.
    async fn signals(rx: &mut mpsc::Receiver<Signal>, n: usize) -> Vec<Signal> {
        let mut out = Vec::new();
        for _ in 0..n {
            let next = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no signal within 20 s after {out:?}"));
            out.push(next.expect("signal"));
        }
        out
    }

    #[tokio::test]
    async fn the_same_student_within_the_window_is_a_duplicate_and_not_stored() {
        let (a, mut rx, journal) = accept(Duration::from_millis(300), 100);
        let mut decisions = a.subscribe();
        a.handle_burst(&reader(), vec![card(&[1, 2, 3, 4])]).await;
        // By fingerprint too: same student, other credential.
        a.handle_burst(
            &reader(),
            vec![
                ReaderEvent::Fingerprint { slot: 3, score: 90 },
                card(&[5, 6, 7, 8]),
            ],
        )
        .await;
        assert_eq!(
            signals(&mut rx, 3).await,
            [Signal::Accepted, Signal::Duplicate, Signal::Accepted]
        );
        assert_eq!(
            journal.stats().borrow().last_seq,
            2,
            "the duplicate was not stored"
        );
        let first = decisions.recv().await.expect("decision");
        assert_eq!(
            (first.outcome, first.seq, first.subject),
            (Outcome::accepted, Some(1), Subject::Student("S1".into()))
        );

        tokio::time::sleep(Duration::from_millis(350)).await;
        a.handle_burst(&reader(), vec![card(&[1, 2, 3, 4])]).await;
        assert_eq!(
            signals(&mut rx, 1).await,
            [Signal::Accepted],
            "accepted again after the window"
        );
    }

    #[tokio::test]
    async fn a_burst_is_stored_in_order_and_a_repeat_inside_it_is_a_duplicate() {
        let (a, mut rx, journal) = accept(Duration::from_secs(60), 100);
        let burst = vec![
            card(&[1, 2, 3, 4]),
            card(&[9, 9]),
            card(&[1, 2, 3, 4]),
            ReaderEvent::FingerprintNoMatch,
            ReaderEvent::FingerprintNoMatch,
        ];
        a.handle_burst(&reader(), burst).await;
        let got = signals(&mut rx, 5).await;
        assert_eq!(got.iter().filter(|s| **s == Signal::Duplicate).count(), 1);
        assert_eq!(
            got.iter().filter(|s| **s == Signal::Unknown).count(),
            3,
            "unknown fingers are never merged: {got:?}"
        );
        let stored = journal.read(1, 10).await.expect("read");
        assert_eq!(stored.len(), 4);
        let first: Punch = minicbor::decode(&stored[0]).expect("punch");
        assert_eq!(first.subject, Subject::Student("S1".into()));
        assert_ne!(first.flags & flags::SIMULATED, 0);
        let second: Punch = minicbor::decode(&stored[1]).expect("punch");
        assert!(
            matches!(second.subject, Subject::UnknownCard(_)),
            "unknown card leaves only as a hash"
        );
    }

    #[tokio::test]
    async fn a_full_journal_answers_storage_full_never_accepted() {
        let (a, mut rx, _journal) = accept(Duration::ZERO, 1);
        a.handle_burst(&reader(), vec![card(&[1, 2, 3, 4]), card(&[5, 6, 7, 8])])
            .await;
        assert_eq!(
            signals(&mut rx, 2).await,
            [Signal::Accepted, Signal::StorageFull]
        );
        assert_eq!(
            a.metrics
                .punches
                .get_or_create(&crate::metrics::OutcomeLabels {
                    outcome: Outcome::storage_full
                })
                .get(),
            1
        );
    }

    #[tokio::test]
    async fn a_template_without_roster_templates_is_an_unknown_finger_and_garbage_is_not_stored() {
        let (a, mut rx, journal) = accept(Duration::ZERO, 10);
        // An ISO/IEC 19794-2 record with one view and no minutiae: 24 + 4 + 2 bytes.
        let mut record = b"FMR\0 20\0\0\0\0\x1e\0\0\x01\x2c\x01\x90\0\xc5\0\xc5\x01\0".to_vec();
        record.extend_from_slice(&[0, 0, 60, 0, 0, 0]);
        assert_eq!(record.len(), 30);
        let template = |t: &[u8]| ReaderEvent::FingerprintTemplate {
            template: t.to_vec(),
        };
        a.handle_burst(
            &reader(),
            vec![template(b"not a record"), template(&record), template(&[])],
        )
        .await;
        assert_eq!(signals(&mut rx, 1).await, [Signal::Unknown]);
        assert_eq!(
            journal.stats().borrow().last_seq,
            1,
            "garbage is not stored"
        );
        let stored = journal.read(1, 10).await.expect("read");
        let punch: Punch = minicbor::decode(&stored[0]).expect("punch");
        assert_eq!(
            (punch.subject, punch.credential, punch.score),
            (Subject::UnknownFinger, CredentialKind::Fingerprint, None)
        );
    }

    #[tokio::test]
    async fn reader_health_is_reported_not_stored() {
        let (a, _rx, journal) = accept(Duration::ZERO, 10);
        a.handle_burst(
            &reader(),
            vec![ReaderEvent::Health(ReaderHealth::Down("unplugged".into()))],
        )
        .await;
        assert_eq!(journal.stats().borrow().last_seq, 0);
        assert_eq!(
            a.reader_health_snapshot().get("door"),
            Some(&ReaderHealth::Down("unplugged".into()))
        );
    }
}
