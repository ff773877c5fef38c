//! Model test of the batch writer against a real PostgreSQL.

mod ingest_common;

use ingest_common::*;
use rollcall_ingest::config::SessionClock;

const WALL: SessionClock = SessionClock::WallclockAsUtc;
// Any order of delivery, with any replays, ends in the same state as delivering once in
// order: every seq in the ledger once, the ack at the last seq, one record per student with
// the earliest punch's time, one audit row per change.
use proptest::prelude::*;
use std::collections::HashMap;

fn scenario() -> impl Strategy<Value = (Vec<usize>, Vec<(usize, u32)>)> {
    // 8 batches of 3 punches: (student index, minute offset); then a delivery order over
    // batch indexes with replays (each batch at least once).
    let punches = proptest::collection::vec((0usize..2, 0u32..30), 24);
    let order = proptest::collection::vec(0usize..8, 0..12);
    (order, punches).prop_map(|(extra, punches)| {
        let mut order: Vec<usize> = (0..8).chain(extra).collect();
        // A deterministic shuffle from the generated extras.
        let k = order.len();
        for i in 0..k {
            let j = (i * 7 + order[i] * 3) % k;
            order.swap(i, j);
        }
        (order, punches)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
    #[test]
    fn any_delivery_order_with_replays_converges((order, punches) in scenario()) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut db = ingest_common::db(Schema::Standalone).await.unwrap();
            let c = campus(&db.client, WALL).await;
            let batch = |b: usize| {
                env(DEVICE, 11, (0..3).map(|i| {
                    let seq = b * 3 + i;
                    let (s, m) = punches[seq];
                    punch(seq as u64 + 1, ist("09:00:00") + chrono::Duration::minutes(m as i64), student(c.students[s]))
                }).collect())
            };
            let mut last_ack = 0;
            for &b in &order {
                let r = write(&mut db.client, &[batch(b)], WALL).await;
                let ack = r.acks.first().map(|a| a.up_to_seq).unwrap_or(0);
                assert!(ack >= last_ack, "acks never go back");
                last_ack = ack;
            }
            assert_eq!(last_ack, 24);
            assert_eq!(count(&db.client, "SELECT count(*) FROM rollcall.ledger").await, 24);
            let mut earliest: HashMap<usize, u32> = HashMap::new();
            for (s, m) in &punches {
                let e = earliest.entry(*s).or_insert(*m);
                *e = (*e).min(*m);
            }
            for (s, m) in earliest {
                let (mark, at, _) = record(&db.client, c.session, c.students[s]).await.unwrap();
                assert_eq!(at, ist("09:00:00") + chrono::Duration::minutes(m as i64));
                assert_eq!(mark, if m <= 5 { "present" } else { "late" });
            }
            let changes = count(&db.client, "SELECT count(*) FROM rollcall.ledger WHERE outcome = 'recorded'").await;
            assert_eq!(count(&db.client, "SELECT count(*) FROM attendance_audit_log").await, changes);
            drop(db);
        });
    }
}
