//! A fingerprint module's library as the daemon wants it, and enrolment at the module.
//!
//! The reader task owns the serial port, so the daemon never talks to the module itself: it
//! publishes the library it wants (slot -> template, with a generation) on a watch channel and
//! sends enrolment jobs on a queue; the EF01 session carries both out between identify polls
//! and reports back.
//!
//! Syncing ([`Library`]): at every session start (a restart of rollcalld, a module that was
//! unplugged) and whenever the wanted library changes, the session reads the module's index
//! table, deletes every occupied slot the library does not list (DeletChar) and loads every
//! listed slot the module lacks (DownChar + Store). A slot occupied on both sides is trusted:
//! templates cannot be compared without reading each one out, so the daemon never gives a
//! freed slot to another template until a sync has deleted it. Per-slot failures (a slot beyond
//! the library, a template the module refuses) are reported, not fatal; a dead line ends the
//! session as any other I/O failure does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use zeroize::Zeroizing;

use super::{Ctx, Stop};
use crate::ef01::{Capture, Ef01, Ef01Error, Merge};

/// A template as the library holds it: overwritten when the last handle drops.
pub type Template = Arc<Zeroizing<Vec<u8>>>;

/// The library the daemon wants in every EF01 module it has.
#[derive(Debug, Clone, Default)]
pub struct Library {
    /// Grows with every change; reports name the generation they synced. Generation 0 means
    /// the daemon has not said yet: the module is left as it is.
    pub generation: u64,
    /// Slot -> template.
    pub slots: BTreeMap<u16, Template>,
}

/// What one sync of one module did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryReport {
    /// The reader (its configured id).
    pub reader: String,
    /// The [`Library::generation`] synced.
    pub generation: u64,
    /// The module's library size.
    pub capacity: u16,
    /// Wanted slots the module holds after the sync.
    pub loaded: u32,
    /// Wanted slots it could not take, with the reason for a person.
    pub failures: Vec<(u16, String)>,
}

/// One step of an enrolment, to tell the person at the sensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrolStep {
    /// Place the finger (capture `n` of `of`; `n > 1`: the same finger again).
    Place {
        /// This capture, from 1.
        n: u8,
        /// Captures in all.
        of: u8,
    },
    /// Capture `n` of `of` was taken.
    Captured {
        /// This capture, from 1.
        n: u8,
        /// Captures in all.
        of: u8,
    },
    /// The image was unusable: lift and place again (why).
    Retry(String),
    /// Lift the finger.
    Lift,
}

/// A finished enrolment: the template is stored in `slot` and read back out.
#[derive(Debug)]
pub struct Enrolled {
    /// The slot it was stored in.
    pub slot: u16,
    /// The merged template (UpChar).
    pub template: Zeroizing<Vec<u8>>,
}

/// Why an enrolment did not finish. Each is for a person to act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrolError {
    /// The finger is already in the module's library.
    #[error("this finger is already enrolled (module slot {slot})")]
    AlreadyEnrolled {
        /// The slot holding it.
        slot: u16,
    },
    /// The captures were not of the same finger.
    #[error("the captures were not of the same finger: start again with one finger")]
    Mismatch,
    /// Nobody placed or lifted a finger in time.
    #[error("no finger placed (or lifted) within {0:?}: start again")]
    Timeout(Duration),
    /// No free slot.
    #[error("the module's library is full ({0} slots)")]
    Full(u16),
    /// The module or the line failed.
    #[error("{0}")]
    Failed(String),
}

/// An enrolment for the reader task to run.
#[derive(Debug)]
pub struct EnrolJob {
    /// Placements to merge (2 on every model; the R503 takes up to 6).
    pub captures: u8,
    /// How long to wait for each placement and lift.
    pub timeout: Duration,
    /// Steps as they happen (a full or closed channel loses steps, not the enrolment).
    pub progress: mpsc::Sender<EnrolStep>,
    /// The result.
    pub reply: oneshot::Sender<Result<Enrolled, EnrolError>>,
}

