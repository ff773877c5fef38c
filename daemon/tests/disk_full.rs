//! A real disk filling up under the real rollcalld: its state directory on a small tmpfs, the
//! rest of the file system taken by a filler file. Taps are answered "storage full" (never
//! accepted) while the disk is full, recording resumes by itself once space is freed (no
//! restart), and every accepted punch reaches the centre.
//!
//! Mounting a tmpfs needs root (CI runs as root); elsewhere the test fails saying so rather than
//! skipping.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rollcall_tests::acker::Acker;
use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::rollcalld::{GatewayOptions, Rollcalld, parse_reply};

const BIN: &str = env!("CARGO_BIN_EXE_rollcalld");
const DEVICE: &str = "room-101";

/// A tmpfs mounted for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(at)?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "mounting a {size} tmpfs at {} failed ({}): this test needs root (CI runs as root)",
            at.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the file system says it is full.
fn fill(path: &Path) -> anyhow::Result<u64> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => return Err(e.into()),
        }
    }
    // Fill the last partial block too.
    loop {
        match f.write(&[0u8; 512]) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(_) => break,
        }
    }
    let _ = f.sync_all();
    Ok(written)
}

async fn tap(gw: &Rollcalld, n: u64) -> anyhow::Result<String> {
    let line = gw
        .command(&format!("card door-card {:010X}", 0x20_0000 + n))
        .await?;
    Ok(parse_reply(&line)
        .ok_or_else(|| anyhow::anyhow!("tap {n}: {line}"))?
        .outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_taps_and_recording_resumes_once_space_is_freed() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let _fs = Tmpfs::mount(&state, "8m")?;
    let broker = Mosquitto::start()?;
    let acker = Acker::start(broker.port()).await?;
    let gw = Rollcalld::start(
        Path::new(BIN),
        &GatewayOptions::new(broker.port()).write(dir.path())?,
    )
    .await?;
    let mut accepted = 0u64;
    for n in 0..3 {
        assert_eq!(tap(&gw, n).await?, "unknown", "before the disk fills");
        accepted += 1;
    }
    gw.wait_journal((3, 3, 0)).await?;

    // The disk fills (another program's log, say). Taps are never "accepted" now, and the
    // answer says what it is.
    acker.set_acking(false);
    let filler = state.join("filler");
    let filled = fill(&filler)?;
    assert!(filled > 0);
    let mut while_full = Vec::new();
    for n in 3..40 {
        let outcome = tap(&gw, n).await?;
        if outcome == "unknown" {
            // redb may still have room in pages it already owns.
            accepted += 1;
            continue;
        }
        while_full.push(outcome);
        if while_full.len() >= 3 {
            break;
        }
    }
    assert!(
        !while_full.is_empty() && while_full.iter().all(|o| o == "storage_full"),
        "with the disk full, taps must be refused as storage_full: {while_full:?}\n{}",
        gw.log()
    );

    // Space is freed: recording resumes without a restart.
    std::fs::remove_file(&filler)?;
    let mut resumed = None;
    for n in 100..130 {
        let outcome = tap(&gw, n).await?;
        if outcome == "unknown" {
            resumed = Some(n);
            accepted += 1;
            break;
        }
        assert_eq!(outcome, "storage_full", "while recovering");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        resumed.is_some(),
        "no tap accepted within 6 s of freeing space\n{}",
        gw.log()
    );
    for n in 200..203 {
        assert_eq!(tap(&gw, n).await?, "unknown", "after recovery");
        accepted += 1;
    }

    // Everything accepted reaches the centre, in order, with no seq handed out twice.
    acker.set_acking(true);
    gw.wait_journal((accepted, accepted, 0)).await?;
    let seqs = acker.seen().seqs(DEVICE);
    assert_eq!(seqs, (1..=accepted).collect::<Vec<u64>>());
    Ok(())
}
