//! Minutia Cylinder-Code descriptors (Cappelli, Ferrara, Maltoni, IEEE TPAMI 2010), bit version.
//!
//! A cylinder describes the neighbourhood of one minutia in that minutia's own frame (translated
//! to it and rotated to its direction), so it needs no alignment: a disc of radius [`RADIUS`]
//! split into [`SPATIAL_CELLS`] x [`SPATIAL_CELLS`] cells (only those whose centre is inside the
//! disc are kept), each cell split into [`DIRECTION_CELLS`] direction bins. A bit is set when
//! neighbouring minutiae near the cell centre have a direction, relative to the central minutia,
//! in that bin. A cell is *valid* when its centre lies inside the convex hull of the print's
//! minutiae grown by [`HULL_MARGIN`]: outside it, an empty cell means "not seen", not "no
//! minutia". Two cylinders are compared only on the cells valid in both.

use crate::geometry::{Hull, angle_diff};
use crate::template::Minutia;
use std::f32::consts::{PI, TAU};

/// Radius of the described neighbourhood, in 500 dpi pixels.
pub const RADIUS: f32 = 70.0;
/// Cells along each side of the square that holds the disc.
pub const SPATIAL_CELLS: usize = 16;
/// Direction bins per cell.
pub const DIRECTION_CELLS: usize = 6;
/// How far beyond the minutiae's convex hull cells still count as seen, in pixels.
pub const HULL_MARGIN: f32 = 50.0;

const CELL: f32 = 2.0 * RADIUS / SPATIAL_CELLS as f32;
/// Spread of a neighbour's contribution around its position, in pixels (the paper's 28/3 was
/// written for 500 dpi images; these templates come from images resized to 300 x 400, and 7
/// did better on FVC2002).
const SIGMA_S: f32 = 7.0;
const SIGMA_D: f32 = 2.0 * PI / 9.0;
const BIN: f32 = TAU / DIRECTION_CELLS as f32;
/// Contribution above which a cell's bit is set (the paper's 0.01, lowered with `SIGMA_S`).
const MU_PSI: f32 = 0.006;
/// Fraction of the disc's cells that must be valid for a cylinder to be kept.
const MIN_VALID_CELLS: f32 = 0.75;
/// Neighbours a cylinder needs (within `RADIUS + 3 * SIGMA_S`) to be kept.
const MIN_NEIGHBOURS: usize = 2;
/// Fraction of all `SPATIAL_CELLS^2 * DIRECTION_CELLS` bits that must be valid in both cylinders.
const MIN_MATCHABLE: f32 = 0.6;

const fn count_disc_cells() -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < SPATIAL_CELLS {
        let mut j = 0;
        while j < SPATIAL_CELLS {
            let (dx, dy) = cell_offset(i, j);
            if dx * dx + dy * dy <= RADIUS * RADIUS {
                n += 1;
            }
            j += 1;
        }
        i += 1;
    }
    n
}

const fn cell_offset(i: usize, j: usize) -> (f32, f32) {
    let half = SPATIAL_CELLS as f32 / 2.0;
    (
        (i as f32 + 0.5 - half) * CELL,
        (j as f32 + 0.5 - half) * CELL,
    )
}

/// Cells whose centre lies inside the disc.
const DISC_CELLS: usize = count_disc_cells();
const BITS: usize = DISC_CELLS * DIRECTION_CELLS;
/// 64-bit words per cylinder, rounded up to an even count so the bit counting vectorises in
/// pairs of words with no scalar tail.
pub const WORDS: usize = BITS.div_ceil(128) * 2;
const MIN_MATCHABLE_BITS: u32 =
    (MIN_MATCHABLE * (SPATIAL_CELLS * SPATIAL_CELLS * DIRECTION_CELLS) as f32) as u32;

/// One minutia's descriptor: contribution bits and validity bits (validity repeated over a
/// cell's direction bins so both line up word for word).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cylinder {
    bits: [u64; WORDS],
    valid: [u64; WORDS],
    /// Validity per cell (one bit per cell), for a cheap overlap test first.
    cells: [u64; CELL_WORDS],
    ones: u32,
}

const CELL_WORDS: usize = DISC_CELLS.div_ceil(64);

