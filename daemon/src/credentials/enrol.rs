//! Enrolment at a gateway: a card by a tap in enrolment mode, a finger by captures at an EF01
//! module; the result becomes an [`Enrolment`] in the outbox (durable) and goes to the centre.
//!
//! Started from the control socket (`enrol <reader> <student>`) or by the centre's `Enrol`
//! command. Progress is sent as lines for the person guiding the student.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rollcall_drivers::{EnrolError, EnrolJob, EnrolStep, ReaderConfig, ReaderKind};
use rollcall_protocol::v1::credentials::{FORMAT_CARD, FORMAT_EF01};
use rollcall_protocol::v1::{CredentialKind, Enrolment, Secret, valid_subject};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::actor::Msg;
use crate::capture::Accept;

/// How long a student has for each placement, lift or tap.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// How an enrolment reaches a reader.
#[derive(Debug)]
enum Reader {
    /// A card reader: the next tap is taken.
    Card,
    /// An EF01 module: jobs to its reader task.
    Module {
        jobs: mpsc::Sender<EnrolJob>,
        simulated: bool,
    },
    /// A reader that cannot enrol here (the kind, for the message).
    Other(&'static str),
}

/// Runs enrolments at this gateway's readers.
#[derive(Debug)]
pub struct Enroller {
    device_id: String,
    readers: HashMap<String, Reader>,
    accept: Arc<Accept>,
    actor: mpsc::UnboundedSender<Msg>,
}

impl Enroller {
    /// An enroller over `readers`; `jobs` holds the enrolment queue of each EF01 reader whose
    /// library the gateway keeps.
    pub fn new(
        device_id: &str,
        readers: &[ReaderConfig],
        mut jobs: HashMap<String, mpsc::Sender<EnrolJob>>,
        accept: Arc<Accept>,
        actor: mpsc::UnboundedSender<Msg>,
    ) -> Self {
        let readers = readers
            .iter()
            .map(|r| {
                let how = match (r.kind.credential(), jobs.remove(&r.id)) {
                    (rollcall_drivers::CredentialKind::Card, _) => Reader::Card,
                    (_, Some(jobs)) => Reader::Module {
                        jobs,
                        simulated: crate::config::is_simulated(r),
                    },
                    (_, None) if matches!(r.kind, ReaderKind::IsoTemplate) => {
                        Reader::Other("an iso-template sensor (enrol at an EF01 module or a card reader)")
                    }
                    (_, None) => Reader::Other(
                        "a fingerprint module whose library the gateway does not keep (roster.source = \"file\")",
                    ),
                };
                (r.id.clone(), how)
            })
            .collect();
        Self {
            device_id: device_id.to_owned(),
            readers,
            accept,
            actor,
        }
    }

