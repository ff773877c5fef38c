//! `rollcall journal salvage` against the real rollcalld and a real Mosquitto: punches taken
//! while the broker is down stay unacked, the journal is damaged so rollcalld refuses it, and
//! salvage gets every unacked punch back with its (device, epoch, seq): written out as CBOR
//! batches, and published as the device so the stand-in centre counts each once, however often
//! it is published.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use rollcall_protocol::v1::PunchBatch;
use rollcall_tests::acker::Acker;
use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::rollcalld::{GatewayOptions, Rollcalld};

const ROLLCALL: &str = env!("CARGO_BIN_EXE_rollcall");
const DEVICE: &str = "room-101";

fn salvage(file: &Path, config: &Path, extra: &[&str]) -> anyhow::Result<Output> {
    Ok(std::process::Command::new(ROLLCALL)
        .args(["journal", "salvage"])
        .arg(file)
        .arg("-c")
        .arg(config)
        .args(extra)
        .output()?)
}

fn text(out: &Output) -> String {
    format!(
        "{}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn tap(gw: &Rollcalld, uid: &str) -> anyhow::Result<u64> {
    let reply = gw.command(&format!("card door-card {uid}")).await?;
    rollcall_tests::rollcalld::parse_reply(&reply)
        .and_then(|r| r.seq)
        .ok_or_else(|| anyhow::anyhow!("not stored: {reply}"))
}

fn epoch_of(status: &str) -> anyhow::Result<u64> {
    status
        .split_whitespace()
        .find_map(|w| w.strip_prefix("epoch="))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no epoch in {status:?}"))
}

/// Runs rollcalld on `config`, which must refuse to start: its stderr.
fn refused_start(config: &Path) -> anyhow::Result<String> {
    let mut child = std::process::Command::new(rollcall_tests::binaries::rollcalld())
        .args(["run", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() > deadline {
            child.kill()?;
            anyhow::bail!("rollcalld kept running on a damaged journal");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        !out.status.success(),
        "rollcalld exited 0 on a damaged journal"
    );
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salvage_recovers_every_unacked_punch_of_a_damaged_journal_and_none_counts_twice()
-> anyhow::Result<()> {
    let mut broker = Mosquitto::start()?;
    let acker = Acker::start(broker.port()).await?;
    let dir = tempfile::tempdir()?;
    let config = GatewayOptions::new(broker.port()).write(dir.path())?;
    let journal = dir.path().join("state").join("journal.redb");
    let mut gw = Rollcalld::start(&rollcall_tests::binaries::rollcalld(), &config).await?;
    let epoch = epoch_of(&gw.command("status").await?)?;

    // Three punches reach the centre and are acked; then the broker goes down and seven more
    // stay in the journal.
    for _ in 0..3 {
        tap(&gw, "0000000001").await?;
    }
    gw.wait_journal((3, 3, 0)).await?;
    broker.stop();
    for i in 0..7 {
        let uid = if i % 2 == 0 {
            "0000000001"
        } else {
            "0000000002"
        };
        tap(&gw, uid).await?;
    }
    gw.wait_journal((10, 3, 7)).await?;
    gw.terminate()?;
    drop(gw);

    // Damage: the file header (redb's magic and its pointers to the table roots) is destroyed;
    // the punches' pages are untouched.
    let mut bytes = std::fs::read(&journal)?;
    bytes[..512].fill(0);
    std::fs::write(&journal, &bytes)?;
    let refusal = refused_start(&config)?;
    assert!(refusal.contains("unreadable"), "{refusal}");
    let aside = dir.path().join("journal.redb.corrupt");
    std::fs::rename(&journal, &aside)?;
    let damaged = std::fs::read(&aside)?;

    // --out: one batch file with seqs 4..=10 of the old epoch, and a summary.
    let out_dir = dir.path().join("salvaged");
    let out = salvage(
        &aside,
        &config,
        &["--out", out_dir.to_str().unwrap_or_default()],
    )?;
    assert!(out.status.success(), "{}", text(&out));
    let batch_file = out_dir.join(format!("{DEVICE}-{epoch}-4-10.cbor"));
    let batch = PunchBatch::decode(&std::fs::read(&batch_file)?)?;
    assert_eq!(batch.device_id, DEVICE);
    assert_eq!(batch.epoch, epoch);
    assert_eq!(
        batch.punches.iter().map(|p| p.seq).collect::<Vec<_>>(),
        (4..=10).collect::<Vec<_>>()
    );
    let summary = std::fs::read_to_string(out_dir.join(format!("{DEVICE}-{epoch}-summary.txt")))?;
    assert!(
        summary.contains("recovered:      7 unacknowledged punches (seq 4..=10)"),
        "{summary}"
    );
    assert!(summary.contains("missing:        none"), "{summary}");
    assert_eq!(
        std::fs::read(&aside)?,
        damaged,
        "salvage only reads the file"
    );

    // --publish, twice: the centre has every seq of the epoch once.
    broker.restart()?;
    for round in 0..2 {
        let out = salvage(&aside, &config, &["--publish", "--wait", "60"])?;
        assert!(out.status.success(), "round {round}: {}", text(&out));
        assert!(
            text(&out).contains("acknowledged every punch up to seq 10"),
            "{}",
            text(&out)
        );
    }
    acker
        .wait_for(
            "seqs 1..=10 of the old epoch",
            Duration::from_secs(30),
            |s| s.contiguous(DEVICE, epoch) == 10,
        )
        .await?;
    let seen = acker.seen();
    let recorded = &seen.punches[&(DEVICE.to_owned(), epoch)];
    assert_eq!(
        recorded.keys().copied().collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    for p in &batch.punches {
        assert_eq!(
            recorded[&p.seq], *p,
            "seq {} arrived as it was journaled",
            p.seq
        );
    }
    assert!(
        seen.duplicates >= 7,
        "the second publish was deduped, not recounted"
    );
    Ok(())
}

#[test]
fn a_file_that_is_no_journal_gives_a_clear_error_and_no_panic() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = GatewayOptions::new(1).write(dir.path())?;
    let junk = dir.path().join("junk.redb");
    std::fs::write(&junk, vec![0x5au8; 20_000])?;
    let out = salvage(&junk, &config, &["--out", "/nonexistent-never-written"])?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("epoch is unknown") && t.contains("--epoch"),
        "{t}"
    );
    assert!(!t.contains("panicked"), "{t}");
    Ok(())
}
