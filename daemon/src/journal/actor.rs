//! The journal on its own thread, for async callers, with group commit.
//!
//! redb calls block (an fsync takes a millisecond or more), so the [`Journal`] lives on a
//! dedicated OS thread that serves requests in arrival order. Appends that arrive while a
//! commit is in progress are merged into the next transaction: one fsync for the whole burst,
//! each caller still told its own seqs only after that fsync.

use std::thread;

use rollcall_protocol::v1::Punch;
use tokio::sync::{mpsc, oneshot, watch};

use super::{Journal, JournalError};

/// Most appends merged into one transaction.
const MAX_GROUP: usize = 4096;

/// A failure reported to an async caller (cheap to clone: a group shares one).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The file system is full.
    #[error("{0}")]
    DiskFull(String),
    /// Anything else; the text names the file and the cause.
    #[error("{0}")]
    Failed(String),
}

impl From<&JournalError> for StoreError {
    fn from(e: &JournalError) -> Self {
        match e {
            JournalError::DiskFull(_) => StoreError::DiskFull(e.to_string()),
            _ => StoreError::Failed(e.to_string()),
        }
    }
}

/// A snapshot of the journal's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JournalStats {
    /// The journal's epoch.
    pub epoch: u64,
    /// Highest seq assigned.
    pub last_seq: u64,
    /// Highest seq acked and deleted.
    pub acked: u64,
    /// Unacked punches held.
    pub depth: u64,
    /// Most unacked punches held.
    pub capacity: u64,
}

enum Request {
    Append(
        Vec<Punch>,
        oneshot::Sender<Result<Vec<Option<u64>>, StoreError>>,
    ),
    Read(u64, u64, oneshot::Sender<Result<Vec<Vec<u8>>, StoreError>>),
    Ack(u64, oneshot::Sender<Result<u64, StoreError>>),
    Oldest(oneshot::Sender<Result<Option<i64>, StoreError>>),
}

/// Async access to the journal thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct JournalHandle {
    tx: mpsc::Sender<RequestBox>,
    stats: watch::Receiver<JournalStats>,
}

struct RequestBox(Request);

impl std::fmt::Debug for RequestBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("journal request")
    }
}

/// The journal thread has stopped (it only stops when every handle is dropped, or on a bug).
fn gone() -> StoreError {
    StoreError::Failed("the journal thread has stopped".into())
}

impl JournalHandle {
    /// Moves `journal` onto its own thread. The thread ends when the last handle is dropped,
    /// after finishing the requests already queued.
    pub fn spawn(journal: Journal) -> Self {
        let (tx, rx) = mpsc::channel(8192);
        let (stats_tx, stats) = watch::channel(stats_of(&journal));
        thread::Builder::new()
            .name("journal".into())
            .spawn(move || serve(journal, rx, stats_tx))
            .expect("spawning the journal thread");
        Self { tx, stats }
    }

    /// Appends punches; each gets `Some(seq)` once durable, or `None` if the journal is full.
    pub async fn append(&self, punches: Vec<Punch>) -> Result<Vec<Option<u64>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(RequestBox(Request::Append(punches, reply)))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Encoded punches `first..=last`.
    pub async fn read(&self, first: u64, last: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(RequestBox(Request::Read(first, last, reply)))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Deletes everything up to `up_to` (the centre committed it).
    pub async fn ack(&self, up_to: u64) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(RequestBox(Request::Ack(up_to, reply)))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Capture time of the oldest unacked punch.
    pub async fn oldest_captured_at_ms(&self) -> Result<Option<i64>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(RequestBox(Request::Oldest(reply)))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Counters, updated after every commit.
    pub fn stats(&self) -> watch::Receiver<JournalStats> {
        self.stats.clone()
    }
}

fn stats_of(j: &Journal) -> JournalStats {
    JournalStats {
        epoch: j.epoch(),
        last_seq: j.last_seq(),
        acked: j.acked(),
        depth: j.depth(),
        capacity: j.capacity(),
    }
}

fn serve(
    mut journal: Journal,
    mut rx: mpsc::Receiver<RequestBox>,
    stats: watch::Sender<JournalStats>,
) {
    let mut pending: Option<Request> = None;
    loop {
        let Some(request) = pending.take().or_else(|| rx.blocking_recv().map(|b| b.0)) else {
            return;
        };
        match request {
            Request::Append(punches, reply) => {
                let mut group = vec![(punches, reply)];
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(RequestBox(Request::Append(p, r))) => group.push((p, r)),
                        Ok(RequestBox(other)) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                append_group(&mut journal, group, &stats);
            }
            Request::Read(first, last, reply) => {
                // After a failed write whose reopen failed too, reads need the database back.
                let _ = journal.recover();
                let _ = reply.send(journal.read(first, last).map_err(|e| (&e).into()));
            }
            Request::Ack(up_to, reply) => {
                let _ = reply.send(journal.ack(up_to).map_err(|e| (&e).into()));
            }
            Request::Oldest(reply) => {
                let _ = journal.recover();
                let _ = reply.send(journal.oldest_captured_at_ms().map_err(|e| (&e).into()));
            }
        }
        stats.send_replace(stats_of(&journal));
    }
}

type Reply = oneshot::Sender<Result<Vec<Option<u64>>, StoreError>>;

fn append_group(
    journal: &mut Journal,
    group: Vec<(Vec<Punch>, Reply)>,
    stats: &watch::Sender<JournalStats>,
) {
    let sizes: Vec<usize> = group.iter().map(|(p, _)| p.len()).collect();
    let (mut all, replies): (Vec<Vec<Punch>>, Vec<Reply>) = group.into_iter().unzip();
    let mut flat: Vec<Punch> = all.iter_mut().flat_map(std::mem::take).collect();
    let result = journal.append(&mut flat);
    // Counters first, so whoever hears "stored" from a reply sees them already.
    stats.send_replace(stats_of(journal));
    match result {
        Ok(accepted) => {
            let mut seqs = flat
                .iter()
                .enumerate()
                .map(|(i, p)| (i < accepted).then_some(p.seq));
            for (size, reply) in sizes.into_iter().zip(replies) {
                let _ = reply.send(Ok(seqs.by_ref().take(size).collect()));
            }
        }
        Err(e) => {
            tracing::error!(journal = journal.label(), error = %e, "journal append failed");
            let e = StoreError::from(&e);
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
