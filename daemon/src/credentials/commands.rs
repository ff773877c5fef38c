//! The actor's answers to the centre's commands and to enrolments captured here.

use rollcall_protocol::topic::Kind;
use rollcall_protocol::v1::{Action, Command, Enrolment};
use tokio::sync::{mpsc, oneshot};

use super::actor::{Actor, State};

impl Actor {
    /// Stores a captured enrolment in the outbox (durably), answers whether it is stored, then
    /// publishes it when online (offline, the next link up sends the outbox).
    pub(super) async fn on_enrolled(
        &self,
        enrolment: Enrolment,
        reply: oneshot::Sender<Result<(), String>>,
        online: bool,
    ) {
        let stored = {
            let (outbox, key, e) = (self.outbox.clone(), self.store.clone(), enrolment.clone());
            tokio::task::spawn_blocking(move || outbox.put(&key.keys(), &e))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
        };
        match stored {
            Ok(()) => {
                tracing::info!(enrolment = %enrolment.enrolment_id, student = %enrolment.student, reader = %enrolment.reader_id, "enrolment stored in the outbox");
                let _ = reply.send(Ok(()));
                if online {
                    self.publish(Kind::Enrol, enrolment.encode()).await;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "enrolment NOT stored");
                let _ = reply.send(Err(format!(
                    "the enrolment could not be stored ({e}): free space in the state \
                     directory and enrol again"
                )));
            }
        }
    }

    pub(super) async fn on_command(&mut self, st: &mut State, payload: &[u8]) {
        let command = match Command::decode(payload) {
            Ok(c) if c.device_id == self.device_id => c,
            Ok(c) => {
                tracing::warn!(device = %c.device_id, "command for another device ignored");
                return;
            }
            Err(e) => {
                tracing::warn!(bytes = payload.len(), error = %e, "bad command ignored");
                return;
            }
        };
        match command.action {
            Action::Resync => {
                tracing::info!(command = %command.command_id, "the centre asks for a resync");
                st.want_snapshot = true;
                self.send_ack(st).await;
            }
            Action::Enrol {
                student,
                reader_id,
                kind,
            } => {
                tracing::info!(command = %command.command_id, %student, reader = %reader_id, "the centre asks for an enrolment");
                let enroller = self.enroller.clone();
                let operator = format!("centre:{}", command.command_id.simple());
                tokio::spawn(async move {
                    let (tx, mut rx) = mpsc::channel(16);
                    let at = reader_id.clone();
                    let logger = tokio::spawn(async move {
                        while let Some(step) = rx.recv().await {
                            tracing::info!(reader = %at, step = %step, "enrolment");
                        }
                    });
                    if let Err(e) = enroller
                        .enrol(&reader_id, &student, Some(kind), &operator, tx)
                        .await
                    {
                        tracing::error!(%student, error = %e, "enrolment commanded by the centre failed");
                    }
                    let _ = logger.await;
                });
            }
            Action::EnrolmentResult {
                enrolment_id,
                accepted,
                detail,
            } => {
                let (outbox, store) = (self.outbox.clone(), self.store.clone());
                // Under the keys' lock: a rotation re-sealing the file would bring it back.
                let removed = tokio::task::spawn_blocking(move || {
                    let _keys = store.keys();
                    outbox.remove(&enrolment_id)
                })
                .await;
                match removed {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "removing an answered enrolment failed; it will be sent again and answered again")
                    }
                    Err(e) => tracing::error!(error = %e, "outbox task failed"),
                }
                if accepted {
                    tracing::info!(enrolment = %enrolment_id, %detail, "the centre accepted the enrolment");
                } else {
                    tracing::warn!(enrolment = %enrolment_id, %detail, "the centre refused the enrolment");
                }
                self.metrics.enrolment_result(accepted);
                for w in st.waiters.remove(&enrolment_id).unwrap_or_default() {
                    let _ = w.send((accepted, detail.clone()));
                }
            }
        }
    }

    pub(super) async fn resend_outbox(&self) {
        let (outbox, store) = (self.outbox.clone(), self.store.clone());
        let all = tokio::task::spawn_blocking(move || outbox.all(&store.keys()))
            .await
            .unwrap_or_default();
        for e in all {
            tracing::info!(enrolment = %e.enrolment_id, "enrolment sent (again) until the centre answers");
            self.publish(Kind::Enrol, e.encode()).await;
        }
    }
}
