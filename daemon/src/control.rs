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
//! > finger door-template /data/101_4.iso   to an iso-template reader: the finger whose sensor
//! < accepted 19 student=2024CS001          produces this ISO/IEC 19794-2 record (a path that
//!                                          rollcalld reads; absolute, or has a '/' or '.')
//! > status
//! < epoch=... last_seq=18 acked=12 depth=6 capacity=2000000 roster_version=7
//! > status --json                   the same and the link, readers, clock, modules, outbox
//! < {"epoch":...,"depth":6,...,"link_up":true,"readers":{...},...}   (one line, `rollcall status`)
//! > rotate-key                      a new device data key, every file it protects re-sealed
//! < rotated fingerprint=3f0c9a2e51d4b7a6 templates=3 roster=1 outbox=0 unreadable=0
//! > enrol door-finger 2024CS001       enrol a student at a reader (any reader kind that can:
//! < progress: place finger (capture 1 of 2)     cards by a tap, EF01 fingers by captures);
//! < progress: captured 1 of 2                   one line per step, then the enrolment, then
//! < progress: lift finger                       the centre's verdict (or that it is pending:
//! < progress: place the same finger again (capture 2 of 2)   the enrolment stays in the
//! < progress: captured 2 of 2                   outbox and is re-sent until the centre answers)
//! < enrolled 5f0c... student=2024CS001 reader=door-finger: stored, sent to the centre
//! < result: accepted stored
//! ```
//!
//! The socket is there with every configuration (enrolment needs it on hardware too);
//! presenting cards and fingers works only with simulated readers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rollcall_drivers::simulated::{Presentation, Presenter};
use rollcall_protocol::v1::Subject;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::capture::{Accept, Decision};
use crate::credentials::enrol::Enroller;
use crate::journal::actor::JournalHandle;

mod status;
pub use status::{ReaderReport, StatusReport};

/// How long `enrol` waits for the centre's verdict before answering that it is pending.
const VERDICT_WAIT: Duration = Duration::from_secs(30);

/// What the control socket serves.
#[derive(Debug, Clone)]
pub struct Control {
    /// Feeds simulated readers.
    pub presenter: Presenter,
    /// Decisions, roster version, card enrolment mode.
    pub accept: Arc<Accept>,
    /// Journal counters.
    pub journal: JournalHandle,
    /// Enrolments.
    pub enroller: Arc<Enroller>,
    /// Link, module and outbox gauges (`status --json`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The device data key (`rotate-key`).
    pub keyring: Arc<crate::keys::Keyring>,
    /// What the data key protects (`rotate-key`).
    pub protected: crate::keys::Protected,
}

/// How long a presentation may take to become a decision.
const DECISION_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the control socket. Only a stale socket (one nobody answers on) is replaced: a live one
/// means another rollcalld, and anything else at the path (a file, a directory) belongs to
/// someone and is never deleted.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    let label = path.display();
    let elsewhere = "stop it, or set control.socket to another path";
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("control socket {label}: {e}: check the directory's permissions"),
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => anyhow::bail!(
                    "control socket {label}: another rollcalld is running and answers on it: {elsewhere}"
                ),
                // Nobody listens: a socket left behind by a rollcalld that was killed.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(|e| {
                        anyhow::anyhow!("control socket {label}: removing the stale socket: {e}")
                    })?;
                }
                Err(e) => anyhow::bail!(
                    "control socket {label}: a socket is there and cannot be checked ({e}); \
                     remove it if no rollcalld is running, or set control.socket to another path"
                ),
            }
        }
        Ok(meta) => {
            let what = if meta.is_dir() {
                "a directory"
            } else if meta.file_type().is_symlink() {
                "a symbolic link"
            } else if meta.is_file() {
                "a regular file"
            } else {
                "something that is not a socket"
            };
            anyhow::bail!(
                "control socket {label}: {what} is in the way; rollcalld replaces only a stale \
                 socket and leaves it as it is: move it away, or set control.socket to another path"
            );
        }
    }
    let listener =
        UnixListener::bind(path).map_err(|e| anyhow::anyhow!("control socket {label}: {e}"))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves control connections until `shutdown`.
pub async fn serve(listener: UnixListener, control: Control, shutdown: CancellationToken) {
    let last_ack = status::LastAck::watch(control.journal.stats(), shutdown.clone());
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
        let (c, a, s) = (control.clone(), last_ack.clone(), shutdown.clone());
        tokio::spawn(async move { session(stream, c, a, s).await });
    }
}

