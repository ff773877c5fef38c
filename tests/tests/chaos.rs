//! The chaos soak's short variant (issue 11; see `rollcall_tests::chaos`): a few minutes of taps
//! on three gateways with every kind of fault at random moments from a printed seed, failing on
//! any lost or duplicated punch. `ROLLCALL_CHAOS_SEED=<seed>` reruns a seed. The long variant is
//! `cargo run --release -p rollcall-tests --example chaos -- --minutes 60 --faults 200`.

use std::io::{Seek, SeekFrom, Write};

use rollcall_tests::chaos::{self, SoakConfig, powerfs::PowerFs};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_soak_loses_and_duplicates_nothing() {
    let verdict = chaos::run(SoakConfig::short(chaos::seed_from_env_or_clock()))
        .await
        .expect("the soak's harness");
    println!("{verdict}");
    assert!(verdict.passed(), "{verdict}");
    assert!(verdict.accepted >= 2_000, "too few taps: {verdict}");
    if verdict.faults.get("clock_step").copied().unwrap_or(0) > 0 {
        assert!(verdict.skewed > 0, "clock steps left no trace: {verdict}");
    }
    for kind in [
        "kill9_gateway",
        "kill9_ingest",
        "power_cut",
        "broker_outage",
        "postgres_outage",
    ] {
        assert!(
            verdict.faults.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} in this run: {verdict}"
        );
    }
}

/// The power-loss file system itself: what was fsync'd survives a cut, what was only written
/// does not, and a file created but never synced comes back empty.
#[test]
fn power_cut_keeps_synced_writes_and_drops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let mut fs = PowerFs::mount(&dir.path().join("disk"), &mnt).unwrap();
    {
        let mut f = std::fs::File::create(mnt.join("journal")).unwrap();
        f.write_all(&[1u8; 10_000]).unwrap();
        f.sync_data().unwrap();
        f.seek(SeekFrom::Start(4_096)).unwrap();
        f.write_all(&[2u8; 100]).unwrap();
        f.write_all(&[3u8; 20_000]).unwrap(); // extends the file, unsynced
        assert_eq!(std::fs::read(mnt.join("journal")).unwrap().len(), 24_196);
        let mut g = std::fs::File::create(mnt.join("never-synced")).unwrap();
        g.write_all(b"gone").unwrap();
    }
    assert!(fs.unsynced() > 0);
    let cut = fs.cut().unwrap();
    assert!(cut.dropped_bytes >= 20_000, "{cut:?}");
    assert_eq!(
        std::fs::read(mnt.join("journal")).unwrap(),
        vec![1u8; 10_000],
        "the synced contents, nothing after"
    );
    assert_eq!(std::fs::read(mnt.join("never-synced")).unwrap(), b"");
    assert_eq!(fs.unsynced(), 0);
}