    /// Enrols `student` at `reader` (checking `kind` when given), stores the enrolment in the
    /// outbox and sends it. Returns its id once it is stored; the error is for the person.
    pub async fn enrol(
        &self,
        reader: &str,
        student: &str,
        kind: Option<CredentialKind>,
        operator: &str,
        progress: mpsc::Sender<String>,
    ) -> Result<Uuid, String> {
        if !valid_subject(student) {
            return Err(format!(
                "student {student:?} must be 1 to 64 bytes of printable text (the CampsHub360 \
                 student id or roll number)"
            ));
        }
        let how = self.readers.get(reader).ok_or_else(|| {
            let mut known: Vec<_> = self.readers.keys().map(String::as_str).collect();
            known.sort_unstable();
            format!("no reader {reader:?}: readers are {}", known.join(", "))
        })?;
        let tell = |line: String| {
            let progress = progress.clone();
            async move {
                let _ = progress.send(line).await;
            }
        };
        let (credential, format, sensor, data, quality) = match how {
            Reader::Card => {
                if kind == Some(CredentialKind::Fingerprint) {
                    return Err(format!("reader {reader:?} reads cards, not fingers"));
                }
                let tap = self.accept.arm_enrolment(reader);
                tell(format!(
                    "tap the card on {reader} (within {}s; the tap is not a punch)",
                    STEP_TIMEOUT.as_secs()
                ))
                .await;
                let uid = match tokio::time::timeout(STEP_TIMEOUT, tap).await {
                    Ok(Ok(uid)) => uid,
                    _ => {
                        self.accept.disarm_enrolment(reader);
                        return Err(format!(
                            "no card tapped on {reader} within {}s: start again",
                            STEP_TIMEOUT.as_secs()
                        ));
                    }
                };
                tell("card read".to_owned()).await;
                (CredentialKind::Card, FORMAT_CARD, String::new(), uid, None)
            }
            Reader::Module { jobs, simulated } => {
                if kind == Some(CredentialKind::Card) {
                    return Err(format!("reader {reader:?} reads fingers, not cards"));
                }
                let (step_tx, mut steps) = mpsc::channel(16);
                let (reply, result) = oneshot::channel();
                let job = EnrolJob {
                    captures: 2,
                    timeout: STEP_TIMEOUT,
                    progress: step_tx,
                    reply,
                };
                jobs.try_send(job).map_err(|_| {
                    format!(
                        "reader {reader:?} is busy with another enrolment: try again in a moment"
                    )
                })?;
                let relay = async {
                    while let Some(step) = steps.recv().await {
                        tell(describe(&step)).await;
                    }
                };
                // Each capture and lift has its own timeout in the reader; this bounds a job
                // that never starts (the reader is down).
                let whole = STEP_TIMEOUT * 5;
                let Ok((_, result)) =
                    tokio::time::timeout(whole, async { tokio::join!(relay, result) }).await
                else {
                    return Err(format!(
                        "reader {reader:?} did not finish the enrolment within {}s (is it \
                         connected? `status` and the log say): start again",
                        whole.as_secs()
                    ));
                };
                let enrolled = match result {
                    Ok(Ok(e)) => e,
                    Ok(Err(EnrolError::AlreadyEnrolled { slot })) => {
                        let roster = self.accept.roster();
                        return Err(match roster.finger_owner(slot) {
                            Some(owner) if owner == student => format!(
                                "this finger is already enrolled for {owner}: nothing to do"
                            ),
                            Some(owner) => format!(
                                "refused: this finger is already enrolled for student {owner}"
                            ),
                            None => format!(
                                "refused: this finger is already in the module (slot {slot}), \
                                 enrolled for nobody on this room's roster"
                            ),
                        });
                    }
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => {
                        return Err(format!(
                            "reader {reader:?} stopped during the enrolment (is it connected?): \
                             start again"
                        ));
                    }
                };
                let sensor = match (simulated, enrolled.template.len()) {
                    (true, _) => "simulated-ef01",
                    (false, 512) => "r30x",
                    (false, 1536) => "r503",
                    _ => "ef01",
                };
                tell(format!(
                    "template built ({} bytes)",
                    enrolled.template.len()
                ))
                .await;
                (
                    CredentialKind::Fingerprint,
                    FORMAT_EF01,
                    sensor.to_owned(),
                    enrolled.template.to_vec(),
                    None,
                )
            }
            Reader::Other(what) => {
                return Err(format!("reader {reader:?} is {what}: it cannot enrol"));
            }
        };
        let enrolment = Enrolment {
            device_id: self.device_id.clone(),
            enrolment_id: uuid::Builder::from_random_bytes(rand::random()).into_uuid(),
            student: student.to_owned(),
            kind: credential,
            format: format.to_owned(),
            sensor,
            data: Secret::new(data),
            quality,
            captured_at_ms: crate::clock::now().0,
            reader_id: reader.to_owned(),
            operator: operator.chars().take(64).collect(),
        };
        enrolment
            .validate()
            .map_err(|e| format!("the capture is not a valid enrolment ({e}): start again"))?;
        let id = enrolment.enrolment_id;
        let (stored_tx, stored) = oneshot::channel();
        self.actor
            .send(Msg::Enrolled(Box::new(enrolment), stored_tx))
            .map_err(|_| "rollcalld is stopping: enrol again after it restarts".to_owned())?;
        stored
            .await
            .map_err(|_| "rollcalld is stopping: enrol again after it restarts".to_owned())??;
        Ok(id)
    }

    /// Resolves with the centre's verdict on enrolment `id`: (accepted, detail).
    pub fn watch(&self, id: Uuid) -> oneshot::Receiver<(bool, String)> {
        let (tx, rx) = oneshot::channel();
        let _ = self.actor.send(Msg::Watch(id, tx));
        rx
    }
}

/// A step as a person reads it.
pub fn describe(step: &EnrolStep) -> String {
    match step {
        EnrolStep::Place { n: 1, of } => format!("place finger (capture 1 of {of})"),
        EnrolStep::Place { n, of } => format!("place the same finger again (capture {n} of {of})"),
        EnrolStep::Captured { n, of } => format!("captured {n} of {of}"),
        EnrolStep::Retry(why) => why.clone(),
        EnrolStep::Lift => "lift finger".to_owned(),
    }
}
