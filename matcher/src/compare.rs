//! 1:1 comparison: local similarities of all cylinder pairs, a one-to-one choice of the best
//! pairs, then relaxation (LSS-R in the MCC papers): each pair's similarity is repeatedly
//! reinforced by the pairs that are geometrically compatible with it (same distance, same
//! relative directions), so pairs that agree only locally fade and a consistent global
//! arrangement keeps its weight. The score is the mean relaxed similarity of the pairs that kept
//! most of theirs.

use crate::cylinder::{self, SqrtTable};
use crate::template::MAX_DIRECTION_DIFF;
use crate::template::Template;
use std::f32::consts::TAU;

/// Most pairs taken into relaxation (its cost grows with the square).
const MAX_RELAXED: usize = 24;
/// Candidates ordered, per pair wanted, for the greedy one-to-one choice: further down the list
/// almost every candidate shares a minutia with a pair already chosen. A heuristic: when it is
/// not enough, the choice ends with fewer pairs, which lowers the score.
const SHORTLIST_PER_PAIR: usize = 4;
const RELAX_ROUNDS: usize = 5;
const RELAX_WEIGHT: f32 = 0.5;
/// Pairs averaged into the score: from `MIN_PAIRS` for small templates to `MAX_PAIRS`.
const MIN_PAIRS: usize = 4;
const MAX_PAIRS: usize = 12;
const PAIRS_MU: f32 = 20.0;
const PAIRS_TAU: f32 = 0.4;
/// Distance tolerance in pixels (sigmoid midpoint and steepness).
const DIST_MU: f32 = 5.0;
const DIST_TAU: f32 = -1.6;
/// Angle tolerances (direction difference, radial angle): midpoint pi/12, steepness -30.
const ANGLE_MU: f32 = std::f32::consts::PI / 12.0;
const ANGLE_TAU: f32 = -30.0;
/// Distance tolerance grows with the distance (skin stretches): the difference of two
/// distances is divided by `1 + DIST_RELATIVE * (sum of the distances)`.
const DIST_RELATIVE: f32 = 0.008;
/// Distance table resolution: entries per pixel, and its reach.
const DIST_STEPS_PER_PX: f32 = 16.0;
const DIST_TABLE: usize = 256;

fn sigmoid(v: f32, mu: f32, tau: f32) -> f32 {
    1.0 / (1.0 + (-tau * (v - mu)).exp())
}

/// A compatibility weight for the tables: weights under 1e-6 change no score but their products
/// would be subnormal floats, which x86 multiplies a hundred times slower.
fn weight(v: f32, mu: f32, tau: f32) -> f32 {
    let w = sigmoid(v, mu, tau);
    if w < 1e-6 { 0.0 } else { w }
}

/// Reusable working memory and lookup tables for comparisons; one per thread.
pub struct Comparer {
    roots: SqrtTable,
    dist_weight: [f32; DIST_TABLE],
    angle_weight: [f32; 129],
    candidates: Vec<(f32, u16, u16)>,
    used_a: Vec<bool>,
    used_b: Vec<bool>,
    pairs: Vec<(usize, usize)>,
    compat: Box<[[f32; MAX_RELAXED]; MAX_RELAXED]>,
    lambda: [f32; MAX_RELAXED],
    initial: Vec<f32>,
    order: Vec<usize>,
}

impl std::fmt::Debug for Comparer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Comparer").finish_non_exhaustive()
    }
}

impl Default for Comparer {
    fn default() -> Self {
        Self::new()
    }
}

impl Comparer {
    /// Builds the lookup tables.
    pub fn new() -> Self {
        let mut dist_weight = [0.0; DIST_TABLE];
        for (i, w) in dist_weight.iter_mut().enumerate() {
            *w = weight((i as f32 + 0.5) / DIST_STEPS_PER_PX, DIST_MU, DIST_TAU);
        }
        let mut angle_weight = [0.0; 129];
        for (i, w) in angle_weight.iter_mut().enumerate() {
            *w = weight(i as f32 * TAU / 256.0, ANGLE_MU, ANGLE_TAU);
        }
        Self {
            roots: SqrtTable::new(),
            dist_weight,
            angle_weight,
            candidates: Vec::new(),
            used_a: Vec::new(),
            used_b: Vec::new(),
            pairs: Vec::new(),
            compat: Box::new([[0.0; MAX_RELAXED]; MAX_RELAXED]),
            lambda: [0.0; MAX_RELAXED],
            initial: Vec::new(),
            order: Vec::new(),
        }
    }

