//! Fingerprint minutiae matching for Rollcall gateways, in pure safe Rust.
//!
//! A gateway that matches in software keeps the roster's templates encrypted at rest and works
//! with any sensor that outputs standard minutiae templates. This crate is the matching part:
//!
//! 1. [`parse`] reads ISO/IEC 19794-2:2005 and ANSI INCITS 378-2004 finger minutiae records,
//!    with the pitfalls of real files handled and anything malformed refused with a
//!    [`RecordError`] (see [`record`]).
//! 2. [`Template::from_record`] prepares a print once: minutiae scaled to 500 dpi, one
//!    descriptor per minutia, and the pairwise distance and angle tables the comparison reads.
//!    Enrolled templates are prepared when the roster is loaded, the probe once per search.
//! 3. [`Comparer::compare`] scores two templates in `[0, 1]`; [`Roster::search`] compares a probe
//!    with every enrolled impression and answers the student with the best score.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use rollcall_matcher::{Comparer, Roster, THRESHOLD, Template, parse};
//! let enrol = |bytes: &[u8]| -> Result<Template, Box<dyn std::error::Error>> {
//!     Ok(Template::from_record(&parse(bytes)?)?)
//! };
//! let mut roster = Roster::new();
//! roster.enroll("s-0042", vec![enrol(&std::fs::read("0042_1.iso")?)?]);
//! let probe = enrol(&std::fs::read("probe.iso")?)?;
//! let mut comparer = Comparer::new(); // lookup tables and scratch memory, one per thread
//! match roster.search(&probe, &mut comparer) {
//!     Some(best) if best.score >= THRESHOLD => println!("{} ({:.3})", best.student, best.score),
//!     _ => println!("unknown"),
//! }
//! # Ok(()) }
//! ```
//!
//! # Algorithm
//!
//! Minutia Cylinder-Code with relaxation (Cappelli, Ferrara and Maltoni, "Minutia Cylinder-Code:
//! a new representation and matching technique for fingerprint recognition", IEEE TPAMI 2010,
//! and "Fingerprint indexing based on Minutia Cylinder-Code", 2011), written from the papers:
//!
//! - **Local descriptors.** Each minutia gets a *cylinder*: its neighbourhood within 70 px in
//!   its own frame (so no alignment is needed), 16 x 16 cells x 6 direction bins, one bit per
//!   cell and bin (about 1,200 bits), set when neighbouring minutiae with that relative direction
//!   lie near the cell. Cells outside the minutiae's convex hull (plus 50 px) are marked invalid
//!   rather than empty, so a partial print is not penalised for what the sensor did not see.
//! - **Candidate pairs.** Every pair of cylinders whose minutiae differ in direction by at most
//!   56 degrees and that share enough valid cells gets a similarity (one minus the normalised
//!   Hamming distance over the common valid cells; bit counts and square roots by table). The
//!   best pairs are taken one to one, up to 24.
//! - **Global consolidation by relaxation.** Each pair's similarity is reinforced, over five
//!   rounds, by the pairs geometrically compatible with it: same distance between the two
//!   minutiae in both prints (within 5 px times 1 + 1.6 % of the distance, so 13 px at 100 px:
//!   skin stretches),
//!   same relative direction and same angle to the joining line (within 15 degrees). Pairs that
//!   only agree locally fade. The score is the mean relaxed similarity of the 4 to 11 pairs
//!   (more for larger prints) that kept most of their weight.
//!
//! Minutia quality is never used (many SDKs write 0 for all), nor the minutia type (MCC does not
//! use it).
//!
//! # Thresholds and measured accuracy
//!
//! Measured with `cargo run --release -p rollcall-matcher --example eval` on the FVC2002 and
//! FVC2004 "B" sets as ISO templates (8 databases x 10 fingers x 8 impressions; 2,240 genuine
//! and 23,040 impostor pairs in all; see BENCHMARKS.md for the table and the machine):
//!
//! | | EER, mean of the 8 DBs | without FVC2004 DB1 | identification rank-1 |
//! |---|---|---|---|
//! | this crate | 4.72 % | 2.89 % | 98.50 % |
//! | SourceAFIS 3.18 | 6.40 % | 4.05 % | 97.8 % |
//!
//! Scores are not probabilities; the thresholds come from the impostor scores of all 8
//! databases pooled: [`VERIFICATION_THRESHOLD`] is the score that 0.1 % of impostor pairs
//! reach, [`THRESHOLD`] the score 0.01 % reach. In a roster search the chance that a stranger
//! is taken for someone grows with the number of enrolled impressions (roughly their number
//! times the FMR per comparison: 450 impressions at 0.01 % give about 4.5 %), so a search uses
//! [`THRESHOLD`]. The FVC sets are deliberately hard (dry, wet, rotated and partial prints;
//! FVC2004 DB1's templates are distorted by resizing): with one sensor and cooperative users,
//! genuine scores are higher and the FNMR at these thresholds lower.
//!
//! # How the parameters were chosen
//!
//! The descriptor and relaxation parameters are the published ones (radius 70 px, 16 cells, 6
//! bins, direction sigma 2 pi/9, hull margin 50 px, 75 % valid cells, relaxation weight 0.5, 5
//! rounds, 4-12 pairs) except for the changes below, made with one parameter set for all
//! databases, tuned on FVC2002 alone (mean EER of its 4 databases) and then reported on
//! everything:
//!
//! - distance tolerance growing with distance (`DIST_RELATIVE` 0.008 per pixel of the two
//!   distances' sum): FVC2002 3.1 % -> 2.6 %;
//! - at most 24 relaxed pairs instead of all: no change (relaxation cost grows with the square;
//!   the number of pairs averaged into the score, which grows with it, tops out at 11, not 12);
//! - spatial sigma 7 px and bit threshold 0.006 instead of 28/3 and 0.01 (a small grid search,
//!   flat between 6-8 px and 0.005-0.007): 2.6 % -> 2.3 %; the templates come from images
//!   resized to 300 x 400, not from the 500 dpi images the published values were set for;
//! - direction gate 56 degrees instead of 90: 2.3 % -> 2.1 % and 40 % fewer cylinder
//!   comparisons. **A finger turned more than about 50 degrees between enrolment and the probe
//!   will not match**: enrol with the finger placed as it will be at the reader;
//! - the cylinder similarity normalises by each whole cylinder's bit count instead of the bits
//!   in the common valid area: no change in EER, a third of the bit counting.
//!
//! The rest was measured once on all eight databases after each change, and nothing was tuned on
//! FVC2004. Each database has only 280 genuine pairs, so one pair moves its EER by 0.36 points:
//! differences under half a point are noise.
//!
//! # Speed
//!
//! About 17 us per comparison on one core of the evaluation machine (57,000-63,000 per second),
//! a roster search of 150 students x 3 impressions in 7.4-8.2 ms on average (single searches up
//! to 16 ms on a loaded machine), and 0.6 ms to prepare a template. The hot loop is bit
//! counting over 20 words per cylinder pair: on x86-64 without `popcnt` (the default target) it
//! is vectorised with SSE2; aarch64 (Raspberry Pi) has a bit count instruction in its base set.
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

/// Score at or above which a roster search accepts its best candidate: 0.01 % of the evaluation's
/// 23,040 impostor pairs reach it (FNMR 31 % over its 2,240 genuine pairs, most of the misses
/// in the three hardest databases).
pub const THRESHOLD: f32 = 0.135;

/// Score at or above which a 1:1 verification accepts: 0.1 % of the evaluation's impostor pairs
/// reach it (FNMR 19 %).
pub const VERIFICATION_THRESHOLD: f32 = 0.072;
