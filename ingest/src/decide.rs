//! The pure core of ingestion: given a punch, its device and what the database said about
//! students, sessions and enrolments, decide the punch's outcome. No I/O, no clock reads (`now`
//! is an argument), so every rule is tested with plain values.
//!
//! Whether a punch may count at all (device, clock, values) is [`admit`](crate::admit)'s; the
//! attendance rules (see `../shared/reference/campshub360.md`):
//! * the device's `room` selects the candidate sessions (`status` scheduled, open or closed);
//! * a punch belongs to a session when, on the session clock, it falls in
//!   `[start - max(early arrival, grace), end + grace]`; of several, an enrolled one, then the
//!   one whose start is nearest;
//! * CampsHub360's generator stores local wall-clock times as UTC: with
//!   [`SessionClock::WallclockAsUtc`] the punch instant is turned into campus wall-clock first;
//! * `present` when at or before `start + grace`, else `late`;
//! * the student must be ENROLLED in the session's course section.

use crate::admit::{Clock, admit};
pub use crate::admit::{DeviceFacts, Reason};
use crate::config::SessionClock;
use crate::punch::{PunchIn, SubjectIn};
use chrono::{DateTime, Duration, TimeZone, Utc};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// A punch's fate, as stored in `rollcall.ledger.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It set or improved the student's `attendance_record`.
    Recorded,
    /// The record already held an equal or better mark (an earlier punch, or present/excused).
    Duplicate,
    /// Unknown card, unknown finger, or a student id that is not in `students_student`.
    UnknownCredential,
    /// No session in the device's room at that time.
    NoSession,
    /// A session was found but the student is not ENROLLED in its course section.
    NotEnrolled,
    /// Refused; the ledger's `reason` and `detail` say why.
    Rejected,
    /// The device clock could not be trusted nor corrected: kept out of attendance for review.
    Held,
}

impl Outcome {
    /// All outcomes, for metrics.
    pub const ALL: [Outcome; 7] = [
        Outcome::Recorded,
        Outcome::Duplicate,
        Outcome::UnknownCredential,
        Outcome::NoSession,
        Outcome::NotEnrolled,
        Outcome::Rejected,
        Outcome::Held,
    ];

    /// As written in `rollcall.ledger.outcome` and the `outcome` metric label; never renamed.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Recorded => "recorded",
            Outcome::Duplicate => "duplicate",
            Outcome::UnknownCredential => "unknown_credential",
            Outcome::NoSession => "no_session",
            Outcome::NotEnrolled => "not_enrolled",
            Outcome::Rejected => "rejected",
            Outcome::Held => "held",
        }
    }
}

/// `present` or `late`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// On time.
    Present,
    /// After start + grace.
    Late,
}

impl Mark {
    /// `attendance_record.mark`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mark::Present => "present",
            Mark::Late => "late",
        }
    }
}

/// What the decision needs of the device's `attendance_biometric_device` row.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    /// `attendance_biometric_device.id`.
    pub id: i64,
    /// `device_id`.
    pub device_id: String,
    /// `room`.
    pub room: String,
    /// `device_type`.
    pub device_type: String,
    /// `is_enabled` now (see [`DeviceFacts::enabled_at`] for the state at a given time).
    pub enabled: bool,
    /// Listed in `[attendance] demo_devices`: its simulated punches count.
    pub demo: bool,
}

/// A candidate session (times as stored).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    /// `attendance_session.id`.
    pub id: i64,
    /// `room`.
    pub room: String,
    /// `start_datetime` as stored.
    pub start: DateTime<Utc>,
    /// `end_datetime` as stored.
    pub end: DateTime<Utc>,
    /// `course_section_id`.
    pub course_section_id: i64,
    /// `academic_period_id`.
    pub academic_period_id: Option<Uuid>,
}

/// What the database said, for one batch.
#[derive(Debug, Default, Clone)]
pub struct Lookup {
    /// Student key (id text or roll number) -> `students_student.id`.
    pub students: HashMap<String, Uuid>,
    /// Room -> sessions.
    pub sessions: HashMap<String, Vec<SessionInfo>>,
    /// ENROLLED (student, course_section).
    pub enrolled: HashSet<(Uuid, i64)>,
    /// Enablement history and clock anchors of the batch's devices.
    pub facts: DeviceFacts,
}

