//! rollcalld, the Rollcall edge daemon: readers in, journal on disk, punches out over MQTT.
//!
//! ```text
//! reader task --ReaderEvent--> capture (identify, duplicate window)
//!     --> journal (fsync, group commit) --> indicator signal
//!     --> uplink (protocol::uplink state machine + rumqttc) --> broker --> centre
//!     <-- ack (after the centre's COMMIT) --> journal deletes up to the acked seq
//! ```
#![deny(missing_docs)]

pub mod capture;
pub mod clock;
pub mod config;
pub mod control;
pub mod credentials;
pub mod demo;
pub mod journal;
pub mod keys;
pub mod metrics;
pub mod panic;
pub mod roster;
pub mod run;
pub mod sys;
pub mod systemd;
pub mod templates;
pub mod uplink;

pub use config::Config;
pub use run::{RunOptions, run};
