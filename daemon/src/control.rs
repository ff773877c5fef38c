//! The local control socket: a person or a test presents cards and fingers to simulated
//! readers and reads back what the gateway decided.
//!
//! Line protocol over a Unix socket (`<state_dir>/control.sock`, mode 0600):
//!
//! ```text
//! > card door-card 0462E3086C        present a card UID (hex) to reader door-card
//! < accepted 17 student=2024CS001    outcome, seq ('-' when not stored), subject
//! > finger door-finger 12            a finger matching library slot 12 ('none' = no match)
//! < unknown 18 unknown-finger
//! > status
//! < epoch=... last_seq=18 acked=12 depth=6 capacity=2000000
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rollcall_drivers::simulated::{Presentation, Presenter};
use rollcall_protocol::v1::Subject;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::capture::{Accept, Decision};
use crate::journal::actor::JournalHandle;

/// How long a presentation may take to become a decision.
const DECISION_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the control socket (replacing a stale one).
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("control socket {}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves control connections until `shutdown`.
pub async fn serve(
    listener: UnixListener,
    presenter: Presenter,
    accept: Arc<Accept>,
    journal: JournalHandle,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = listener.accept() => match s {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    continue;
                }
            },
        };
        let (p, a, j, s) = (
            presenter.clone(),
            accept.clone(),
            journal.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move { session(stream, p, a, j, s).await });
    }
}

async fn session(
    stream: UnixStream,
    presenter: Presenter,
    accept: Arc<Accept>,
    journal: JournalHandle,
    shutdown: CancellationToken,
) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    loop {
        let line = tokio::select! {
            _ = shutdown.cancelled() => return,
            l = lines.next_line() => match l {
                Ok(Some(l)) => l,
                _ => return,
            },
        };
        let reply = handle(&line, &presenter, &accept, &journal).await;
        if write
            .write_all(format!("{reply}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Parses one command line into what to present, or an error for the person.
pub fn parse(line: &str) -> Result<(String, Presentation), String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["card", reader, uid] => {
            let bytes = hex::decode(uid.replace(':', "")).map_err(|_| format!("error: {uid:?} is not a hex card UID"))?;
            if bytes.is_empty() || bytes.len() > 16 {
                return Err("error: a card UID has 1 to 16 bytes".into());
            }
            Ok((reader.to_string(), Presentation::Card(bytes)))
        }
        ["finger", reader, "none"] => Ok((reader.to_string(), Presentation::Finger(None))),
        ["finger", reader, slot] => {
            let slot = slot.parse().map_err(|_| format!("error: {slot:?} is not a slot number or 'none'"))?;
            Ok((reader.to_string(), Presentation::Finger(Some(slot))))
        }
        _ => Err("error: commands are `card <reader> <hex uid>`, `finger <reader> <slot|none>`, `status`".into()),
    }
}

async fn handle(
    line: &str,
    presenter: &Presenter,
    accept: &Accept,
    journal: &JournalHandle,
) -> String {
    if line.trim() == "status" {
        let s = *journal.stats().borrow();
        return format!(
            "epoch={} last_seq={} acked={} depth={} capacity={}",
            s.epoch, s.last_seq, s.acked, s.depth, s.capacity
        );
    }
    let (reader, what) = match parse(line) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let mut decisions = accept.subscribe();
    if !presenter.present(&reader, what) {
        return "error: no simulated reader is running".into();
    }
    let wait = async {
        loop {
            match decisions.recv().await {
                Ok(d) if d.reader == reader => return Some(d),
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    };
    match tokio::time::timeout(DECISION_TIMEOUT, wait).await {
        Ok(Some(d)) => format_decision(&d),
        _ => format!(
            "error: no decision from reader {reader:?} (unknown reader id, or it is not simulated?)"
        ),
    }
}

/// `<outcome> <seq|-> <subject>`
pub fn format_decision(d: &Decision) -> String {
    let seq = d.seq.map_or("-".to_owned(), |s| s.to_string());
    let subject = match &d.subject {
        Subject::Student(s) => format!("student={s}"),
        Subject::UnknownCard(h) => format!("unknown-card={}", hex::encode(&h[..6])),
        Subject::UnknownFinger => "unknown-finger".to_owned(),
    };
    format!("{:?} {seq} {subject}", d.outcome)
}

/// Sends one command to a running rollcalld and returns its reply.
pub async fn send(socket: &Path, command: &str) -> anyhow::Result<String> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}: is rollcalld running with simulated readers?",
            socket.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{command}\n").as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    Ok(lines.next_line().await?.unwrap_or_default())
}
