//! The rules of roster updates, as pure functions over plain values: parts gathered into one
//! update, an update checked against the held version, applied to the held roster, and module
//! slots given to the EF01 templates. No I/O: the actor (`mod.rs`) stores and acknowledges.

use std::collections::{BTreeMap, BTreeSet};

use rollcall_protocol::v1::credentials::FORMAT_EF01;
use rollcall_protocol::v1::{RosterFailure, RosterStudent, RosterUpdate};

use super::store::{SlotEntry, StoredRoster};

/// Most bytes of roster parts held while waiting for the rest of an update.
pub const MAX_PENDING_BYTES: usize = 256 * 1024 * 1024;

/// The parts of one update, gathered until all are held.
#[derive(Debug, Default)]
pub struct Assembler {
    key: Option<(Option<u64>, u64, u32)>,
    parts: BTreeMap<u32, RosterUpdate>,
    bytes: usize,
}

/// A whole update: every part's students and removals, in part order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whole {
    /// None for a snapshot.
    pub base_version: Option<u64>,
    /// The version it brings the roster to.
    pub version: u64,
    /// Students added or changed.
    pub students: Vec<RosterStudent>,
    /// Students removed.
    pub removed: Vec<String>,
}

impl Assembler {
    /// Takes one part (`size`: its encoded bytes); answers the whole update once every part of
    /// it is held. A part of another update drops the parts held so far (the centre re-sends
    /// what the next acknowledgement asks for).
    pub fn offer(&mut self, part: RosterUpdate, size: usize) -> Option<Whole> {
        let key = (part.base_version, part.version, part.parts);
        if self.key != Some(key) {
            self.parts.clear();
            self.bytes = 0;
            self.key = Some(key);
        }
        if self.bytes + size > MAX_PENDING_BYTES {
            tracing::warn!(
                version = part.version,
                "roster parts exceed {MAX_PENDING_BYTES} bytes: dropped"
            );
            *self = Self::default();
            return None;
        }
        if self.parts.insert(part.part, part).is_none() {
            self.bytes += size;
        }
        if self.parts.len() < key.2 as usize {
            return None;
        }
        let mut whole = Whole {
            base_version: key.0,
            version: key.1,
            students: Vec::new(),
            removed: Vec::new(),
        };
        for (_, p) in std::mem::take(&mut self.parts) {
            whole.students.extend(p.students);
            whole.removed.extend(p.removed);
        }
        *self = Self::default();
        Some(whole)
    }

    /// Parts held of an update still incomplete.
    pub fn held(&self) -> usize {
        self.parts.len()
    }
}

/// What to do with a whole update.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Apply it: the new roster's students (slots not yet given).
    Apply(Vec<RosterStudent>),
    /// Its version is not above the held one: acknowledge again, change nothing.
    Stale,
    /// A delta on a base that is not the held version: ask for a snapshot.
    WrongBase,
}

/// Checks `update` against `held` and, when it applies, computes the new students.
pub fn decide(held: &StoredRoster, update: Whole) -> Verdict {
    if update.version <= held.version {
        return Verdict::Stale;
    }
    let mut students: BTreeMap<String, RosterStudent> = BTreeMap::new();
    match update.base_version {
        None => {}
        Some(base) if base == held.version && held.version > 0 => {
            for s in &held.students {
                students.insert(s.student.clone(), s.clone());
            }
        }
        Some(_) => return Verdict::WrongBase,
    }
    for r in &update.removed {
        students.remove(r);
    }
    for s in update.students {
        students.insert(s.student.clone(), s);
    }
    Verdict::Apply(students.into_values().collect())
}

