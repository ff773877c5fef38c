//! The attendance rules of `decide` at their edges: the session window to the second, the
//! query's search window, and the spellings the ledger and `attendance_record` store. Plain
//! values, no database.

use chrono::{DateTime, Duration, Utc};
use rollcall_ingest::config::SessionClock;
use rollcall_ingest::decide::{DeviceInfo, Lookup, Mark, Outcome, Rules, SessionInfo, decide};
use rollcall_ingest::punch::{Credential, PunchIn, SubjectIn};
use uuid::Uuid;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Grace 5 min, early arrival 15 min, Kolkata, now 12:00Z.
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

fn punch(t: DateTime<Utc>) -> PunchIn {
    PunchIn {
        seq: 1,
        event_id: Uuid::nil(),
        captured_at_ms: t.timestamp_millis(),
        ntp_synced: true,
        offset_ms: None,
        boot_id: Uuid::nil(),
        monotonic_ms: 0,
        reader_id: "r".into(),
        reader_kind: "k".into(),
        credential: Credential::Card,
        subject: SubjectIn::Student("S1".into()),
        score: None,
        flags: 0,
        problem: None,
    }
}

fn device() -> DeviceInfo {
    DeviceInfo {
        id: 1,
        device_id: "d".into(),
        room: "R101".into(),
        device_type: "card".into(),
        enabled: true,
        demo: false,
    }
}

/// One session, 09:00-10:00 (true UTC instants), in R101; S1 enrolled in its section.
fn lookup() -> Lookup {
    let student = Uuid::from_u128(1);
    let mut l = Lookup::default();
    l.students.insert("S1".into(), student);
    l.sessions.insert(
        "R101".into(),
        vec![SessionInfo {
            id: 10,
            room: "R101".into(),
            start: at("2025-01-06T09:00:00Z"),
            end: at("2025-01-06T10:00:00Z"),
            course_section_id: 100,
            academic_period_id: None,
        }],
    );
    l.enrolled.insert((student, 100));
    l
}

fn outcome_at(t: &str, r: &Rules) -> (Outcome, Option<Mark>) {
    let d = decide(&punch(at(t)), None, Some(&device()), &lookup(), r);
    (d.outcome, d.mark)
}

#[test]
fn outcomes_and_marks_are_spelled_as_the_ledger_stores_them() {
    let spelled: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
    assert_eq!(
        spelled,
        [
            "recorded",
            "duplicate",
            "unknown_credential",
            "no_session",
            "not_enrolled",
            "rejected",
            "held"
        ]
    );
    assert_eq!(Mark::Present.as_str(), "present");
    assert_eq!(Mark::Late.as_str(), "late");
}

#[test]
fn a_punch_counts_from_the_early_window_to_grace_after_the_end_and_not_a_second_outside() {
    let r = rules(SessionClock::Utc);
    // 15 min early arrival before 09:00.
    assert_eq!(
        outcome_at("2025-01-06T08:45:00Z", &r),
        (Outcome::Recorded, Some(Mark::Present))
    );
    assert_eq!(
        outcome_at("2025-01-06T08:44:59Z", &r),
        (Outcome::NoSession, None)
    );
    // 5 min grace after the 10:00 end.
    assert_eq!(
        outcome_at("2025-01-06T10:05:00Z", &r),
        (Outcome::Recorded, Some(Mark::Late))
    );
    assert_eq!(
        outcome_at("2025-01-06T10:05:01Z", &r),
        (Outcome::NoSession, None)
    );
}

#[test]
fn with_an_early_window_shorter_than_grace_the_grace_opens_the_session() {
    let r = Rules {
        early: Duration::minutes(2),
        ..rules(SessionClock::Utc)
    };
    assert_eq!(
        outcome_at("2025-01-06T08:55:00Z", &r),
        (Outcome::Recorded, Some(Mark::Present))
    );
    assert_eq!(
        outcome_at("2025-01-06T08:54:59Z", &r),
        (Outcome::NoSession, None)
    );
}

#[test]
fn the_search_window_reaches_grace_back_and_the_larger_of_early_and_grace_ahead() {
    let r = rules(SessionClock::Utc);
    assert_eq!(
        r.search_window(at("2025-01-06T09:00:00Z")),
        (at("2025-01-06T08:55:00Z"), at("2025-01-06T09:15:00Z"))
    );
    let short_early = Rules {
        early: Duration::minutes(2),
        ..rules(SessionClock::Utc)
    };
    assert_eq!(
        short_early.search_window(at("2025-01-06T09:00:00Z")),
        (at("2025-01-06T08:55:00Z"), at("2025-01-06T09:05:00Z"))
    );
    // On CampsHub360's wall clock as UTC, 03:30Z is 09:00 in Kolkata, stored as 09:00Z.
    assert_eq!(
        rules(SessionClock::WallclockAsUtc).search_window(at("2025-01-06T03:30:00Z")),
        (at("2025-01-06T08:55:00Z"), at("2025-01-06T09:15:00Z"))
    );
}