/// The reader task's end of the daemon's link: the wanted library, enrolment jobs, reports.
#[derive(Debug)]
pub struct LibraryPort {
    desired: watch::Receiver<Arc<Library>>,
    jobs: mpsc::Receiver<EnrolJob>,
    reports: mpsc::UnboundedSender<LibraryReport>,
}

impl LibraryPort {
    /// A port syncing to `desired`, taking `jobs`, reporting to `reports`.
    pub fn new(
        desired: watch::Receiver<Arc<Library>>,
        jobs: mpsc::Receiver<EnrolJob>,
        reports: mpsc::UnboundedSender<LibraryReport>,
    ) -> Self {
        Self {
            desired,
            jobs,
            reports,
        }
    }

    /// The next thing to do: sync (the wanted library changed) or enrol. Waits forever once
    /// the daemon's ends are gone.
    pub(crate) async fn next_work(&mut self) -> LibraryWork {
        let desired = &mut self.desired;
        let jobs = &mut self.jobs;
        tokio::select! {
            Ok(()) = desired.changed() => LibraryWork::Sync,
            Some(job) = jobs.recv() => LibraryWork::Enrol(job),
            else => std::future::pending().await,
        }
    }
}

/// What the daemon asked of a module's library.
pub(crate) enum LibraryWork {
    /// The wanted library changed.
    Sync,
    /// Enrol a finger.
    Enrol(EnrolJob),
}

/// Whether an error is the line's (end the session) or the module's answer about one slot.
fn is_line_error(e: &Ef01Error) -> bool {
    matches!(
        e,
        Ef01Error::Io(_) | Ef01Error::Closed | Ef01Error::Timeout { .. }
    )
}

/// Makes the module hold the wanted library (see the module docs) and reports it.
pub(crate) async fn sync<T: AsyncRead + AsyncWrite + Unpin>(
    dev: &mut Ef01<T>,
    port: &mut LibraryPort,
    ctx: &Ctx,
    label: &str,
) -> Result<(), Stop> {
    let want = port.desired.borrow_and_update().clone();
    if want.generation == 0 {
        // The daemon has not said what it wants yet: leave the module as it is.
        return Ok(());
    }
    let down = |e: Ef01Error| Stop::Down(format!("{label}: library sync: {e}"));
    let capacity = dev.capacity().await.map_err(down)?;
    let occupied = dev.read_index_table().await.map_err(down)?;
    let mut failures = Vec::new();
    let mut deleted = 0u32;
    for &slot in occupied.iter().filter(|s| !want.slots.contains_key(s)) {
        match dev.delete(slot, 1).await {
            Ok(()) => deleted += 1,
            Err(e) if is_line_error(&e) => return Err(down(e)),
            Err(e) => {
                tracing::error!(reader = %ctx.id(), slot, error = %e, "could not delete a slot the roster no longer has")
            }
        }
    }
    let mut written = 0u32;
    // Two rounds: a template the module did not take the first time (a frame spoilt on the
    // line) is written once more, and the index table read again shows what really landed.
    let mut occupied = occupied;
    for round in 0..2 {
        failures.clear();
        for (&slot, template) in &want.slots {
            if slot >= capacity {
                failures.push((
                    slot,
                    format!("module full: slot {slot} is beyond its library of {capacity}"),
                ));
                continue;
            }
            if occupied.contains(&slot) {
                continue;
            }
            match dev.load_template(slot, template).await {
                Ok(()) => written += 1,
                Err(e) if is_line_error(&e) => return Err(down(e)),
                Err(e) => failures.push((slot, format!("the module refused the template: {e}"))),
            }
        }
        occupied = dev.read_index_table().await.map_err(down)?;
        let missing = want
            .slots
            .keys()
            .filter(|s| **s < capacity && !occupied.contains(s))
            .count();
        if missing == 0 {
            break;
        }
        if round == 1 {
            for &slot in want.slots.keys() {
                if slot < capacity
                    && !occupied.contains(&slot)
                    && !failures.iter().any(|(s, _)| *s == slot)
                {
                    failures.push((slot, "written but not in the module's library".to_owned()));
                }
            }
        } else {
            tracing::warn!(reader = %ctx.id(), missing, "templates did not land in the module: writing them again");
        }
    }
    let loaded = want.slots.keys().filter(|s| occupied.contains(s)).count() as u32;
    tracing::info!(reader = %ctx.id(), generation = want.generation, capacity, loaded, written, deleted, failed = failures.len(), "fingerprint library synced");
    let _ = port.reports.send(LibraryReport {
        reader: ctx.id().to_owned(),
        generation: want.generation,
        capacity,
        loaded,
        failures,
    });
    Ok(())
}

