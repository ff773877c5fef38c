//! `rollcall status` against the real rollcalld and a real Mosquitto: healthy and connected
//! (exit 0), offline with punches waiting (exit 1), and no daemon at all (exit 2, with what to do).

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::rollcalld::{GatewayOptions, Rollcalld};

const ROLLCALL: &str = env!("CARGO_BIN_EXE_rollcall");

fn status(config: &Path, json: bool) -> anyhow::Result<Output> {
    let mut cmd = std::process::Command::new(ROLLCALL);
    cmd.arg("status").arg("-c").arg(config);
    if json {
        cmd.arg("--json");
    }
    Ok(cmd.output()?)
}

fn json(out: &Output) -> anyhow::Result<serde_json::Value> {
    serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Polls `rollcall status --json` until `want` holds, within 20 s.
async fn status_until(
    config: &Path,
    gw: &Rollcalld,
    want: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<(Output, serde_json::Value)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = status(config, true)?;
        let v = json(&out)?;
        if want(&v) {
            return Ok((out, v));
        }
        if Instant::now() > deadline {
            anyhow::bail!("status never matched; last: {v}\nlog:\n{}", gw.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_a_healthy_gateway_then_its_backlog_offline_then_a_stopped_daemon()
-> anyhow::Result<()> {
    let mut broker = Mosquitto::start()?;
    let dir = tempfile::tempdir()?;
    let config = GatewayOptions::new(broker.port()).write(dir.path())?;
    let mut gw = Rollcalld::start(&rollcall_tests::binaries::rollcalld(), &config).await?;
    // The test in the centre's place: acks what it receives.
    let _acker = rollcall_tests::acker::Acker::start(broker.port()).await?;

    // Connected, nothing waiting: healthy, every field there.
    let (out, v) = status_until(&config, &gw, |v| v["link_up"] == true).await?;
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["state"], "healthy");
    for key in [
        "depth",
        "capacity",
        "oldest_unacked_age_s",
        "last_ack_age_s",
        "acked",
        "last_seq",
        "readers",
        "clock_synced",
        "roster_version",
        "templates_loaded",
        "module_capacity",
        "enrolment_outbox",
        "free_disk_bytes",
    ] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
    assert_eq!(v["device_id"], "room-101");
    let readers: Vec<_> = v["readers"]
        .as_array()
        .expect("readers")
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(readers, ["door-card", "door-finger"]);
    let human = status(&config, false)?;
    let text = String::from_utf8_lossy(&human.stdout);
    assert_eq!(human.status.code(), Some(0), "{text}");
    for want in [
        "rollcalld room-101",
        "link      up (127.0.0.1:",
        "journal   0 unacked",
        "door-card (simulated-card)",
        "clock",
        "roster",
        "outbox",
        "state: healthy",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }

    // A punch goes out and is acked: the last ack is seen.
    let reply = gw.command("card door-card 0000000002").await?;
    assert!(reply.starts_with("accepted"), "{reply}");
    let (out, v) = status_until(&config, &gw, |v| {
        v["depth"].as_u64() == Some(0) && v["last_ack_age_s"].as_u64().is_some()
    })
    .await?;
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["acked"].as_u64(), Some(1), "{v}");
    let text = String::from_utf8_lossy(&status(&config, false)?.stdout).into_owned();
    assert!(
        text.contains("  last ack  ") && text.contains("s ago; 1 punches acked"),
        "{text}"
    );

    // The broker dies and students keep punching: degraded, the backlog shown.
    broker.kill();
    for _ in 0..3 {
        let reply = gw.command("card door-card 0000000001").await?;
        assert!(reply.starts_with("accepted"), "{reply}");
    }
    let (out, v) = status_until(&config, &gw, |v| {
        v["link_up"] == false && v["depth"].as_u64() == Some(3)
    })
    .await?;
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!(v["state"], "degraded");
    let problem = v["problems"][0]["what"].as_str().unwrap_or_default();
    assert!(
        problem.starts_with("offline: not connected to the broker 127.0.0.1:")
            && problem.contains("3 punches waiting"),
        "{v}"
    );
    let human = status(&config, false)?;
    let text = String::from_utf8_lossy(&human.stdout);
    assert_eq!(human.status.code(), Some(1), "{text}");
    assert!(
        text.contains("link      DOWN") && text.contains("3 unacked") && text.contains("DEGRADED"),
        "{text}"
    );
    assert!(
        text.contains("fix: punches are safe in the journal"),
        "{text}"
    );

    // rollcalld stopped: exit 2, saying what to do.
    gw.terminate()?;
    let out = status(&config, false)?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("rollcalld is not running") && err.contains("systemctl start rollcalld"),
        "{err}"
    );
    let out = status(&config, true)?;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json(&out)?["state"], "unreachable");
    Ok(())
}

#[test]
fn a_missing_configuration_is_exit_2_naming_the_file_and_the_fix() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = status(&dir.path().join("nope.toml"), false)?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("nope.toml") && err.contains("-c"), "{err}");
    Ok(())
}

#[test]
fn help_shows_an_example_and_the_exit_statuses() -> anyhow::Result<()> {
    let out = std::process::Command::new(ROLLCALL)
        .args(["status", "--help"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rollcall status --json"), "{text}");
    assert!(text.contains("Exit status: 0 healthy"), "{text}");
    Ok(())
}
