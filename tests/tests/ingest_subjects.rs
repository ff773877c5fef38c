//! Who a punch names (issue 8): a student subject is the CampsHub360 student's
//! `students_student.id` (a UUID, hyphenated, in any case) or its `roll_number`; the gateway's
//! roster may hold either. Both forms travel end to end, device -> Mosquitto -> ingest ->
//! PostgreSQL, on both schemas, and count for the same student.

mod ingest_common;

use ingest_common::device::Device;
use ingest_common::service::{config, start};
use ingest_common::*;
use rollcall_ingest::config::SessionClock;
use rollcall_protocol::v1;
use rollcall_tests::mosquitto::Mosquitto;
use std::time::Duration;

both_schemas!(a_student_is_named_by_id_or_by_roll_number);

async fn a_student_is_named_by_id_or_by_roll_number(db: Db) {
    let broker = Mosquitto::start().unwrap();
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    let ingest = start(&config(&db.url, &broker.url(), "subjects", false));
    let mut dev = Device::connect(broker.port(), DEVICE).await;
    let named = |s: &str| v1::Subject::Student(s.to_string());
    let batch = v1::PunchBatch {
        device_id: DEVICE.into(),
        epoch: 3,
        punches: vec![
            // S0 by its id, as the protocol documents it.
            punch(1, ist("09:01:00"), named(&c.students[0].to_string())),
            // S1 by its roll number, as a roster written from the registrar's list holds it.
            punch(2, ist("09:02:00"), named("R001")),
            // S0 again, by roll number and by its id in capitals: the same student, once.
            punch(3, ist("09:03:00"), named("R000")),
            punch(
                4,
                ist("09:04:00"),
                named(&c.students[0].to_string().to_uppercase()),
            ),
            // Neither an id nor a roll number of any student.
            punch(5, ist("09:05:00"), named("2024CS999")),
        ],
    };
    assert_eq!(
        dev.deliver(
            std::slice::from_ref(&batch),
            Duration::from_secs(2),
            Duration::from_secs(30)
        )
        .await,
        5
    );
    let (mark, at, _) = record(&db.client, c.session, c.students[0]).await.unwrap();
    assert_eq!((mark.as_str(), at), ("present", ist("09:01:00")));
    let (mark, at, _) = record(&db.client, c.session, c.students[1]).await.unwrap();
    assert_eq!((mark.as_str(), at), ("present", ist("09:02:00")));
    let mut outcomes = Vec::new();
    for seq in 1..=5 {
        outcomes.push(outcome(&db.client, DEVICE, 3, seq).await);
    }
    assert_eq!(
        outcomes,
        [
            "recorded",
            "recorded",
            "duplicate",
            "duplicate",
            "unknown_credential"
        ]
    );
    // The ledger keeps the student each punch resolved to, whichever form named them.
    let resolved: Vec<Option<uuid::Uuid>> = db
        .client
        .query(
            "SELECT student_id FROM rollcall.ledger WHERE device_id = $1 AND epoch = 3 ORDER BY seq",
            &[&DEVICE],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (s0, s1) = (Some(c.students[0]), Some(c.students[1]));
    assert_eq!(resolved, [s0, s1, s0, s0, None]);
    ingest.shutdown().await;
}