/// Runs one enrolment, answering the job. A line failure ends the session after answering.
pub(crate) async fn enrol<T: AsyncRead + AsyncWrite + Unpin>(
    dev: &mut Ef01<T>,
    job: EnrolJob,
    port: &LibraryPort,
    label: &str,
) -> Result<(), Stop> {
    let EnrolJob {
        captures,
        timeout,
        progress,
        reply,
    } = job;
    if reply.is_closed() {
        // Whoever asked gave up while the job waited (the reader was down): nobody to guide.
        return Ok(());
    }
    let wanted: Vec<u16> = port.desired.borrow().slots.keys().copied().collect();
    let result = enrol_steps(dev, captures.clamp(2, 6), timeout, &progress, &wanted).await;
    let line_failure = match &result {
        Err(Ok(e)) if is_line_error(e) => Some(e.to_string()),
        _ => None,
    };
    let answer = result.map_err(|e| match e {
        Ok(e) => EnrolError::Failed(format!("{label}: {e}")),
        Err(e) => e,
    });
    let _ = reply.send(answer);
    match line_failure {
        Some(e) => Err(Stop::Down(format!("{label}: enrolment: {e}"))),
        None => Ok(()),
    }
}

type StepError = Result<Ef01Error, EnrolError>;

async fn enrol_steps<T: AsyncRead + AsyncWrite + Unpin>(
    dev: &mut Ef01<T>,
    captures: u8,
    timeout: Duration,
    progress: &mpsc::Sender<EnrolStep>,
    wanted: &[u16],
) -> Result<Enrolled, StepError> {
    let tell = |step: EnrolStep| {
        let _ = progress.try_send(step);
    };
    let poll = Duration::from_millis(100);
    for n in 1..=captures {
        tell(EnrolStep::Place { n, of: captures });
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match dev.capture(n).await.map_err(Ok)? {
                Capture::Captured => break,
                Capture::NoFinger => {}
                Capture::BadImage(code) => tell(EnrolStep::Retry(format!(
                    "unusable image ({code}): lift the finger and place it again, flat"
                ))),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Err(EnrolError::Timeout(timeout)));
            }
            tokio::time::sleep(poll).await;
        }
        tell(EnrolStep::Captured { n, of: captures });
        if n < captures {
            tell(EnrolStep::Lift);
            let deadline = tokio::time::Instant::now() + timeout;
            while dev.finger_present().await.map_err(Ok)? {
                if tokio::time::Instant::now() >= deadline {
                    return Err(Err(EnrolError::Timeout(timeout)));
                }
                tokio::time::sleep(poll).await;
            }
        }
    }
    if dev.register_model().await.map_err(Ok)? == Merge::Mismatch {
        return Err(Err(EnrolError::Mismatch));
    }
    let capacity = dev.capacity().await.map_err(Ok)?;
    if let Some((slot, _)) = dev.search(1, 0, capacity).await.map_err(Ok)? {
        return Err(Err(EnrolError::AlreadyEnrolled { slot }));
    }
    let occupied = dev.read_index_table().await.map_err(Ok)?;
    let slot = (0..capacity)
        .rev()
        .find(|s| !occupied.contains(s) && !wanted.contains(s))
        .ok_or(Err(EnrolError::Full(capacity)))?;
    dev.store(1, slot).await.map_err(Ok)?;
    let template = Zeroizing::new(dev.upload_char(1).await.map_err(Ok)?);
    Ok(Enrolled { slot, template })
}
