//! ZKTeco PUSH ("ADMS", "iclock") terminals into the same ledger and attendance rules as
//! Rollcall's gateways (issue 14). The protocol as terminals speak it is in
//! `../shared/reference/zkteco-adms.md`; the terminal is the HTTP client.
//!
//! * [`parse`]: the terminal's bytes, read by pure functions (tested with the reference's bytes).
//! * [`rules`]: the ledger key of a record, the record as the writer's punch, the clock and
//!   silent-loss rules, the commands' text; pure.
//! * [`store`]: one transaction per request, answered after COMMIT.
//! * [`http`]: the accept loop, TLS, limits; a thin shell.
//! * [`views`]: what operators see: `rollcall-ingest terminals`, commands queued from the
//!   command line, the gauges `rollcall_ingest_adms_terminals{state}` and
//!   `rollcall_ingest_adms_alerts_open{kind}`.
//!
//! # Exactly once without sequence numbers
//!
//! A terminal record's natural key is (serial number, PIN, local time). The first time a key
//! arrives it is given its terminal's next seq (`rollcall.adms_terminal.next_seq`, under the
//! terminal row's lock) and stored in `rollcall.adms_record` (primary key the natural key,
//! `UNIQUE (serial, seq)`); the punch is then written by the gateways' writer
//! ([`crate::db::writer`]: admit, decide, ledger, attendance upsert, audit, cursor) under the
//! ledger key `(device_id = serial, epoch = ADMS_EPOCH, seq)`, **in the same transaction**. A
//! record sent again (a retry after a lost `OK`, a stamp reset, a reboot, a time-range query)
//! finds its key and seq, and the ledger makes it a replay. A server-kept dense sequence
//! rather than a 63-bit hash of the key: no collision to argue about, and the per-device
//! cursor and `rollcall.gaps` mean for terminals what they mean for gateways (every seq up to
//! the cursor is in the ledger).
//!
//! # What a terminal is told
//!
//! * `OK: <n>` only after COMMIT. A crash before it loses nothing: the terminal keeps the
//!   records and sends them again.
//! * A serial number that is not an `attendance_biometric_device.device_id`, or a disabled
//!   device, is answered 403 on every request: terminals keep their records and retry after
//!   `ErrorDelay`, so they arrive once it is registered or enabled. A dead letter is written
//!   when it becomes refused (not per retry); `rollcall.refused_device` counts its requests
//!   (kind `adms`) for the operators' views.
//! * The handshake answers the cursor kept here (`ATTLOGStamp`), so a rebooted terminal resumes,
//!   and never `TimeZone`: the centre does not set terminal clocks.
//! * A database that is down is answered 503: the terminal retries.
//!
//! # Time
//!
//! A record's time is the terminal's wall clock, converted with the campus zone
//! ([`rules::local_instant`]) and stored as it said (`rollcall.adms_record.local_time`, with the
//! centre's `received_at`). Realtime uploads measure the terminal's clock offset
//! (`rollcall.adms_terminal.clock_offset_s`); a move of more than two minutes is a
//! `clock_jump` alert in `rollcall.adms_alert`. Nothing is corrected silently: a clock far
//! ahead gives `held` punches (the writer's rule) for a person to review.
//!
//! # Limits
//!
//! Bodies over `adms.max_body` are refused with 413 (before reading when the length is
//! declared); request heads must arrive within 15 s and bodies within 60 s; at most 1024
//! connections at once.

pub mod http;
pub mod parse;
pub mod rules;
pub mod store;
pub mod views;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use rules::{ADMS_EPOCH, Command};

/// Delays told to terminals in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Seconds between command polls (`Delay`).
    pub delay_s: u32,
    /// Seconds before retrying after an error (`ErrorDelay`).
    pub error_delay_s: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            delay_s: 10,
            error_delay_s: 30,
        }
    }
}

/// The `[adms]` table: where terminals reach the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmsConfig {
    /// Address and port (terminals are set to it in Comm -> Cloud Server / ADMS).
    pub listen: SocketAddr,
    /// PEM certificate chain for HTTPS (with `tls_key`); plain HTTP without.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Largest request body read, bytes.
    pub max_body: usize,
    /// Delays told to terminals.
    pub timing: Timing,
}

/// Default `adms.max_body`: 100,000 records of about 40 bytes.
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;
