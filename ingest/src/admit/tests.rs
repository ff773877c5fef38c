use super::*;
use crate::punch::{Credential, SubjectIn};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

const BOOT: Uuid = Uuid::from_u128(7);

fn clock() -> Clock {
    Clock {
        now: at("2025-01-06T12:00:00Z"),
        max_future: Duration::minutes(5),
    }
}

fn device() -> DeviceInfo {
    DeviceInfo {
        id: 1,
        device_id: "d".into(),
        room: "R101".into(),
        device_type: "fingerprint".into(),
        enabled: true,
        demo: false,
    }
}

fn punch(t: &str, monotonic_ms: u64) -> PunchIn {
    PunchIn {
        seq: 1,
        event_id: Uuid::nil(),
        captured_at_ms: at(t).timestamp_millis(),
        ntp_synced: true,
        offset_ms: None,
        boot_id: BOOT,
        monotonic_ms,
        reader_id: "r".into(),
        reader_kind: "k".into(),
        credential: Credential::Card,
        subject: SubjectIn::Student("S1".into()),
        score: None,
        flags: 0,
        problem: None,
    }
}

fn refused(r: Result<Admitted<'_>, Refused>) -> (bool, Reason) {
    match r {
        Err(r) => (r.held, r.reason),
        Ok(a) => panic!("admitted at {}", a.at),
    }
}

#[test]
fn a_good_punch_counts_at_its_stamped_time() {
    let d = device();
    let a = admit(
        &punch("2025-01-06T09:01:00Z", 5),
        None,
        Some(&d),
        &DeviceFacts::default(),
        clock(),
    )
    .expect("admitted");
    assert_eq!((a.at, a.note), (at("2025-01-06T09:01:00Z"), None));
}

#[test]
fn refusals_come_in_the_documented_order() {
    let f = DeviceFacts::default();
    let mut p = punch("2025-01-06T09:01:00Z", 5);
    p.problem = Some("student id".into());
    // A database refusal wins over everything, then the contract, then the device.
    assert_eq!(
        refused(admit(&p, Some("22021"), None, &f, clock())),
        (false, Reason::DatabaseRejected)
    );
    assert_eq!(
        refused(admit(&p, None, None, &f, clock())),
        (false, Reason::InvalidPunch)
    );
    p.problem = None;
    assert_eq!(
        refused(admit(&p, None, None, &f, clock())),
        (false, Reason::UnknownDevice)
    );
}

#[test]
fn a_clock_ahead_is_corrected_by_a_heartbeat_of_the_same_boot() {
    let d = device();
    // The device's wall clock says 2031; its monotonic clock says the punch was 90 s before a
    // heartbeat the centre received at 11:59.
    let p = punch("2031-01-01T00:00:00Z", 1_000_000);
    let mut f = DeviceFacts::default();
    f.anchors.insert(
        ("d".into(), BOOT),
        Anchor {
            monotonic_ms: 1_090_000,
            received_at: at("2025-01-06T11:59:00Z"),
        },
    );
    let a = admit(&p, None, Some(&d), &f, clock()).expect("corrected");
    assert_eq!(a.at, at("2025-01-06T11:57:30Z"));
    assert!(a.note.expect("noted").contains("corrected"));
    // The same punch without that heartbeat, or with one of another boot, is held.
    assert_eq!(
        refused(admit(&p, None, Some(&d), &DeviceFacts::default(), clock())),
        (true, Reason::ClockAhead)
    );
    let mut other = DeviceFacts::default();
    other.anchors.insert(
        ("d".into(), Uuid::from_u128(8)),
        Anchor {
            monotonic_ms: 1_090_000,
            received_at: at("2025-01-06T11:59:00Z"),
        },
    );
    assert_eq!(
        refused(admit(&p, None, Some(&d), &other, clock())),
        (true, Reason::ClockAhead)
    );
}

#[test]
fn a_correction_that_lands_in_the_future_is_not_believed() {
    let d = device();
    // A punch taken 10 minutes AFTER the heartbeat (monotonic larger) cannot be 10 minutes in
    // the future of now: the anchor is stale or wrong, so hold it.
    let p = punch("2031-01-01T00:00:00Z", 1_600_000);
    let mut f = DeviceFacts::default();
    f.anchors.insert(
        ("d".into(), BOOT),
        Anchor {
            monotonic_ms: 1_000_000,
            received_at: at("2025-01-06T12:00:00Z"),
        },
    );
    assert_eq!(
        refused(admit(&p, None, Some(&d), &f, clock())),
        (true, Reason::ClockAhead)
    );
    // Exactly at the skew limit it is believed.
    let p = punch("2031-01-01T00:00:00Z", 1_300_000);
    assert_eq!(
        admit(&p, None, Some(&d), &f, clock())
            .expect("at the limit")
            .at,
        at("2025-01-06T12:05:00Z")
    );
}