#[cfg(feature = "zeroize")]
impl zeroize::Zeroize for Cylinder {
    fn zeroize(&mut self) {
        self.bits.zeroize();
        self.valid.zeroize();
        self.cells.zeroize();
        self.ones.zeroize();
    }
}

/// Builds the cylinder of `minutiae[center]`, or `None` when too little of its neighbourhood
/// was seen or it has too few neighbours to say anything.
pub fn build(minutiae: &[Minutia], center: usize, hull: &Hull) -> Option<Cylinder> {
    let m = minutiae[center];
    let reach = RADIUS + 3.0 * SIGMA_S;
    // Each neighbour's share of every direction bin depends only on the neighbour: work it out
    // once, not once per cell.
    let spatial_norm = 1.0 / (SIGMA_S * TAU.sqrt());
    let neighbours: Vec<(f32, f32, [f32; DIRECTION_CELLS])> = minutiae
        .iter()
        .enumerate()
        .filter(|&(k, n)| k != center && (n.x - m.x).hypot(n.y - m.y) <= reach)
        .map(|(_, n)| {
            let relative = angle_diff(m.angle, n.angle);
            let weights = std::array::from_fn(|k| {
                let bin_centre = -PI + (k as f32 + 0.5) * BIN;
                spatial_norm * direction_weight(angle_diff(bin_centre, relative))
            });
            (n.x, n.y, weights)
        })
        .collect();
    if neighbours.len() < MIN_NEIGHBOURS {
        return None;
    }
    let (sin, cos) = m.angle.sin_cos();
    let mut cylinder = Cylinder {
        bits: [0; WORDS],
        valid: [0; WORDS],
        cells: [0; CELL_WORDS],
        ones: 0,
    };
    let mut valid_cells = 0;
    let mut cell = 0;
    let near = 3.0 * SIGMA_S;
    for i in 0..SPATIAL_CELLS {
        for j in 0..SPATIAL_CELLS {
            let (dx, dy) = cell_offset(i, j);
            if dx * dx + dy * dy > RADIUS * RADIUS {
                continue;
            }
            let px = m.x + cos * dx - sin * dy;
            let py = m.y + sin * dx + cos * dy;
            if hull.within(px, py, HULL_MARGIN) {
                valid_cells += 1;
                cylinder.cells[cell / 64] |= 1 << (cell % 64);
                let mut values = [0.0f32; DIRECTION_CELLS];
                for (x, y, weights) in &neighbours {
                    let d2 = (x - px) * (x - px) + (y - py) * (y - py);
                    if d2 > near * near {
                        continue;
                    }
                    let gs = (-d2 / (2.0 * SIGMA_S * SIGMA_S)).exp();
                    for (value, w) in values.iter_mut().zip(weights) {
                        *value += gs * w;
                    }
                }
                for (k, value) in values.iter().enumerate() {
                    let bit = cell * DIRECTION_CELLS + k;
                    cylinder.valid[bit / 64] |= 1 << (bit % 64);
                    if *value > MU_PSI {
                        cylinder.bits[bit / 64] |= 1 << (bit % 64);
                    }
                }
            }
            cell += 1;
        }
    }
    cylinder.ones = cylinder.bits.iter().map(|w| w.count_ones()).sum();
    (valid_cells as f32 >= MIN_VALID_CELLS * DISC_CELLS as f32).then_some(cylinder)
}

/// Probability mass of a normal law (sd `SIGMA_D`) over one direction bin centred `alpha` away.
fn direction_weight(alpha: f32) -> f32 {
    let s = SIGMA_D * std::f32::consts::SQRT_2;
    0.5 * (erf((alpha + BIN / 2.0) / s) - erf((alpha - BIN / 2.0) / s))
}

/// Abramowitz and Stegun 7.1.26 (error under 1.5e-7), enough for descriptor weights.
fn erf(x: f32) -> f32 {
    let sign = x.signum();
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    sign * (1.0 - poly * (-x * x).exp())
}

/// Square roots of bit counts, so a comparison does no floating-point root.
pub struct SqrtTable([f32; BITS + 1]);

impl SqrtTable {
    /// Fills the table.
    pub fn new() -> Self {
        let mut t = [0.0; BITS + 1];
        for (n, v) in t.iter_mut().enumerate() {
            *v = (n as f32).sqrt();
        }
        Self(t)
    }
}