/// Longest command line the control socket takes, newline included.
pub const MAX_LINE: usize = 4096;

async fn session(
    stream: UnixStream,
    control: Control,
    last_ack: status::LastAck,
    shutdown: CancellationToken,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut buf = Vec::new();
        // At most MAX_LINE bytes per command: a client cannot make rollcalld hold a line of
        // any length (found by the daemon_control fuzz target's report).
        let mut limited = (&mut reader).take(MAX_LINE as u64 + 1);
        let read = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = limited.read_until(b'\n', &mut buf) => r,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) if buf.len() > MAX_LINE => {
                let _ = write
                    .write_all(format!("error: a command is at most {MAX_LINE} bytes\n").as_bytes())
                    .await;
                let _ = write.shutdown().await;
                // Read on (and drop) for a moment before hanging up: closing with unread input
                // resets the connection and the client would lose the error.
                let mut sink = [0u8; 8192];
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Ok(n) = reader.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
                return;
            }
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf)
            .trim_end_matches(['\n', '\r'])
            .to_string();
        if let Some(args) = line.trim().strip_prefix("enrol ") {
            if enrol(args, &control, &mut write).await.is_err() {
                return;
            }
            continue;
        }
        let reply = handle(&line, &control, &last_ack).await;
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
        ["finger", reader, file] if file.contains(['/', '.']) => {
            let record = crate::templates::read_bounded(Path::new(file), crate::templates::MAX_RECORD)
                .map_err(|e| format!("error: {file}: {e}"))?;
            Ok((reader.to_string(), Presentation::Template(record)))
        }
        ["finger", reader, slot] => {
            let slot = slot.parse().map_err(|_| format!("error: {slot:?} is not a slot number, 'none' or a template file"))?;
            Ok((reader.to_string(), Presentation::Finger(Some(slot))))
        }
        _ => Err("error: commands are `card <reader> <hex uid>`, `finger <reader> <slot|none|file.iso>`, `enrol <reader> <student>`, `status [--json]`, `rotate-key`".into()),
    }
}

