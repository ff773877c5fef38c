use super::*;
use chrono::NaiveDate;

fn nt(h: u32, m: u32, s: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2025, 1, 6)
        .unwrap()
        .and_hms_opt(h, m, s)
        .unwrap()
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn ledger_key_and_ids_are_deterministic_per_terminal_and_seq() {
    assert_eq!(event_id("CKJ1", 7), event_id("CKJ1", 7));
    assert_ne!(event_id("CKJ1", 7), event_id("CKJ1", 8));
    assert_ne!(event_id("CKJ1", 7), event_id("CKJ2", 7));
    assert_eq!(boot_id("CKJ1"), boot_id("CKJ1"));
    assert_ne!(boot_id("CKJ1"), boot_id("CKJ2"));
    assert_eq!(event_id("CKJ1", 7).get_version_num(), 8);
}

#[test]
fn record_becomes_a_punch_in_campus_time() {
    let r = AttRecord {
        pin: "R001".into(),
        time: nt(9, 2, 0),
        status: Some(0),
        verify: Some(4),
        workcode: "0".into(),
    };
    let p = punch("CKJ1", 3, &r, "R001".into(), chrono_tz::Asia::Kolkata);
    assert_eq!(
        p.captured_at_ms,
        utc("2025-01-06T03:32:00Z").timestamp_millis()
    );
    assert_eq!(p.credential, Credential::Card);
    assert_eq!(p.reader_kind, "zkteco/verify=4/status=0");
    assert_eq!(p.subject, SubjectIn::Student("R001".into()));
    assert!(!p.ntp_synced && p.offset_ms.is_none() && p.problem.is_none());
}

#[test]
fn daylight_saving_gap_and_overlap_map_to_one_instant() {
    let ny = chrono_tz::America::New_York;
    let d = |m, day, h, min| {
        NaiveDate::from_ymd_opt(2025, m, day)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap()
    };
    // 02:30 does not exist on 2025-03-09: taken as if the clock had not moved (EST).
    assert_eq!(
        local_instant(ny, d(3, 9, 2, 30)),
        Some(utc("2025-03-09T07:30:00Z"))
    );
    // 01:30 happens twice on 2025-11-02: the first (EDT).
    assert_eq!(
        local_instant(ny, d(11, 2, 1, 30)),
        Some(utc("2025-11-02T05:30:00Z"))
    );
}

#[test]
fn unknown_and_disabled_terminals_are_refused() {
    let dev = DeviceInfo {
        id: 1,
        device_id: "CKJ1".into(),
        room: "R101".into(),
        device_type: "fingerprint".into(),
        enabled: true,
        demo: false,
    };
    assert_eq!(refusal(None), Some(Reason::UnknownDevice));
    assert_eq!(refusal(Some(&dev)), None);
    let off = DeviceInfo {
        enabled: false,
        ..dev
    };
    assert_eq!(refusal(Some(&off)), Some(Reason::DisabledDevice));
}

#[test]
fn clock_offset_is_measured_from_live_uploads_and_a_jump_is_flagged() {
    let t0 = utc("2025-01-06T03:30:00Z");
    let (s, a) = clock_sample(None, t0 - Duration::seconds(2), t0, true);
    assert_eq!(s.map(|s| s.offset_s), Some(-2));
    assert!(a.is_none());
    // A backlog measures nothing.
    let t1 = t0 + Duration::minutes(10);
    let (s2, a) = clock_sample(s, t1 - Duration::hours(3), t1, false);
    assert_eq!((s2, a), (s, None));
    // An hour ahead, even in a backlog, is a jump.
    let (s3, a) = clock_sample(s2, t1 + Duration::hours(1), t1, false);
    assert_eq!(s3.map(|s| s.offset_s), Some(3600));
    assert!(a.unwrap().contains("jumped"));
    // Small drift is not.
    let (_, a) = clock_sample(s3, t1 + Duration::seconds(3630), t1, true);
    assert!(a.is_none());
}

#[test]
fn silent_loss_is_flagged_only_when_every_old_record_was_deleted() {
    let base = LogBaseline {
        on_terminal: 100,
        stored: 100,
    };
    // Normal: 10 new records, nothing deleted.
    assert!(silent_loss(base, 110, 110).is_none());
    // Full log deleting its oldest 50 while in contact: the old ones were stored.
    assert!(silent_loss(base, 60, 110).is_none());
    // Outage: it holds only what it just sent, having dropped all 100 old ones (and maybe more).
    assert!(silent_loss(base, 100, 200).is_some());
    // A fresh terminal cannot be judged.
    let fresh = LogBaseline {
        on_terminal: 0,
        stored: 0,
    };
    assert!(silent_loss(fresh, 5, 5).is_none());
}

#[test]
fn commands_are_written_as_terminals_read_them() {
    let q = Command::QueryAttLog {
        from: nt(8, 0, 0),
        to: nt(10, 0, 0),
    };
    assert_eq!(
        q.text().unwrap(),
        "DATA QUERY ATTLOG StartTime=2025-01-06 08:00:00\tEndTime=2025-01-06 10:00:00"
    );
    let u = Command::PushUser {
        pin: "R001".into(),
        name: "Asha\tRao\n".into(),
        card: "0012345".into(),
    };
    assert_eq!(
        u.text().unwrap(),
        "DATA UPDATE USERINFO PIN=R001\tName=AshaRao\tPri=0\tCard=0012345"
    );
    assert!(
        Command::PushUser {
            pin: "a b".into(),
            name: String::new(),
            card: String::new()
        }
        .text()
        .is_err()
    );
    assert_eq!(Command::Reboot.text().unwrap(), "REBOOT");
}
