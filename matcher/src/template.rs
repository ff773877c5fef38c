//! Templates prepared once per print: normalised minutiae, their cylinders, and the pairwise
//! tables the consolidation step reads, so comparing two templates does no setup.

use crate::cylinder::{self, Cylinder};
use crate::geometry::{Hull, angle_diff};
use crate::record::{FingerView, Record, RecordMinutia};
use std::f32::consts::TAU;
use thiserror::Error;

/// Cylinders whose minutiae differ in direction by more than this (a quarter turn, in 1/256
/// turns) never match.
pub(crate) const MAX_DIRECTION_DIFF: u8 = 40;

/// Pixels per centimetre at 500 dpi, the scale all descriptor parameters are written for.
const REFERENCE_RESOLUTION: f32 = 197.0;

/// A minutia in the matcher's frame: 500 dpi pixels, y downwards, and the direction as a
/// mathematical angle in that same frame (so rotating the finger turns positions and directions
/// the same way).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Minutia {
    /// Column in 500 dpi pixels.
    pub x: f32,
    /// Row in 500 dpi pixels, growing downwards.
    pub y: f32,
    /// Direction in radians in `[0, 2pi)`, measured from the x axis towards the y axis.
    pub angle: f32,
}

impl Minutia {
    /// Converts a record's minutia: scales to 500 dpi with the record's resolution (0 meaning
    /// "not stated", taken as 500 dpi) and turns the standards' counter-clockwise-as-viewed angle
    /// into the y-down frame.
    pub fn from_record(m: &RecordMinutia, x_resolution: u16, y_resolution: u16) -> Self {
        let scale = |res: u16| {
            if res == 0 {
                1.0
            } else {
                REFERENCE_RESOLUTION / f32::from(res)
            }
        };
        Self {
            x: f32::from(m.x) * scale(x_resolution),
            y: f32::from(m.y) * scale(y_resolution),
            angle: (-m.angle_degrees.to_radians()).rem_euclid(TAU),
        }
    }
}

/// Why a record could not become a template.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    /// The record holds no finger view.
    #[error("the record holds no finger view: nothing to match")]
    NoView,
}

/// A print ready for comparison: build it once per enrolled impression and once per probe.
#[derive(Debug, Clone)]
pub struct Template {
    minutiae: Vec<Minutia>,
    pub(crate) cylinders: Vec<Cylinder>,
    /// For each cylinder, its minutia's direction in 1/256 turns, in ascending order.
    pub(crate) directions: Vec<u8>,
    /// Row-major `n x n` tables over cylinder-bearing minutiae: distance, direction difference,
    /// and the angle from one minutia's direction to the line towards the other, the last two in
    /// 1/256 turns so a difference is a wrapping byte subtraction.
    pub(crate) distance: Vec<f32>,
    pub(crate) direction_diff: Vec<u8>,
    pub(crate) radial: Vec<u8>,
}

/// With the `zeroize` feature a template overwrites what it derived from the print (minutiae,
/// descriptors, tables) when dropped, so a roster's templates do not linger in freed memory.
#[cfg(feature = "zeroize")]
impl Drop for Template {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for m in &mut self.minutiae {
            m.x.zeroize();
            m.y.zeroize();
            m.angle.zeroize();
        }
        self.minutiae.clear();
        self.cylinders.zeroize();
        self.directions.zeroize();
        self.distance.zeroize();
        self.direction_diff.zeroize();
        self.radial.zeroize();
    }
}

fn to_turn_units(radians: f32) -> u8 {
    ((radians.rem_euclid(TAU) * 256.0 / TAU).round() as u32 % 256) as u8
}

impl Template {
    /// Prepares a template from minutiae already in the matcher's frame.
    pub fn new(minutiae: Vec<Minutia>) -> Self {
        let hull = Hull::new(minutiae.iter().map(|m| (m.x, m.y)));
        let mut described: Vec<(Minutia, Cylinder)> = (0..minutiae.len())
            .filter_map(|i| Some((minutiae[i], cylinder::build(&minutiae, i, &hull)?)))
            .collect();
        // In direction order, the cylinders a comparison may pair with one of the other print's
        // form one or two runs, found by binary search instead of testing every pair.
        described.sort_by_key(|(m, _)| to_turn_units(m.angle));
        let (kept, cylinders): (Vec<Minutia>, Vec<Cylinder>) = described.into_iter().unzip();
        let n = kept.len();
        let mut distance = vec![0.0; n * n];
        let mut direction_diff = vec![0; n * n];
        let mut radial = vec![0; n * n];
        for (i, a) in kept.iter().enumerate() {
            for (k, b) in kept.iter().enumerate() {
                distance[i * n + k] = (b.x - a.x).hypot(b.y - a.y);
                direction_diff[i * n + k] = to_turn_units(angle_diff(a.angle, b.angle));
                radial[i * n + k] =
                    to_turn_units(angle_diff(a.angle, (b.y - a.y).atan2(b.x - a.x)));
            }
        }
        Self {
            directions: kept.iter().map(|m| to_turn_units(m.angle)).collect(),
            minutiae,
            cylinders,
            distance,
            direction_diff,
            radial,
        }
    }

    /// Prepares a template from one finger view of a record.
    pub fn from_view(view: &FingerView, x_resolution: u16, y_resolution: u16) -> Self {
        Self::new(
            view.minutiae
                .iter()
                .map(|m| Minutia::from_record(m, x_resolution, y_resolution))
                .collect(),
        )
    }

    /// Prepares a template from the first finger view of a record.
    pub fn from_record(record: &Record) -> Result<Self, TemplateError> {
        let view = record.views.first().ok_or(TemplateError::NoView)?;
        Ok(Self::from_view(
            view,
            record.x_resolution,
            record.y_resolution,
        ))
    }

    /// The minutiae, normalised.
    pub fn minutiae(&self) -> &[Minutia] {
        &self.minutiae
    }

    /// Minutiae whose neighbourhood was described well enough to take part in matching.
    pub fn descriptor_count(&self) -> usize {
        self.cylinders.len()
    }
}