/// Settings that apply to a batch.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Grace after start for `present`, and around the window.
    pub grace: Duration,
    /// How early before start a punch counts.
    pub early: Duration,
    /// How session times are stored.
    pub clock: SessionClock,
    /// Campus time zone.
    pub tz: chrono_tz::Tz,
    /// Refuse punches stamped further in the future than this.
    pub max_future: Duration,
    /// Now, on the centre's clock (passed in: the rules never read the clock).
    pub now: DateTime<Utc>,
}

impl Rules {
    /// An instant expressed on the session clock.
    pub fn on_session_clock(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        match self.clock {
            SessionClock::Utc => t,
            SessionClock::WallclockAsUtc => self
                .tz
                .from_utc_datetime(&t.naive_utc())
                .naive_local()
                .and_utc(),
        }
    }

    /// The stored-time window of sessions a punch at `t` can belong to (for the query).
    pub fn search_window(&self, t: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let s = self.on_session_clock(t);
        (s - self.grace, s + self.early.max(self.grace))
    }
}

/// The decision for one punch.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Outcome (Recorded is provisional until the upsert says whether it changed anything).
    pub outcome: Outcome,
    /// Why it was refused or held.
    pub reason: Option<Reason>,
    /// The instant it counts at (corrected when the clock was), when one could be told.
    pub at: Option<DateTime<Utc>>,
    /// Why, for humans.
    pub detail: String,
    /// The student the subject names, when one does (`students_student.id`).
    pub student: Option<Uuid>,
    /// The class session the punch falls in, when one does.
    pub session: Option<SessionInfo>,
    /// Mark for a recordable punch.
    pub mark: Option<Mark>,
}

impl Decision {
    fn no(outcome: Outcome, at: DateTime<Utc>, detail: impl Into<String>) -> Self {
        Decision {
            outcome,
            reason: None,
            at: Some(at),
            detail: detail.into(),
            student: None,
            session: None,
            mark: None,
        }
    }
}

/// Decides one punch: first whether it may count at all ([`admit`]), then the attendance
/// rules. `database_refused` is set when PostgreSQL refused the punch's message once.
pub fn decide(
    p: &PunchIn,
    database_refused: Option<&str>,
    device: Option<&DeviceInfo>,
    lookup: &Lookup,
    rules: &Rules,
) -> Decision {
    let clock = Clock {
        now: rules.now,
        max_future: rules.max_future,
    };
    let admitted = match admit(p, database_refused, device, &lookup.facts, clock) {
        Ok(a) => a,
        Err(r) => {
            return Decision {
                outcome: if r.held {
                    Outcome::Held
                } else {
                    Outcome::Rejected
                },
                reason: Some(r.reason),
                at: r.at,
                detail: r.detail,
                student: None,
                session: None,
                mark: None,
            };
        }
    };
    let mut d = attendance(p, admitted.device, admitted.at, lookup, rules);
    if let Some(note) = admitted.note {
        d.detail = if d.detail.is_empty() {
            note
        } else {
            format!("{}; {note}", d.detail)
        };
    }
    d
}

