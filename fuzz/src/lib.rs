//! Rollcall's fuzz targets: every decoder of bytes from outside a process, each with its
//! properties, as a plain `fn(&[u8])` that panics when a property breaks.
//!
//! The same functions run two ways:
//! * `tests/replay.rs`, part of the ordinary `cargo nextest run --workspace`, replays every file
//!   of `corpus/<target>/` through its target on stable Rust with no fuzzer installed, so a crash
//!   once found stays fixed and a property change that breaks an old input fails the build;
//! * `libfuzzer/`, a crate of its own outside the workspace, wraps each target for cargo-fuzz
//!   (libFuzzer, coverage-guided), which grows the corpus and finds new crashes:
//!   `scripts/fuzz.sh [target] [seconds]`.
//!
//! The properties, wherever they apply: no panic on any input; allocation in proportion to the
//! input, never to a length or count the input declares ([`alloc`]); a decoder with an encoder
//! gives back what it decoded (`decode(encode(decode(b))) == decode(b)`, or the exact bytes for
//! the readers' frames); a stream decoder finds the same frames however the reads split.

pub mod alloc;
pub mod daemon;
pub mod drivers;
pub mod ingest;
pub mod matcher;
pub mod protocol;

/// A target: panics when one of its properties breaks on this input.
pub type Target = fn(&[u8]);

/// Every target by name; the name is also its corpus directory and its libFuzzer binary.
pub const TARGETS: &[(&str, Target)] = &[
    ("protocol_punch_batch", protocol::punch_batch),
    ("protocol_ack", protocol::ack),
    ("protocol_status", protocol::status),
    ("protocol_topic", protocol::topic),
    ("protocol_roster", protocol::roster),
    ("protocol_roster_ack", protocol::roster_ack),
    ("protocol_enrolment", protocol::enrolment),
    ("protocol_command", protocol::command),
    ("journal_punch", protocol::journal_punch),
    ("ingest_classify", ingest::classify),
    ("ingest_adms", ingest::adms),
    ("ef01", drivers::ef01),
    ("pn532", drivers::pn532),
    ("rdm6300", drivers::rdm6300),
    ("iso_template", drivers::iso_template),
    ("wiegand", drivers::wiegand),
    ("matcher_record", matcher::record),
    ("daemon_templates", daemon::templates),
    ("daemon_roster", daemon::roster),
    ("daemon_control", daemon::control),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}