/// Gives every EF01 template of `next` a module slot: the one it had in `held`, else the lowest
/// slot below `capacity` that no template holds and no module may still hold (`held.freed`,
/// and slots freed by this update). Templates that find none are failures ("module full").
/// Fills `next.slots` and `next.freed`.
pub fn assign_slots(
    held: &StoredRoster,
    next: &mut StoredRoster,
    capacity: Option<u16>,
) -> Vec<RosterFailure> {
    let mut wanted = Vec::new();
    for s in &next.students {
        for f in s.fingers.iter().filter(|f| f.format == FORMAT_EF01) {
            wanted.push(f.id);
        }
    }
    let wanted_ids: BTreeSet<_> = wanted.iter().copied().collect();
    let mut freed: BTreeSet<u16> = held.freed.iter().copied().collect();
    let limit = capacity.unwrap_or(u16::MAX);
    let mut slots = Vec::new();
    let mut used = BTreeSet::new();
    for s in &held.slots {
        if s.slot >= limit {
            // Given before the module's size was known: no module holds it; give another.
            continue;
        }
        if wanted_ids.contains(&uuid::Uuid::from_bytes(s.id)) {
            slots.push(*s);
            used.insert(s.slot);
        } else {
            freed.insert(s.slot);
        }
    }
    let mut failures = Vec::new();
    let mut candidate = 0u16;
    for id in wanted {
        if slots.iter().any(|s| s.id == *id.as_bytes()) {
            continue;
        }
        while candidate < limit && (used.contains(&candidate) || freed.contains(&candidate)) {
            candidate += 1;
        }
        if candidate >= limit {
            failures.push(RosterFailure {
                id,
                reason: format!(
                    "module full: {} of {limit} slots hold this room's templates{}",
                    used.len(),
                    if freed.is_empty() {
                        String::new()
                    } else {
                        format!(" and {} await deletion", freed.len())
                    }
                ),
            });
            continue;
        }
        slots.push(SlotEntry {
            id: *id.as_bytes(),
            slot: candidate,
        });
        used.insert(candidate);
    }
    slots.sort_by_key(|s| s.slot);
    next.slots = slots;
    next.freed = freed.into_iter().collect();
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_protocol::v1::{CardCredential, FingerCredential, Secret};
    use uuid::Uuid;

    fn student(name: &str, fingers: &[u8]) -> RosterStudent {
        RosterStudent {
            student: name.into(),
            cards: vec![CardCredential {
                id: Uuid::from_bytes([0xC0; 16]),
                uid: Secret::new(name.as_bytes().to_vec()),
            }],
            fingers: fingers
                .iter()
                .map(|&b| FingerCredential {
                    id: Uuid::from_bytes([b; 16]),
                    format: FORMAT_EF01.into(),
                    data: Secret::new(vec![b; 512]),
                })
                .collect(),
        }
    }

    fn part(
        base: Option<u64>,
        version: u64,
        part: u32,
        parts: u32,
        s: Vec<RosterStudent>,
    ) -> RosterUpdate {
        RosterUpdate {
            device_id: "d".into(),
            version,
            base_version: base,
            part,
            parts,
            students: s,
            removed: vec![],
        }
    }

    #[test]
    fn parts_make_a_whole_only_when_all_are_held_and_another_update_starts_over() {
        let mut a = Assembler::default();
        assert_eq!(
            a.offer(part(None, 3, 1, 3, vec![student("B", &[])]), 10),
            None
        );
        assert_eq!(
            a.offer(part(None, 3, 1, 3, vec![student("B", &[])]), 10),
            None
        );
        assert_eq!(a.held(), 1, "a repeated part counts once");
        assert_eq!(
            a.offer(part(None, 3, 0, 3, vec![student("A", &[])]), 10),
            None
        );
        let whole = a
            .offer(part(None, 3, 2, 3, vec![student("C", &[])]), 10)
            .expect("whole");
        let names: Vec<_> = whole.students.iter().map(|s| s.student.as_str()).collect();
        assert_eq!(names, ["A", "B", "C"]);
        assert_eq!(a.offer(part(None, 4, 0, 2, vec![]), 1), None);
        assert_eq!(a.offer(part(Some(4), 5, 1, 2, vec![]), 1), None);
        assert_eq!(a.held(), 1, "the other update's part was dropped");
    }

    #[test]
    fn deltas_apply_on_their_base_only_and_stale_versions_change_nothing() {
        let held = StoredRoster {
            version: 5,
            students: vec![student("A", &[1]), student("B", &[2])],
            ..Default::default()
        };
        let whole = |base, version, students, removed: &[&str]| Whole {
            base_version: base,
            version,
            students,
            removed: removed.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(decide(&held, whole(None, 5, vec![], &[])), Verdict::Stale);
        assert_eq!(
            decide(&held, whole(Some(4), 6, vec![], &[])),
            Verdict::WrongBase
        );
        let Verdict::Apply(next) =
            decide(&held, whole(Some(5), 6, vec![student("C", &[3])], &["A"]))
        else {
            panic!("applies")
        };
        let names: Vec<_> = next.iter().map(|s| s.student.as_str()).collect();
        assert_eq!(names, ["B", "C"]);
        let Verdict::Apply(next) = decide(&held, whole(None, 9, vec![student("Z", &[])], &[]))
        else {
            panic!("snapshot applies")
        };
        assert_eq!(next.len(), 1);
        let empty = StoredRoster::default();
        assert_eq!(
            decide(&empty, whole(Some(0), 1, vec![], &[])),
            Verdict::WrongBase,
            "nothing held: only a snapshot"
        );
    }

    #[test]
    fn slots_are_kept_freed_ones_are_not_reused_and_what_does_not_fit_fails() {
        let mut held = StoredRoster {
            version: 1,
            students: vec![student("A", &[1, 2])],
            ..Default::default()
        };
        let empty = StoredRoster::default();
        assert!(assign_slots(&empty, &mut held, Some(3)).is_empty());
        assert_eq!(
            held.slots.iter().map(|s| s.slot).collect::<Vec<_>>(),
            [0, 1]
        );
        let mut next = StoredRoster {
            version: 2,
            students: vec![student("A", &[2]), student("B", &[3, 4])],
            ..Default::default()
        };
        let failures = assign_slots(&held, &mut next, Some(3));
        assert_eq!(next.slot_of(&Uuid::from_bytes([2; 16])), Some(1), "kept");
        assert_eq!(next.slot_of(&Uuid::from_bytes([3; 16])), Some(2));
        assert_eq!(next.freed, [0], "slot 0 awaits deletion, not reused");
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].id, Uuid::from_bytes([4; 16]));
        assert!(
            failures[0].reason.starts_with("module full"),
            "{failures:?}"
        );

        // Slots given before the module's size was known do not count once it is: what is
        // beyond the library is a failure, not a slot kept.
        let mut unknown = StoredRoster {
            version: 1,
            students: vec![student("A", &[1, 2, 3, 4])],
            ..Default::default()
        };
        assert!(assign_slots(&empty, &mut unknown, None).is_empty());
        let mut next = StoredRoster {
            version: 2,
            students: vec![student("A", &[1, 2, 3, 4])],
            ..Default::default()
        };
        let failures = assign_slots(&unknown, &mut next, Some(3));
        assert_eq!(next.slot_of(&Uuid::from_bytes([4; 16])), None);
        assert!(next.slots.iter().all(|s| s.slot < 3));
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].id, Uuid::from_bytes([4; 16]));
    }

    proptest::proptest! {
        /// Any sequence of updates, with modules syncing (or not) in between: slots stay
        /// unique and inside the library, a template keeps its slot while it stays, a slot that
        /// may still hold another template is never given out, and every template has a slot
        /// or a failure.
        #[test]
        fn slot_assignment_holds_its_rules_over_any_sequence(
            steps in proptest::collection::vec(
                (
                    proptest::collection::vec((0u8..12, proptest::collection::vec(0u8..6, 0..3)), 0..8),
                    proptest::bool::ANY,
                    proptest::bool::ANY,
                ),
                1..12,
            ),
            capacity in 1u16..10,
        ) {
            let mut held = StoredRoster::default();
            for (version, (students, snapshot, synced)) in steps.into_iter().enumerate() {
                let whole = Whole {
                    base_version: (!snapshot).then_some(held.version),
                    version: version as u64 + 1,
                    students: students
                        .iter()
                        .map(|(n, fingers)| {
                            let mut s = student(&format!("S{n}"), &[]);
                            s.fingers = fingers
                                .iter()
                                .map(|f| FingerCredential {
                                    id: Uuid::from_bytes([n * 8 + f; 16]),
                                    format: FORMAT_EF01.into(),
                                    data: Secret::new(vec![*f; 4]),
                                })
                                .collect();
                            s
                        })
                        .collect(),
                    removed: vec![],
                };
                let Verdict::Apply(students) = decide(&held, whole) else {
                    proptest::prop_assert!(!snapshot && held.version == 0);
                    continue;
                };
                let mut next = StoredRoster {
                    version: version as u64 + 1,
                    students,
                    ..Default::default()
                };
                let failures = assign_slots(&held, &mut next, Some(capacity));
                let slots: BTreeSet<u16> = next.slots.iter().map(|s| s.slot).collect();
                proptest::prop_assert_eq!(slots.len(), next.slots.len(), "unique slots");
                proptest::prop_assert!(slots.iter().all(|s| *s < capacity));
                let wanted: BTreeSet<Uuid> = next
                    .students
                    .iter()
                    .flat_map(|s| s.fingers.iter().map(|f| f.id))
                    .collect();
                let assigned: BTreeSet<Uuid> =
                    next.slots.iter().map(|s| Uuid::from_bytes(s.id)).collect();
                proptest::prop_assert!(assigned.is_subset(&wanted));
                let failed: BTreeSet<Uuid> = failures.iter().map(|f| f.id).collect();
                proptest::prop_assert_eq!(
                    assigned.union(&failed).copied().collect::<BTreeSet<_>>(),
                    wanted
                );
                for s in &next.slots {
                    match held.slot_of(&Uuid::from_bytes(s.id)) {
                        Some(old) => proptest::prop_assert_eq!(old, s.slot, "kept its slot"),
                        None => {
                            proptest::prop_assert!(!held.freed.contains(&s.slot));
                            proptest::prop_assert!(
                                !held.slots.iter().any(|h| h.slot == s.slot),
                                "a slot freed by this update is not given out"
                            );
                        }
                    }
                }
                proptest::prop_assert!(next.freed.iter().all(|f| !slots.contains(f)));
                held = next;
                if synced {
                    held.freed.clear();
                }
            }
        }
    }
}
