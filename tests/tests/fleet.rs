//! The fleet benchmark's smallest variant (issue 11; see `rollcall_tests::fleet`): five simulated
//! gateways tap 200 students in at the start of a period compressed 60 times (ten minutes in
//! ten seconds) through Mosquitto and two rollcall-ingest replicas sharing the subscription;
//! every punch must be acked and be in the ledger exactly once as `recorded`, its student
//! `present`. It keeps the benchmark's set-up honest; the figures are the benchmark's
//! (`cargo run --release -p rollcall-tests --example fleet`), never asserted here.

use rollcall_tests::fleet::{self, FleetConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_fleet_at_the_start_of_a_period_records_every_punch_once() {
    let cfg = FleetConfig {
        gateways: 5,
        students: 200,
        replicas: 2,
        time_scale: 60.0,
        ..FleetConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let r = fleet::run(&cfg, dir.path()).await.expect("the fleet run");
    assert_eq!(r.punches, 200);
    assert_eq!(r.acked, 200, "every punch acked: {r:?}");
    assert_eq!(
        r.ledger,
        (200, 200, 200),
        "(ledger rows, recorded, present or late): {r:?}"
    );
}

/// The arrival curve: every student taps once, in the period, most of them in its first half,
/// and one reader never serves two students within a second.
#[test]
fn most_of_the_campus_taps_in_the_first_half_of_the_period() {
    let cfg = FleetConfig {
        gateways: 10,
        students: 1_000,
        ..FleetConfig::default()
    };
    let plans = fleet::plans(&cfg);
    let taps: Vec<_> = plans.iter().flat_map(|p| p.taps.iter().copied()).collect();
    assert_eq!(taps.len(), 1_000);
    let mut students: Vec<_> = plans.iter().flat_map(|p| p.students.clone()).collect();
    students.sort();
    students.dedup();
    assert_eq!(students.len(), 1_000, "each student in one room");
    let half = cfg.period / 2;
    let early = taps.iter().filter(|t| **t < half).count();
    assert!(early > 800, "{early} of 1000 in the first half");
    for p in &plans {
        assert!(
            p.taps
                .windows(2)
                .all(|w| w[1] - w[0] >= std::time::Duration::from_secs(1))
        );
        assert!(
            p.taps
                .last()
                .is_some_and(|t| *t < cfg.period + std::time::Duration::from_secs(60))
        );
    }
}