async fn handle(line: &str, control: &Control, last_ack: &status::LastAck) -> String {
    let (presenter, accept) = (&control.presenter, &control.accept);
    if line.trim() == "status --json" {
        return status::report(control, last_ack).await.to_json();
    }
    if line.trim() == "rotate-key" {
        return rotate_key(control).await;
    }
    if line.trim() == "status" {
        let s = *control.journal.stats().borrow();
        return format!(
            "epoch={} last_seq={} acked={} depth={} capacity={} roster_version={}",
            s.epoch,
            s.last_seq,
            s.acked,
            s.depth,
            s.capacity,
            accept.roster().version.unwrap_or(0)
        );
    }
    let (reader, what) = match parse(line) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let mut decisions = accept.subscribe();
    let mut enrolment_taps = accept.subscribe_enrolment_taps();
    if !presenter.present(&reader, what) {
        return "error: no simulated reader is running".into();
    }
    let decision = async {
        loop {
            match decisions.recv().await {
                Ok(d) if d.reader == reader => return Some(d),
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    };
    let enrolment = async {
        loop {
            match enrolment_taps.recv().await {
                Ok(r) if r == reader => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => std::future::pending::<()>().await,
            }
        }
    };
    let wait = async {
        tokio::select! {
            d = decision => d.map(Ok),
            () = enrolment => Some(Err(())),
        }
    };
    match tokio::time::timeout(DECISION_TIMEOUT, wait).await {
        Ok(Some(Err(()))) => {
            "enrolment: the card was taken for the enrolment waiting at this reader (not a punch)"
                .into()
        }
        Ok(Some(Ok(d))) => format_decision(&d),
        _ => format!(
            "error: no decision from reader {reader:?} (unknown reader id, or it is not simulated?)"
        ),
    }
}

/// `rotate-key`: a new device data key, every file it protects re-sealed (on a blocking thread:
/// capture goes on meanwhile); the reply names what was re-sealed and the new key's fingerprint.
async fn rotate_key(control: &Control) -> String {
    let (keyring, protected) = (control.keyring.clone(), control.protected.clone());
    match tokio::task::spawn_blocking(move || keyring.rotate(&protected)).await {
        Ok(Ok(done)) => done.to_line(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "key rotation failed");
            format!(
                "error: the key rotation did not finish ({e}); files stay readable (with the old or \
                 the new key), and the next rotation or start of rollcalld finishes it: fix the \
                 cause and run rollcall keys rotate again"
            )
        }
        Err(e) => format!("error: key rotation task: {e}"),
    }
}

/// `enrol <reader> <student>`: progress lines, the enrolment, then the centre's verdict.
async fn enrol(
    args: &str,
    control: &Control,
    write: &mut tokio::net::unix::OwnedWriteHalf,
) -> std::io::Result<()> {
    let words: Vec<&str> = args.split_whitespace().collect();
    let [reader, student] = words[..] else {
        return write
            .write_all(
                b"error: usage: enrol <reader> <student> (the student's id or roll number)\n",
            )
            .await;
    };
    let (tx, mut steps) = tokio::sync::mpsc::channel(16);
    let operator = format!("control:uid{}", crate::sys::effective_uid());
    let enrolling = control.enroller.enrol(reader, student, None, &operator, tx);
    tokio::pin!(enrolling);
    let result = loop {
        tokio::select! {
            Some(step) = steps.recv() => {
                write.write_all(format!("progress: {step}\n").as_bytes()).await?;
            }
            r = &mut enrolling => break r,
        }
    };
    while let Ok(step) = steps.try_recv() {
        write
            .write_all(format!("progress: {step}\n").as_bytes())
            .await?;
    }
    let id = match result {
        Ok(id) => id,
        Err(e) => return write.write_all(format!("error: {e}\n").as_bytes()).await,
    };
    let verdict = control.enroller.watch(id);
    write
        .write_all(
            format!(
                "enrolled {id} student={student} reader={reader}: stored, sent to the centre\n"
            )
            .as_bytes(),
        )
        .await?;
    let line = match tokio::time::timeout(VERDICT_WAIT, verdict).await {
        Ok(Ok((true, detail))) => format!("result: accepted {detail}"),
        Ok(Ok((false, detail))) => format!("result: refused {detail}"),
        _ => format!(
            "result: pending: no verdict from the centre within {}s; the enrolment stays in the \
             outbox and is sent again until the centre answers",
            VERDICT_WAIT.as_secs()
        ),
    };
    write.write_all(format!("{line}\n").as_bytes()).await
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

/// Sends one command to a running rollcalld and passes every reply line to `each` until the
/// connection closes or a final line (`result: ...`, `error: ...`) arrives; returns the last line.
pub async fn stream(
    socket: &Path,
    command: &str,
    mut each: impl FnMut(&str),
) -> anyhow::Result<String> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}: is rollcalld running, and are you the user it runs as?",
            socket.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{command}\n").as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    let mut last = String::new();
    while let Some(line) = lines.next_line().await? {
        each(&line);
        let done = line.starts_with("result:") || line.starts_with("error");
        last = line;
        if done {
            break;
        }
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_or_directory_at_the_socket_path_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("control.sock");
        std::fs::write(&file, b"someone's data").expect("write");
        let e = bind(&file).expect_err("a regular file").to_string();
        assert!(
            e.contains("a regular file is in the way") && e.contains("control.socket"),
            "{e}"
        );
        assert_eq!(
            std::fs::read(&file).expect("still there"),
            b"someone's data"
        );

        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).expect("mkdir");
        let e = bind(&sub).expect_err("a directory").to_string();
        assert!(e.contains("a directory is in the way"), "{e}");
        assert!(sub.is_dir());

        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        let e = bind(&link).expect_err("a symlink").to_string();
        assert!(e.contains("a symbolic link is in the way"), "{e}");
        assert_eq!(
            std::fs::read(&file).expect("target intact"),
            b"someone's data"
        );
    }

    #[tokio::test]
    async fn a_live_socket_means_another_rollcalld() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.sock");
        let first = bind(&path).expect("first");
        let e = bind(&path).expect_err("second").to_string();
        assert!(e.contains("another rollcalld is running"), "{e}");
        // The first one still serves.
        drop(std::os::unix::net::UnixStream::connect(&path).expect("first still listening"));
        drop(first);
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.sock");
        // A socket whose listener is gone, as after kill -9.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        assert!(path.exists());
        let listener = bind(&path).expect("stale socket replaced");
        let client = tokio::net::UnixStream::connect(&path);
        let (accepted, connected) = tokio::join!(listener.accept(), client);
        accepted.expect("accept");
        connected.expect("connect");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