    /// Similarity of two prints in `[0, 1]`; compare it with [`crate::THRESHOLD`].
    pub fn compare(&mut self, a: &Template, b: &Template) -> f32 {
        let (na, nb) = (a.cylinders.len(), b.cylinders.len());
        if na == 0 || nb == 0 {
            return 0.0;
        }
        self.candidates.clear();
        for (i, (ca, &da)) in a.cylinders.iter().zip(&a.directions).enumerate() {
            for range in direction_window(&b.directions, da) {
                for (j, cb) in range.clone().zip(&b.cylinders[range]) {
                    let s = cylinder::similarity(ca, cb, &self.roots);
                    if s > 0.0 {
                        self.candidates.push((s, i as u16, j as u16));
                    }
                }
            }
        }
        let wanted = na.min(nb).min(MAX_RELAXED);
        // Only the strongest few pairs per wanted pair can be chosen: order just those.
        let shortlist = self.candidates.len().min(SHORTLIST_PER_PAIR * wanted);
        if shortlist < self.candidates.len() {
            self.candidates
                .select_nth_unstable_by_key(shortlist, descending);
        }
        self.candidates[..shortlist].sort_unstable_by_key(descending);
        self.used_a.clear();
        self.used_a.resize(na, false);
        self.used_b.clear();
        self.used_b.resize(nb, false);
        self.pairs.clear();
        self.initial.clear();
        for &(s, i, j) in &self.candidates[..shortlist] {
            let (i, j) = (i as usize, j as usize);
            if self.used_a[i] || self.used_b[j] {
                continue;
            }
            self.used_a[i] = true;
            self.used_b[j] = true;
            self.pairs.push((i, j));
            self.initial.push(s);
            if self.pairs.len() == wanted {
                break;
            }
        }
        let n = self.pairs.len();
        if n == 0 {
            return 0.0;
        }
        self.relax(a, b);
        let keep = pair_count(wanted).min(n);
        self.order.clear();
        self.order.extend(0..n);
        let (lambda, initial) = (&self.lambda, &self.initial);
        let efficiency = |k: usize| lambda[k] / initial[k];
        self.order
            .sort_unstable_by(|&x, &y| efficiency(y).total_cmp(&efficiency(x)));
        self.order[..keep]
            .iter()
            .map(|&k| self.lambda[k])
            .sum::<f32>()
            / pair_count(wanted) as f32
    }

    fn relax(&mut self, a: &Template, b: &Template) {
        let n = self.pairs.len();
        let (sa, sb) = (a.cylinders.len(), b.cylinders.len());
        for x in 0..n {
            let (ai, bi) = self.pairs[x];
            self.compat[x][x] = 0.0;
            for y in (x + 1)..n {
                let (ak, bk) = self.pairs[y];
                let (da, db) = (a.distance[ai * sa + ak], b.distance[bi * sb + bk]);
                let d1 = (da - db).abs() / (1.0 + DIST_RELATIVE * (da + db));
                let idx = ((d1 * DIST_STEPS_PER_PX) as usize).min(DIST_TABLE - 1);
                let w1 = self.dist_weight[idx];
                let d2 =
                    a.direction_diff[ai * sa + ak].wrapping_sub(b.direction_diff[bi * sb + bk]);
                let d3 = a.radial[ai * sa + ak].wrapping_sub(b.radial[bi * sb + bk]);
                let w2 = self.angle_weight[(d2 as i8).unsigned_abs() as usize];
                let w3 = self.angle_weight[(d3 as i8).unsigned_abs() as usize];
                let rho = w1 * w2 * w3;
                self.compat[x][y] = rho;
                self.compat[y][x] = rho;
            }
        }
        self.lambda = [0.0; MAX_RELAXED];
        self.lambda[..n].copy_from_slice(&self.initial);
        let spread = if n > 1 {
            (1.0 - RELAX_WEIGHT) / (n - 1) as f32
        } else {
            0.0
        };
        for _ in 0..RELAX_ROUNDS {
            // support = compat * lambda, as a sum of rows (compat is symmetric): whole-row
            // multiply-adds vectorise, where per-row dot products would be serial sums.
            let mut support = [0.0f32; MAX_RELAXED];
            for (row, &l) in self.compat[..n].iter().zip(&self.lambda[..n]) {
                for (s, r) in support.iter_mut().zip(row) {
                    *s += l * r;
                }
            }
            for (l, s) in self.lambda[..n].iter_mut().zip(&support) {
                *l = RELAX_WEIGHT * *l + spread * s;
            }
        }
    }
}