/// The attendance rules of the module header, for a punch that may count, at instant `t`.
fn attendance(
    p: &PunchIn,
    device: &DeviceInfo,
    t: DateTime<Utc>,
    lookup: &Lookup,
    rules: &Rules,
) -> Decision {
    let key = match &p.subject {
        SubjectIn::Student(s) => s,
        SubjectIn::UnknownCard(_) => {
            return Decision::no(Outcome::UnknownCredential, t, "card not on the roster");
        }
        SubjectIn::UnknownFinger => {
            return Decision::no(Outcome::UnknownCredential, t, "finger not on the roster");
        }
    };
    let Some(&student) = lookup.students.get(key) else {
        return Decision::no(
            Outcome::UnknownCredential,
            t,
            format!("student {key:?} not in students_student"),
        );
    };
    if device.room.is_empty() {
        let mut d = Decision::no(
            Outcome::Rejected,
            t,
            "device has no room in attendance_biometric_device",
        );
        d.reason = Some(Reason::DeviceNoRoom);
        d.student = Some(student);
        return d;
    }
    let ts = rules.on_session_clock(t);
    let before = rules.early.max(rules.grace);
    let mut candidates: Vec<&SessionInfo> = lookup
        .sessions
        .get(&device.room)
        .map(|v| {
            v.iter()
                .filter(|s| ts >= s.start - before && ts <= s.end + rules.grace)
                .collect()
        })
        .unwrap_or_default();
    if candidates.is_empty() {
        let mut d = Decision::no(
            Outcome::NoSession,
            t,
            format!(
                "no session in room {:?} at {ts} (session clock)",
                device.room
            ),
        );
        d.student = Some(student);
        return d;
    }
    candidates.sort_by_key(|s| ((ts - s.start).num_milliseconds().abs(), s.id));
    let enrolled = candidates
        .iter()
        .find(|s| lookup.enrolled.contains(&(student, s.course_section_id)));
    match enrolled {
        None => Decision {
            outcome: Outcome::NotEnrolled,
            reason: None,
            at: Some(t),
            detail: format!(
                "not ENROLLED in course section {}",
                candidates[0].course_section_id
            ),
            student: Some(student),
            session: Some(candidates[0].clone()),
            mark: None,
        },
        Some(s) => Decision {
            outcome: Outcome::Recorded,
            reason: None,
            at: Some(t),
            detail: String::new(),
            student: Some(student),
            mark: Some(if ts <= s.start + rules.grace {
                Mark::Present
            } else {
                Mark::Late
            }),
            session: Some((*s).clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::punch::Credential;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn rules(clock: SessionClock) -> Rules {
        Rules {
            grace: Duration::minutes(5),
            early: Duration::minutes(15),
            clock,
            tz: chrono_tz::Asia::Kolkata,
            max_future: Duration::minutes(5),
            now: at("2025-01-06T12:00:00Z"),
        }
    }

    fn punch(t: &str, who: SubjectIn) -> PunchIn {
        PunchIn {
            seq: 1,
            event_id: Uuid::nil(),
            captured_at_ms: at(t).timestamp_millis(),
            ntp_synced: true,
            offset_ms: None,
            boot_id: Uuid::nil(),
            monotonic_ms: 0,
            reader_id: "r".into(),
            reader_kind: "k".into(),
            credential: Credential::Card,
            subject: who,
            score: None,
            flags: 0,
            problem: None,
        }
    }

    fn world() -> (DeviceInfo, Lookup, Uuid) {
        let stu = Uuid::from_u128(1);
        let dev = DeviceInfo {
            id: 1,
            device_id: "d".into(),
            room: "R101".into(),
            device_type: "fingerprint".into(),
            enabled: true,
            demo: false,
        };
        let mut l = Lookup::default();
        l.students.insert("S1".into(), stu);
        // 09:00-10:00 campus time, stored CampsHub360-style as 09:00Z..10:00Z; then 10:00-11:00.
        l.sessions.insert(
            "R101".into(),
            vec![
                SessionInfo {
                    id: 10,
                    room: "R101".into(),
                    start: at("2025-01-06T09:00:00Z"),
                    end: at("2025-01-06T10:00:00Z"),
                    course_section_id: 100,
                    academic_period_id: None,
                },
                SessionInfo {
                    id: 11,
                    room: "R101".into(),
                    start: at("2025-01-06T10:00:00Z"),
                    end: at("2025-01-06T11:00:00Z"),
                    course_section_id: 200,
                    academic_period_id: None,
                },
            ],
        );
        l.enrolled.insert((stu, 100));
        (dev, l, stu)
    }

    #[test]
    fn wallclock_quirk_matches_ist_punch_to_utc_stored_session() {
        let (dev, l, stu) = world();
        // 09:03 IST is 03:33Z.
        let d = decide(
            &punch("2025-01-06T03:33:00Z", SubjectIn::Student("S1".into())),
            None,
            Some(&dev),
            &l,
            &rules(SessionClock::WallclockAsUtc),
        );
        assert_eq!(
            (d.outcome, d.mark, d.student, d.session.map(|s| s.id)),
            (Outcome::Recorded, Some(Mark::Present), Some(stu), Some(10))
        );
        // The same instant read as true UTC falls in no session.
        let d = decide(
            &punch("2025-01-06T03:33:00Z", SubjectIn::Student("S1".into())),
            None,
            Some(&dev),
            &l,
            &rules(SessionClock::Utc),
        );
        assert_eq!(d.outcome, Outcome::NoSession);
    }

    #[test]
    fn after_grace_is_late_and_at_grace_is_present() {
        let (dev, l, _) = world();
        let r = rules(SessionClock::Utc);
        let d = decide(
            &punch("2025-01-06T09:05:00Z", SubjectIn::Student("S1".into())),
            None,
            Some(&dev),
            &l,
            &r,
        );
        assert_eq!(d.mark, Some(Mark::Present));
        let d = decide(
            &punch("2025-01-06T09:05:01Z", SubjectIn::Student("S1".into())),
            None,
            Some(&dev),
            &l,
            &r,
        );
        assert_eq!(d.mark, Some(Mark::Late));
    }

    #[test]
    fn back_to_back_sessions_prefer_the_enrolled_one() {
        let (dev, l, _) = world();
        // 09:58 is in session 10 and in session 11's early window; student enrolled only in 10.
        let d = decide(
            &punch("2025-01-06T09:58:00Z", SubjectIn::Student("S1".into())),
            None,
            Some(&dev),
            &l,
            &rules(SessionClock::Utc),
        );
        assert_eq!(d.session.map(|s| s.id), Some(10));
        // 10:20 is only in session 11, where the student is not enrolled.
        let d = decide(
            &punch("2025-01-06T10:20:00Z", SubjectIn::Student("S1".into())),
            None,
            Some(&dev),
            &l,
            &rules(SessionClock::Utc),
        );
        assert_eq!(
            (d.outcome, d.session.map(|s| s.id)),
            (Outcome::NotEnrolled, Some(11))
        );
    }

    #[test]
    fn unknown_subjects_and_bad_clocks_are_classified() {
        let (dev, l, _) = world();
        let r = rules(SessionClock::Utc);
        let o = |p: PunchIn| decide(&p, None, Some(&dev), &l, &r).outcome;
        assert_eq!(
            o(punch(
                "2025-01-06T09:01:00Z",
                SubjectIn::UnknownCard([1; 32])
            )),
            Outcome::UnknownCredential
        );
        assert_eq!(
            o(punch("2025-01-06T09:01:00Z", SubjectIn::UnknownFinger)),
            Outcome::UnknownCredential
        );
        assert_eq!(
            o(punch(
                "2025-01-06T09:01:00Z",
                SubjectIn::Student("nobody".into())
            )),
            Outcome::UnknownCredential
        );
        assert_eq!(
            o(punch(
                "2025-01-06T13:00:00Z",
                SubjectIn::Student("S1".into())
            )),
            Outcome::Held
        );
        let mut unset = punch("1970-01-01T00:10:00Z", SubjectIn::Student("S1".into()));
        unset.ntp_synced = false;
        assert_eq!(o(unset), Outcome::Held);
        assert_eq!(
            o(punch(
                "2025-01-06T07:00:00Z",
                SubjectIn::Student("S1".into())
            )),
            Outcome::NoSession
        );
    }

    #[test]
    fn device_without_room_is_rejected() {
        let (mut dev, l, _) = world();
        dev.room.clear();
        let d = decide(
            &punch("2025-01-06T09:01:00Z", SubjectIn::Student("S1".into())),
            None,
            Some(&dev),
            &l,
            &rules(SessionClock::Utc),
        );
        assert_eq!(d.outcome, Outcome::Rejected);
    }
}
