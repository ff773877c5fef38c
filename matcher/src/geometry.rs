//! Plane geometry the descriptors need: angle differences and the minutiae's convex hull.

use std::f32::consts::{PI, TAU};

/// `a - b` wrapped into `(-pi, pi]`.
#[inline]
pub fn angle_diff(a: f32, b: f32) -> f32 {
    let d = (a - b).rem_euclid(TAU);
    if d > PI { d - TAU } else { d }
}

/// Convex hull of a point set, counter-clockwise in a y-down frame as computed (the orientation
/// only has to be consistent with [`Hull::within`]).
#[derive(Debug, Clone)]
pub struct Hull {
    points: Vec<(f32, f32)>,
}

fn cross(o: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
}

impl Hull {
    /// Andrew's monotone chain.
    pub fn new(points: impl IntoIterator<Item = (f32, f32)>) -> Self {
        let mut p: Vec<(f32, f32)> = points.into_iter().collect();
        p.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        p.dedup();
        if p.len() < 3 {
            return Self { points: p };
        }
        let mut hull: Vec<(f32, f32)> = Vec::with_capacity(2 * p.len());
        for pass in 0..2 {
            let start = hull.len();
            let iter: Box<dyn Iterator<Item = &(f32, f32)>> = if pass == 0 {
                Box::new(p.iter())
            } else {
                Box::new(p.iter().rev())
            };
            for &q in iter {
                while hull.len() >= start + 2
                    && cross(hull[hull.len() - 2], hull[hull.len() - 1], q) <= 0.0
                {
                    hull.pop();
                }
                hull.push(q);
            }
            hull.pop();
        }
        Self { points: hull }
    }

    /// Whether `(x, y)` is inside the hull or within `margin` of its boundary.
    pub fn within(&self, x: f32, y: f32, margin: f32) -> bool {
        let q = (x, y);
        let n = self.points.len();
        if n >= 3 && (0..n).all(|i| cross(self.points[i], self.points[(i + 1) % n], q) >= 0.0) {
            return true;
        }
        let m2 = margin * margin;
        match n {
            0 => false,
            1 => dist2(self.points[0], q) <= m2,
            _ => (0..n).any(|i| segment_dist2(self.points[i], self.points[(i + 1) % n], q) <= m2),
        }
    }
}

fn dist2(a: (f32, f32), b: (f32, f32)) -> f32 {
    (a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)
}

fn segment_dist2(a: (f32, f32), b: (f32, f32), q: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 {
        0.0
    } else {
        (((q.0 - a.0) * dx + (q.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    };
    dist2((a.0 + t * dx, a.1 + t * dy), q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn angle_diff_wraps_into_half_turns() {
        assert!((angle_diff(0.1, TAU - 0.1) - 0.2).abs() < 1e-5);
        assert!((angle_diff(TAU - 0.1, 0.1) + 0.2).abs() < 1e-5);
        assert!((angle_diff(PI, 0.0) - PI).abs() < 1e-5);
    }

    #[test]
    fn a_one_point_hull_holds_the_margin_around_its_point_and_an_empty_one_nothing() {
        let hull = Hull::new([(10.0, 10.0)]);
        assert!(hull.within(10.0, 10.0, 5.0));
        assert!(hull.within(13.0, 14.0, 5.0), "at the margin");
        assert!(!hull.within(13.0, 14.5, 5.0), "past it");
        assert!(!Hull::new(std::iter::empty()).within(10.0, 10.0, 5.0));
    }

    #[test]
    fn hull_contains_inside_and_margin_but_not_far_points() {
        let hull = Hull::new([
            (0.0, 0.0),
            (10.0, 0.0),
            (10.0, 10.0),
            (0.0, 10.0),
            (5.0, 5.0),
        ]);
        assert!(hull.within(5.0, 5.0, 0.0));
        assert!(hull.within(12.0, 5.0, 3.0));
        assert!(!hull.within(14.0, 5.0, 3.0));
        assert!(!hull.within(13.0, 13.0, 3.0));
    }
}