/// Index ranges of the (ascending) `directions` within `MAX_DIRECTION_DIFF` of `d`, on the
/// circle of 256 units: one range, or two when the window wraps past 0.
fn direction_window(directions: &[u8], d: u8) -> [std::ops::Range<usize>; 2] {
    let start = |v: u16| directions.partition_point(|&x| u16::from(x) < v);
    let (lo, hi) = (
        i16::from(d) - i16::from(MAX_DIRECTION_DIFF),
        i16::from(d) + i16::from(MAX_DIRECTION_DIFF),
    );
    let end_of = |v: i16| start(v as u16 + 1);
    if lo < 0 {
        [start((lo + 256) as u16)..directions.len(), 0..end_of(hi)]
    } else if hi > 255 {
        [start(lo as u16)..directions.len(), 0..end_of(hi - 256)]
    } else {
        [start(lo as u16)..end_of(hi), 0..0]
    }
}

/// Sort key putting the most similar pair first (similarities are non-negative, and the bits of
/// non-negative floats order like the floats).
fn descending(c: &(f32, u16, u16)) -> std::cmp::Reverse<u32> {
    std::cmp::Reverse(c.0.to_bits())
}

/// Pairs averaged into the score for templates whose smaller one has `n` descriptors.
fn pair_count(n: usize) -> usize {
    let z = sigmoid(n as f32, PAIRS_MU, PAIRS_TAU);
    MIN_PAIRS + (z * (MAX_PAIRS - MIN_PAIRS) as f32).round() as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cylinder::{Cylinder, DIRECTION_CELLS};

    /// A template of hand-written descriptors, all seen over the whole disc, with the
    /// minutiae's directions given, the last minutia `last_at` px from the others and the others
    /// 20 px apart, all with the same relative angles.
    fn by_hand(descriptors: &[(u8, &[usize])], last_at: f32) -> Template {
        let n = descriptors.len();
        let mut t = Template::new(Vec::new());
        t.cylinders = descriptors
            .iter()
            .map(|(_, bits)| Cylinder::by_hand(0..200, bits))
            .collect();
        t.directions = descriptors.iter().map(|&(d, _)| d).collect();
        t.distance = (0..n * n)
            .map(|ik| {
                let (i, k) = (ik / n, ik % n);
                if i != k && (i == n - 1 || k == n - 1) {
                    last_at
                } else {
                    20.0
                }
            })
            .collect();
        t.direction_diff = vec![0; n * n];
        t.radial = vec![0; n * n];
        t
    }

    #[test]
    fn a_pair_of_zero_similarity_never_counts_toward_a_score() {
        let bits = |cell: usize| -> Vec<usize> {
            (0..3)
                .map(|k| (cell + k * 10) * DIRECTION_CELLS + k)
                .collect()
        };
        let (one, two) = (bits(3), bits(40));
        // Two prints with two minutiae in common (the same descriptors, 20 px apart) and a third
        // minutia with no bit set (its neighbours all too far from its cells), in a direction no
        // other is near, 30 px from the others in one print and 90 px in the other: paired with
        // each other the two empty descriptors have similarity 0, and that pair is not
        // compatible with the two others.
        let a = by_hand(&[(10, &one), (20, &two), (128, &[])], 30.0);
        let b = by_hand(&[(10, &one), (20, &two), (128, &[])], 90.0);
        let without = by_hand(&[(10, &one), (20, &two)], 20.0);
        let mut comparer = Comparer::new();
        let zero = cylinder::similarity(&a.cylinders[2], &b.cylinders[2], &comparer.roots);
        assert_eq!(zero, 0.0);
        let expected = comparer.compare(&without, &without);
        assert!(expected > 0.4, "{expected}");
        // The zero pair takes no place in relaxation (where the two good pairs' support would be
        // spread over one more, incompatible pair) and adds nothing to the score: the score is
        // that of the prints without the third minutia.
        assert_eq!(comparer.compare(&a, &b), expected);
        assert_eq!(comparer.compare(&b, &a), expected);
    }

    #[test]
    fn direction_window_holds_exactly_the_gated_directions_across_the_wrap() {
        let directions: Vec<u8> = vec![0, 3, 30, 41, 90, 128, 200, 215, 216, 250, 255];
        for d in 0..=255u8 {
            let expected: Vec<usize> = (0..directions.len())
                .filter(|&j| {
                    (d.wrapping_sub(directions[j]) as i8).unsigned_abs() <= MAX_DIRECTION_DIFF
                })
                .collect();
            let mut got: Vec<usize> = direction_window(&directions, d)
                .into_iter()
                .flatten()
                .collect();
            got.sort_unstable();
            assert_eq!(got, expected, "direction {d}");
        }
    }
}