/// Local similarity in `[0, 1]` of two cylinders over the cells valid in both: one minus the
/// normalised Euclidean distance of their bit vectors; 0 when too few cells are comparable.
#[inline]
pub fn similarity(a: &Cylinder, b: &Cylinder, roots: &SqrtTable) -> f32 {
    let matchable: u32 = a
        .cells
        .iter()
        .zip(&b.cells)
        .map(|(x, y)| (x & y).count_ones())
        .sum();
    if matchable * (DIRECTION_CELLS as u32) < MIN_MATCHABLE_BITS {
        return 0.0;
    }
    // Bits are only ever set in a cylinder's own valid cells, so masking the difference with
    // both validities compares exactly the cells valid in both.
    let nx: u32 = (0..WORDS)
        .map(|w| ((a.bits[w] ^ b.bits[w]) & a.valid[w] & b.valid[w]).count_ones())
        .sum();
    let (na, nb) = (a.ones, b.ones);
    if na + nb == 0 {
        return 0.0;
    }
    let r = &roots.0;
    1.0 - r[nx as usize] / (r[na as usize] + r[nb as usize])
}

#[cfg(test)]
impl Cylinder {
    /// A cylinder written by hand: `valid_cells` (indices of disc cells, every direction bin of
    /// each valid) and the `bits` set (indices `cell * DIRECTION_CELLS + bin`, each in a valid
    /// cell, as `build` guarantees).
    pub(crate) fn by_hand(valid_cells: impl IntoIterator<Item = usize>, bits: &[usize]) -> Self {
        let mut c = Cylinder {
            bits: [0; WORDS],
            valid: [0; WORDS],
            cells: [0; CELL_WORDS],
            ones: 0,
        };
        for cell in valid_cells {
            assert!(cell < DISC_CELLS);
            c.cells[cell / 64] |= 1 << (cell % 64);
            for k in 0..DIRECTION_CELLS {
                let bit = cell * DIRECTION_CELLS + k;
                c.valid[bit / 64] |= 1 << (bit % 64);
            }
        }
        for &bit in bits {
            assert!(
                c.valid[bit / 64] & (1 << (bit % 64)) != 0,
                "bit {bit} in an invalid cell"
            );
            c.bits[bit / 64] |= 1 << (bit % 64);
        }
        c.ones = c.bits.iter().map(|w| w.count_ones()).sum();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f32, expected: f32) -> bool {
        (got - expected).abs() < 1e-6
    }

    #[test]
    fn a_cylinder_with_no_bit_set_scores_what_the_formula_says() {
        let roots = SqrtTable::new();
        // MCC: 1 - ||a xor b|| / (||a|| + ||b||), over the cells valid in both.
        let formula = |nx: f32, na: f32, nb: f32| 1.0 - nx.sqrt() / (na.sqrt() + nb.sqrt());
        // Cell 0 is not seen in `empty`; `full` has one bit there and three in cells both saw.
        let empty = Cylinder::by_hand(1..DISC_CELLS, &[]);
        let full = Cylinder::by_hand(0..DISC_CELLS, &[0, 5 * 6 + 1, 7 * 6 + 2, 9 * 6 + 3]);
        let expected = formula(3.0, 0.0, 4.0);
        assert!(expected > 0.1, "{expected}");
        let s = similarity(&empty, &full, &roots);
        assert!(close(s, expected), "{s} against {expected}");
        let s = similarity(&full, &empty, &roots);
        assert!(
            close(s, expected),
            "{s} against {expected}, the other way round"
        );

        // With every bit of the other in cells both saw, the formula gives 0.
        let seen = Cylinder::by_hand(1..DISC_CELLS, &[5 * 6 + 1, 7 * 6 + 2, 9 * 6 + 3]);
        assert_eq!(similarity(&empty, &seen, &roots), 0.0);
        // Two cylinders with no bit set have nothing in common to measure: 0, not NaN.
        let other_empty = Cylinder::by_hand(0..DISC_CELLS, &[]);
        assert_eq!(similarity(&empty, &other_empty, &roots), 0.0);
        assert_eq!(similarity(&empty, &empty, &roots), 0.0);
    }
}
