//! `rollcall reset --factory` against the real rollcalld, a real Mosquitto (the test plays the
//! centre's roster) and an EF01 module simulator on a pseudo-terminal: refused while punches are
//! unacknowledged or the daemon runs, done after --export; afterwards the keys are gone, the
//! module's library is empty, and a copy of the sealed roster taken before the reset opens with
//! no key left on the device (while it did open with the destroyed key).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use rollcall_daemon::credentials::store::{self, ROSTER_MAGIC};
use rollcall_daemon::templates::DataKey;
use rollcall_protocol::topic::{self, Kind};
use rollcall_protocol::v1::credentials::FORMAT_EF01;
use rollcall_protocol::v1::{
    CardCredential, FingerCredential, RosterStudent, RosterUpdate, Secret,
};
use rollcall_tests::ef01::{Module, model};
use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::rollcalld::{GatewayOptions, Rollcalld};
use rumqttc::{AsyncClient, MqttOptions, QoS};

const ROLLCALL: &str = env!("CARGO_BIN_EXE_rollcall");
const DEVICE: &str = "room-101";
const SITE: &str = "test-site";

fn reset(config: &Path, extra: &[&str]) -> anyhow::Result<Output> {
    Ok(std::process::Command::new(ROLLCALL)
        .args(["reset", "--factory", "-c"])
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

/// Every regular file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

fn opens(key: [u8; 32], sealed: &[u8]) -> bool {
    store::open(&DataKey::from_bytes(key), ROSTER_MAGIC, DEVICE, sealed).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factory_reset_refuses_unacked_punches_then_shreds_keys_and_empties_the_module()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let broker = Mosquitto::start()?;

    // The module, on a pty, outlives rollcalld.
    let module = Module::start(model(50))?;
    let template = module.template(1);

    let mut opts = GatewayOptions::new(broker.port());
    opts.roster_from_centre = true;
    opts.readers = Some(format!(
        "[[reader]]\nid = \"door-card\"\nkind = \"simulated-card\"\n\
         {}",
        module.reader("door-finger")
    ));
    let config = opts.write(dir.path())?;
    let mut gw = Rollcalld::start(&rollcall_tests::binaries::rollcalld(), &config).await?;

    // The centre's roster: one student with a card and a finger, sent until it is sealed on
    // disk and the template is in the module. Nobody acks punches: they stay in the journal.
    let mut mqtt = MqttOptions::new("test-centre", "127.0.0.1", broker.port());
    mqtt.set_max_packet_size(1 << 20, 1 << 20);
    let (centre, mut events) = AsyncClient::new(mqtt, 100);
    tokio::spawn(async move {
        loop {
            if events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let uid = vec![0x04, 0x5A, 0xC3, 0x01, 0x02, 0x03, 0x04];
    let roster = RosterUpdate {
        device_id: DEVICE.into(),
        version: 1,
        base_version: None,
        part: 0,
        parts: 1,
        students: vec![RosterStudent {
            student: "S001".into(),
            cards: vec![CardCredential {
                id: uuid::Uuid::from_u128(11),
                uid: Secret::new(uid.clone()),
            }],
            fingers: vec![FingerCredential {
                id: uuid::Uuid::from_u128(12),
                format: FORMAT_EF01.into(),
                data: Secret::new(template.clone()),
            }],
        }],
        removed: vec![],
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !state.join("roster.sealed").exists() || module.library().is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "roster never applied; log:\n{}",
            gw.log()
        );
        centre
            .publish(
                topic::build(SITE, DEVICE, Kind::Roster),
                QoS::AtLeastOnce,
                false,
                roster.encode(),
            )
            .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for _ in 0..3 {
        let reply = gw
            .command(&format!("card door-card {}", hex::encode(&uid)))
            .await?;
        assert!(reply.starts_with("accepted"), "{reply}");
    }
    gw.wait_journal((3, 0, 3)).await?;

    // Refused while punches are unacknowledged, and while the daemon runs outside systemd.
    let out = reset(&config, &[])?;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("3 punches the centre has not acknowledged"),
        "{}",
        text(&out)
    );
    let out = reset(&config, &["--force"])?;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("stop it first"), "{}", text(&out));
    assert!(state.join("template.key").exists());

    gw.terminate()?;
    drop(gw);
    let out = reset(&config, &[])?;
    assert!(
        !out.status.success(),
        "stopped, still unacked: {}",
        text(&out)
    );
    assert!(
        state.join("template.key").exists(),
        "nothing destroyed on a refusal"
    );

    // What an attacker might have copied before the reset.
    let sealed_roster = std::fs::read(state.join("roster.sealed"))?;
    let old_key: [u8; 32] = std::fs::read(state.join("template.key"))?
        .try_into()
        .map_err(|_| anyhow::anyhow!("template.key is 32 bytes"))?;
    assert!(
        opens(old_key, &sealed_roster),
        "the copy opened with the key before the reset"
    );

    let export = dir.path().join("export");
    let out = reset(&config, &["--export", export.to_str().unwrap_or_default()])?;
    assert!(out.status.success(), "{}", text(&out));

    let exported: Vec<String> = files(&export)
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert!(
        exported
            .iter()
            .any(|n| n.starts_with(&format!("{DEVICE}-")) && n.ends_with("-1-3.cbor")),
        "{exported:?}"
    );
    for gone in [
        "template.key",
        "card-hash.key",
        "roster.sealed",
        "journal.redb",
        "outbox",
    ] {
        assert!(!state.join(gone).exists(), "{gone} still there");
    }
    assert!(module.library().is_empty(), "the module's library is empty");
    // Any key left: every 32 bytes of every file in the state directory, and any 32-byte file.
    let left: Vec<PathBuf> = files(dir.path())
        .into_iter()
        .filter(|f| f.starts_with(&state) || std::fs::metadata(f).is_ok_and(|m| m.len() == 32))
        .collect();
    for f in &left {
        let bytes = std::fs::read(f)?;
        for w in bytes.windows(32) {
            let key: [u8; 32] = w.try_into()?;
            assert!(
                !opens(key, &sealed_roster),
                "{} holds a key that opens the roster",
                f.display()
            );
        }
    }
    Ok(())
}
