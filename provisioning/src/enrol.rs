//! `rollcall enrol`: the guided enrolment of a student's card or finger at a reader of this
//! gateway, through rollcalld's control socket (`enrol <reader> <student>`): each step as the
//! person at the reader needs it, then the centre's verdict.

use std::path::PathBuf;
use std::process::ExitCode;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::status::{DEFAULT_CONFIG, load_config, not_answering};

/// Exit status: the centre accepted the enrolment.
const ACCEPTED: u8 = 0;
/// Exit status: refused by the centre, or the enrolment failed.
const FAILED: u8 = 1;
/// Exit status: stored and sent, no verdict yet (it is re-sent until the centre answers).
const PENDING: u8 = 3;

const EXAMPLES: &str = "\
Examples:
  rollcall enrol door-card 2024CS001       then tap the student's card on door-card
  rollcall enrol door-finger 2024CS001     then follow the steps (place, lift, place again)
  rollcall enrol door-finger 2024CS001 -c /etc/rollcall/rollcalld.toml

A fingerprint needs the student's consent recorded at the centre first; a card needs none.
Exit status: 0 accepted by the centre; 1 refused by the centre, or the enrolment failed (the
message says why); 3 stored and sent but no verdict yet (it is re-sent until the centre answers:
`rollcall status` shows the outbox).";

/// `rollcall enrol`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The reader's id in rollcalld's configuration (`[[reader]] id`), e.g. door-finger.
    pub reader: String,
    /// The student's id or roll number, as the centre knows it.
    pub student: String,
    /// rollcalld's configuration (for the control socket).
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

/// What a line from the daemon means for the person at the terminal.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// Something to do at the reader now.
    Do(String),
    /// A step done.
    Done(String),
    /// Anything else the reader said (a capture to retry, with why).
    Note(String),
    /// Stored on the gateway and sent to the centre.
    Stored(String),
    /// The centre's verdict or the wait's end.
    Accepted(String),
    Refused(String),
    Pending(String),
    /// The daemon could not enrol.
    Error(String),
}

fn classify(line: &str) -> Line {
    if let Some(step) = line.strip_prefix("progress: ") {
        let lower = step.to_ascii_lowercase();
        return if ["place", "tap", "lift", "present", "put"]
            .iter()
            .any(|w| lower.starts_with(w))
        {
            Line::Do(step.to_owned())
        } else if lower.starts_with("captured") {
            Line::Done(step.to_owned())
        } else {
            Line::Note(step.to_owned())
        };
    }
    if let Some(rest) = line.strip_prefix("result: ") {
        return if let Some(d) = rest.strip_prefix("accepted") {
            Line::Accepted(d.trim().to_owned())
        } else if let Some(d) = rest.strip_prefix("refused") {
            Line::Refused(d.trim().to_owned())
        } else {
            Line::Pending(
                rest.strip_prefix("pending:")
                    .unwrap_or(rest)
                    .trim()
                    .to_owned(),
            )
        };
    }
    if let Some(e) = line.strip_prefix("error:") {
        return Line::Error(e.trim().to_owned());
    }
    if line.starts_with("enrolled ") {
        return Line::Stored(line.to_owned());
    }
    Line::Note(line.to_owned())
}

/// The text shown for `line`, and the exit status when it ends the enrolment.
fn render(line: &Line) -> (String, Option<u8>) {
    match line {
        Line::Do(s) => (format!("  -> {}", capitalise(s)), None),
        Line::Done(s) => (format!("     ok: {s}"), None),
        Line::Note(s) => (format!("     {s}"), None),
        Line::Stored(s) => (
            format!(
                "Stored on this gateway and sent to the centre ({}); waiting for the centre's \
                 verdict...",
                s.split(':').next().unwrap_or(s)
            ),
            None,
        ),
        Line::Accepted(d) => (
            format!("ACCEPTED by the centre{}", detail(d)),
            Some(ACCEPTED),
        ),
        Line::Refused(d) => (
            format!(
                "REFUSED by the centre{}\n  fix: settle it at the centre (consent, the student's \
                 record, a credential already in use), then enrol again",
                detail(d)
            ),
            Some(FAILED),
        ),
        Line::Pending(d) => (format!("PENDING: {d}"), Some(PENDING)),
        Line::Error(e) => (format!("FAILED: {e}"), Some(FAILED)),
    }
}

fn detail(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(": {d}")
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Runs `rollcall enrol`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let Some(reader) = config.readers.iter().find(|r| r.id == args.reader) else {
        let ids: Vec<_> = config.readers.iter().map(|r| r.id.as_str()).collect();
        anyhow::bail!(
            "no reader {:?} in {}: its readers are {}",
            args.reader,
            args.config.display(),
            ids.join(", ")
        );
    };
    if args.student.is_empty() || args.student.chars().any(char::is_whitespace) {
        anyhow::bail!(
            "{:?} is not a student id: give the id or roll number, without spaces",
            args.student
        );
    }
    let socket = config.control_socket();
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(|e| anyhow::anyhow!("{}", not_answering(&socket, &e)))?;
    let (read, mut write) = stream.into_split();
    write
        .write_all(format!("enrol {} {}\n", args.reader, args.student).as_bytes())
        .await?;
    println!(
        "Enrolling {} at {} ({}). Follow the steps at the reader; Ctrl-C cancels.",
        args.student,
        reader.id,
        reader.kind.as_str()
    );
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let (text, end) = render(&classify(&line));
        println!("{text}");
        if let Some(code) = end {
            return Ok(ExitCode::from(code));
        }
    }
    anyhow::bail!(
        "rollcalld closed the connection before the enrolment ended (restarted or stopped?): \
         see `journalctl -u rollcalld -n 50`; `rollcall status` shows whether the enrolment \
         waits in the outbox"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemons_lines_become_steps_and_a_verdict() {
        let cases = [
            (
                "progress: place finger (capture 1 of 2)",
                "  -> Place finger (capture 1 of 2)",
                None,
            ),
            (
                "progress: captured 1 of 2",
                "     ok: captured 1 of 2",
                None,
            ),
            ("progress: lift finger", "  -> Lift finger", None),
            (
                "progress: image too poor, place it again",
                "     image too poor, place it again",
                None,
            ),
            (
                "progress: tap the card on door-card",
                "  -> Tap the card on door-card",
                None,
            ),
            (
                "enrolled 0190 student=S1 reader=door-card: stored, sent to the centre",
                "Stored on this gateway and sent to the centre (enrolled 0190 student=S1 \
                 reader=door-card); waiting for the centre's verdict...",
                None,
            ),
            (
                "result: accepted stored",
                "ACCEPTED by the centre: stored",
                Some(0),
            ),
            (
                "result: pending: no verdict within 30s",
                "PENDING: no verdict within 30s",
                Some(3),
            ),
            (
                "error: reader door-x is not configured",
                "FAILED: reader door-x is not configured",
                Some(1),
            ),
        ];
        for (line, text, code) in cases {
            assert_eq!(render(&classify(line)), (text.to_owned(), code), "{line}");
        }
        let (text, code) = render(&classify("result: refused no consent recorded"));
        assert_eq!(code, Some(1));
        assert!(
            text.starts_with("REFUSED by the centre: no consent recorded\n  fix:"),
            "{text}"
        );
    }
}
