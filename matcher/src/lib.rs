//! Fingerprint minutiae matching for Rollcall gateways, in pure safe Rust.
//!
//! TODO: algorithm, evaluation and threshold documentation.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod compare;
mod cylinder;
mod geometry;
pub mod record;
mod search;
mod template;

pub use compare::Comparer;
pub use record::{Format, RecordError, parse};
pub use search::{Candidate, Roster};
pub use template::{Minutia, Template, TemplateError};

/// Score at or above which two prints are taken to be the same finger.
pub const THRESHOLD: f32 = 0.5;