#[test]
fn an_unset_clock_is_corrected_or_held() {
    let d = device();
    let mut p = punch("1970-01-01T00:10:00Z", 600_000);
    p.ntp_synced = false;
    assert_eq!(
        refused(admit(&p, None, Some(&d), &DeviceFacts::default(), clock())),
        (true, Reason::ClockUnset)
    );
    let mut f = DeviceFacts::default();
    f.anchors.insert(
        ("d".into(), BOOT),
        Anchor {
            monotonic_ms: 660_000,
            received_at: at("2025-01-06T11:00:00Z"),
        },
    );
    assert_eq!(
        admit(&p, None, Some(&d), &f, clock())
            .expect("corrected")
            .at,
        at("2025-01-06T10:59:00Z")
    );
    // An unsynced clock with a known offset is corrected by it, not held.
    p.offset_ms = Some(-(at("2025-01-06T09:00:00Z").timestamp_millis() - 600_000));
    assert_eq!(
        admit(&p, None, Some(&d), &DeviceFacts::default(), clock())
            .expect("offset known")
            .at,
        at("2025-01-06T09:00:00Z")
    );
}

#[test]
fn a_device_is_judged_by_its_state_when_the_punch_was_captured() {
    let mut d = device();
    let mut f = DeviceFacts::default();
    // Enabled since always, disabled at 09:00, enabled again at 11:00 (now).
    f.enablement.insert(
        "d".into(),
        vec![
            (None, true),
            (Some(at("2025-01-06T09:00:00Z")), false),
            (Some(at("2025-01-06T11:00:00Z")), true),
        ],
    );
    let ok = |t: &str, d: &DeviceInfo| admit(&punch(t, 5), None, Some(d), &f, clock()).is_ok();
    assert!(ok("2025-01-06T08:59:59Z", &d));
    assert!(!ok("2025-01-06T09:00:00Z", &d));
    assert!(!ok("2025-01-06T10:59:59Z", &d));
    assert!(ok("2025-01-06T11:00:00Z", &d));
    assert_eq!(
        refused(admit(
            &punch("2025-01-06T10:00:00Z", 5),
            None,
            Some(&d),
            &f,
            clock()
        )),
        (false, Reason::DisabledDevice)
    );
    // Without a history, the state now decides.
    d.enabled = false;
    assert!(!ok_without_history(&d));
    d.enabled = true;
    assert!(ok_without_history(&d));
}

fn ok_without_history(d: &DeviceInfo) -> bool {
    admit(
        &punch("2025-01-06T10:00:00Z", 5),
        None,
        Some(d),
        &DeviceFacts::default(),
        clock(),
    )
    .is_ok()
}

#[test]
fn simulated_punches_count_only_on_demo_devices() {
    let mut d = device();
    let mut p = punch("2025-01-06T09:01:00Z", 5);
    p.flags = rollcall_protocol::v1::flags::SIMULATED;
    let f = DeviceFacts::default();
    assert_eq!(
        refused(admit(&p, None, Some(&d), &f, clock())),
        (false, Reason::Simulated)
    );
    d.demo = true;
    assert!(admit(&p, None, Some(&d), &f, clock()).is_ok());
    // Other flags do not matter.
    d.demo = false;
    p.flags = rollcall_protocol::v1::flags::CLOCK_UNSYNCED;
    assert!(admit(&p, None, Some(&d), &f, clock()).is_ok());
}

#[test]
fn every_reason_has_a_distinct_code_and_a_remedy() {
    let all = [
        Reason::DatabaseRejected,
        Reason::InvalidPunch,
        Reason::UnknownDevice,
        Reason::ClockAhead,
        Reason::ClockUnset,
        Reason::DisabledDevice,
        Reason::Simulated,
        Reason::DeviceNoRoom,
    ];
    let codes: std::collections::HashSet<&str> = all.iter().map(|r| r.as_str()).collect();
    assert_eq!(codes.len(), all.len());
    for r in all {
        assert!(rollcall_protocol::v1::valid_id(r.as_str()), "{r:?}");
        assert!(r.remedy().len() > 20, "{r:?}");
    }
}

#[test]
fn a_capture_time_at_the_skew_limit_is_trusted_and_one_ms_past_it_is_held() {
    let d = device();
    let f = DeviceFacts::default();
    // now 12:00, limit 5 min ahead.
    for t in [
        "2025-01-06T11:59:00Z",
        "2025-01-06T12:04:00Z",
        "2025-01-06T12:05:00Z",
    ] {
        let a = admit(&punch(t, 5), None, Some(&d), &f, clock()).expect(t);
        assert_eq!((a.at, a.note), (at(t), None));
    }
    let r = admit(
        &punch("2025-01-06T12:05:00.001Z", 5),
        None,
        Some(&d),
        &f,
        clock(),
    )
    .expect_err("one ms past the limit");
    assert_eq!((r.held, r.reason), (true, Reason::ClockAhead));
    assert!(r.detail.contains("is 300 s ahead"), "{}", r.detail);
}

#[test]
fn only_an_unsynced_clock_without_an_offset_before_2020_is_unset() {
    let d = device();
    let f = DeviceFacts::default();
    let with = |t: &str, synced: bool| {
        let mut p = punch(t, 5);
        p.ntp_synced = synced;
        admit(&p, None, Some(&d), &f, clock())
    };
    // 2020-01-01T00:00:00Z is the first instant a clock counts as set.
    assert!(with("2020-01-01T00:00:00Z", false).is_ok());
    let r = with("2019-12-31T23:59:59Z", false).expect_err("unset");
    assert_eq!((r.held, r.reason), (true, Reason::ClockUnset));
    assert!(r.detail.contains("not set"), "{}", r.detail);
    // An NTP-synced clock is believed whatever year it says.
    assert_eq!(
        with("2019-12-31T23:59:59Z", true).expect("synced").at,
        at("2019-12-31T23:59:59Z")
    );
}
