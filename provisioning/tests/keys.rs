//! `rollcall keys rotate` against the real rollcalld (a real Mosquitto, the test acker): taps and
//! fingers go on being accepted and delivered while the key rotates (held half-way by the
//! test-only pause hook, so they surely fall inside the rotation); afterwards the old key opens
//! nothing in the state directory and the new one opens everything as it was, and `rollcall
//! status` shows the new key's fingerprint; rollcalld killed (SIGKILL, by the test-only hook)
//! half-way through a rotation at several points finishes it at its next start with nothing lost;
//! `--offline` refuses while rollcalld runs, and the online form says what to do when it does
//! not.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use rollcall_daemon::credentials::outbox::Outbox;
use rollcall_daemon::credentials::store::{self, ROSTER_MAGIC, RosterStore, StoredRoster};
use rollcall_daemon::keys::{
    Keyring, NEXT_FILE, TEST_ONLY_ABORT_ENV, TEST_ONLY_PAUSE_ENV, TEST_ONLY_RESUME_FILE,
};
use rollcall_daemon::templates::{self, DataKey};
use rollcall_protocol::v1::credentials::FORMAT_CARD;
use rollcall_protocol::v1::{CredentialKind, Enrolment, RosterStudent, Secret};
use rollcall_tests::acker::Acker;
use rollcall_tests::fixtures::fvc;
use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::rollcalld::{GatewayOptions, Rollcalld, parse_reply};

const ROLLCALL: &str = env!("CARGO_BIN_EXE_rollcall");
const DEVICE: &str = "room-101";
/// Enrolled (two impressions each) and presented (a third).
const FINGERS: [u32; 2] = [101, 102];

fn text(out: &Output) -> String {
    format!(
        "{}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn rollcall(args: &[&str], config: &Path) -> anyhow::Result<Output> {
    Ok(std::process::Command::new(ROLLCALL)
        .args(args)
        .arg("-c")
        .arg(config)
        .output()?)
}

fn enrolment(n: u8) -> Enrolment {
    Enrolment {
        device_id: DEVICE.into(),
        enrolment_id: uuid::Uuid::from_bytes([n; 16]),
        student: format!("S{n:03}"),
        kind: CredentialKind::Card,
        format: FORMAT_CARD.into(),
        sensor: String::new(),
        data: Secret::new(vec![0xE0, n, n, n]),
        quality: None,
        captured_at_ms: i64::from(n),
        reader_id: "door-card".into(),
        operator: "it".into(),
    }
}

fn stored_roster() -> StoredRoster {
    StoredRoster {
        version: 9,
        students: vec![RosterStudent {
            student: "S001".into(),
            cards: vec![],
            fingers: vec![],
        }],
        ..Default::default()
    }
}

/// A gateway whose state directory holds every kind of file the data key protects: four
/// templates listed in the roster file (sealed by `rollcalld roster add-template`), a sealed
/// roster and three enrolments in the outbox.
struct Gateway {
    dir: tempfile::TempDir,
    config: PathBuf,
    rollcalld: PathBuf,
}

impl Gateway {
    fn new(broker_port: u16) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut opts = GatewayOptions::new(broker_port);
        opts.readers = Some(
            "[[reader]]\nid = \"door-card\"\nkind = \"simulated-card\"\n\
             [[reader]]\nid = \"door-template\"\nkind = \"iso-template\"\nsimulate = true\n"
                .into(),
        );
        let config = opts.write(dir.path())?;
        let rollcalld = rollcall_tests::binaries::rollcalld();
        for finger in FINGERS {
            for impression in 1..=2 {
                let out = std::process::Command::new(&rollcalld)
                    .args(["roster", "add-template", "--config"])
                    .arg(&config)
                    .args(["--student", &format!("S{finger}"), "--file"])
                    .arg(fvc(&format!("{finger}_{impression}")))
                    .output()?;
                anyhow::ensure!(out.status.success(), "add-template: {}", text(&out));
            }
        }
        let gw = Self {
            dir,
            config,
            rollcalld,
        };
        let store = RosterStore::open(&gw.state(), DEVICE)?;
        store.save(&stored_roster())?;
        let outbox = Outbox::open(&gw.state(), DEVICE)?;
        for n in 1..=3 {
            outbox.put(&store.keys(), &enrolment(n))?;
        }
        Ok(gw)
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The bytes of a key file in the state directory.
    fn key_file(&self, name: &str) -> anyhow::Result<[u8; 32]> {
        std::fs::read(self.state().join(name))?
            .try_into()
            .map_err(|_| anyhow::anyhow!("{name}: not 32 bytes"))
    }

    fn key(&self) -> anyhow::Result<[u8; 32]> {
        self.key_file("template.key")
    }

    fn templates(&self) -> anyhow::Result<Vec<(String, PathBuf)>> {
        let roster = rollcall_daemon::roster::Roster::load(&self.state().join("roster.toml"))?;
        Ok(roster.template_files().to_vec())
    }

    /// How many of the 8 protected files `key` opens; each one it opens must hold what was
    /// sealed in it.
    fn opened_by(&self, key_bytes: [u8; 32]) -> anyhow::Result<usize> {
        let key = &DataKey::from_bytes(key_bytes);
        let mut n = 0;
        let bytes = std::fs::read(self.state().join(store::ROSTER_FILE))?;
        if store::open(key, ROSTER_MAGIC, DEVICE, &bytes).is_some() {
            let keyring = Keyring::in_memory(&self.state(), DataKey::from_bytes(key_bytes));
            let r = RosterStore::with_keyring(&self.state(), DEVICE, Arc::new(keyring)).load()?;
            assert_eq!(r, Some(stored_roster()));
            n += 1;
        }
        let keys = rollcall_daemon::keys::Keys::single(DataKey::from_bytes(key_bytes));
        let all = Outbox::open(&self.state(), DEVICE)?.all(&keys);
        for e in &all {
            assert_eq!(*e, enrolment(e.captured_at_ms as u8));
        }
        n += all.len();
        let templates = self.templates()?;
        assert_eq!(templates.len(), 4);
        for (student, path) in templates {
            let sealed = std::fs::read(&path)?;
            if let Ok(record) = templates::open(key, &student, &sealed) {
                let finger = &student[1..];
                let original = (1..=2).any(|i| {
                    std::fs::read(fvc(&format!("{finger}_{i}"))).ok().as_deref()
                        == Some(record.as_slice())
                });
                assert!(original, "{}: not the enrolled record", path.display());
                n += 1;
            }
        }
        Ok(n)
    }

    async fn start(&self, envs: &[(&str, &str)]) -> anyhow::Result<Rollcalld> {
        Rollcalld::start_with(&self.rollcalld, &self.config, &[], envs).await
    }
}

/// Presents each enrolled finger's third impression: every one must be identified.
async fn fingers_identified(gw: &Rollcalld) -> anyhow::Result<()> {
    for finger in FINGERS {
        let line = gw
            .command(&format!(
                "finger door-template {}",
                fvc(&format!("{finger}_3")).display()
            ))
            .await?;
        let reply = parse_reply(&line).ok_or_else(|| anyhow::anyhow!("{finger}: {line}"))?;
        assert_eq!(
            (reply.outcome.as_str(), reply.subject.as_str()),
            ("accepted", format!("student=S{finger}").as_str()),
            "{line}"
        );
    }
    Ok(())
}

/// One tap through the control socket, as `rollcalld tap` sends it.
async fn tap(socket: &Path) -> anyhow::Result<String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    write.write_all(b"card door-card 0000000001\n").await?;
    Ok(BufReader::new(read)
        .lines()
        .next_line()
        .await?
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taps_go_on_while_the_key_rotates_and_afterwards_the_old_key_opens_nothing()
-> anyhow::Result<()> {
    let broker = Mosquitto::start()?;
    let acker = Acker::start(broker.port()).await?;
    let gw = Gateway::new(broker.port())?;
    let first = gw.key()?;
    assert_eq!(gw.opened_by(first)?, 8, "the installation as written");
    let d = gw.start(&[(TEST_ONLY_PAUSE_ENV, "2")]).await?;
    fingers_identified(&d).await?;

    let shown = rollcall(&["status", "--json"], &gw.config)?;
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout)?;
    let before = rollcall_daemon::keys::fingerprint(&DataKey::from_bytes(first));
    assert_eq!(v["key_fingerprint"], before.as_str(), "{}", text(&shown));

    // --offline is refused while rollcalld answers, and changes nothing.
    let out = rollcall(&["keys", "rotate", "--offline"], &gw.config)?;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("rollcalld is running") && text(&out).contains("without --offline"),
        "{}",
        text(&out)
    );
    assert_eq!(gw.key()?, first);

    // Taps before, during and after the rotation. During: rollcalld runs with the test-only
    // pause after 2 re-sealed files (the roster and one enrolment), so the taps between are
    // answered while the rotation is surely under way, with the files half under each key.
    let socket = gw.state().join("control.sock");
    let mut replies = Vec::new();
    for _ in 0..5 {
        replies.push(tap(&socket).await?);
    }
    let config = gw.config.clone();
    let rotation = tokio::task::spawn_blocking(move || rollcall(&["keys", "rotate"], &config));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !gw.state().join(NEXT_FILE).exists() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the rotation never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let next = gw.key_file(NEXT_FILE)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while gw.opened_by(next)? < 2 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the rotation never paused"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..10 {
        replies.push(tap(&socket).await?);
    }
    assert!(!rotation.is_finished(), "the rotation waits for the test");
    assert_eq!((gw.opened_by(next)?, gw.opened_by(first)?), (2, 6));
    fingers_identified(&d).await?;
    std::fs::write(gw.state().join(TEST_ONLY_RESUME_FILE), b"")?;
    let out = rotation.await??;
    for _ in 0..5 {
        replies.push(tap(&socket).await?);
    }
    assert!(out.status.success(), "{}", text(&out));
    let second = gw.key()?;
    assert_eq!(second, next);
    assert_ne!(second, first);
    let fp = rollcall_daemon::keys::fingerprint(&DataKey::from_bytes(second));
    assert!(
        text(&out).contains(&format!("new key {fp}"))
            && text(&out).contains("4 templates, 1 roster, 3 enrolments"),
        "{}",
        text(&out)
    );
    let shown = rollcall(&["status", "--json"], &gw.config)?;
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout)?;
    assert_eq!(v["key_fingerprint"], fp.as_str(), "{}", text(&shown));
    assert!(v["key_age_s"].as_u64().is_some(), "{}", text(&shown));
    let mut last = 0;
    for line in &replies {
        let r = parse_reply(line).ok_or_else(|| anyhow::anyhow!("tap: {line:?}"))?;
        assert_eq!(r.outcome, "accepted", "{line}");
        let seq = r.seq.ok_or_else(|| anyhow::anyhow!("not stored: {line}"))?;
        assert!(seq > last, "{line} after seq {last}");
        last = seq;
    }
    // The taps and the two finger presentations before and during the rotation.
    let punches = replies.len() + 2 * FINGERS.len();
    acker
        .wait_for("every tap's punch", Duration::from_secs(60), |s| {
            s.seqs(DEVICE).len() == punches
        })
        .await?;

    // On disk: the new key opens every file as it was, the old one none; nothing left over.
    assert_eq!(gw.opened_by(second)?, 8);
    assert_eq!(gw.opened_by(first)?, 0);
    for gone in [NEXT_FILE, "template.key.old", "roster.sealed.tmp"] {
        assert!(!gw.state().join(gone).exists(), "{gone} left");
    }
    fingers_identified(&d).await?;

    // Restarted, rollcalld opens the templates with the new key.
    let mut d = d;
    assert!(d.terminate()?.success(), "log:\n{}", d.log());
    let mut d = gw.start(&[]).await?;
    fingers_identified(&d).await?;
    assert!(d.terminate()?.success(), "log:\n{}", d.log());

    // Stopped: the online form says what to do; --offline rotates (the same library code).
    let out = rollcall(&["keys", "rotate"], &gw.config)?;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("does not answer")
            && text(&out).contains("--offline")
            && text(&out).contains("unchanged"),
        "{}",
        text(&out)
    );
    assert_eq!(gw.key()?, second);
    let out = rollcall(&["keys", "rotate", "--offline"], &gw.config)?;
    assert!(out.status.success(), "{}", text(&out));
    let third = gw.key()?;
    assert_ne!(third, second);
    assert_eq!(gw.opened_by(third)?, 8);
    assert_eq!(gw.opened_by(second)?, 0);
    assert_eq!(gw.opened_by(first)?, 0);
    let d = gw.start(&[]).await?;
    fingers_identified(&d).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollcalld_killed_mid_rotation_finishes_it_at_the_next_start_with_nothing_lost()
-> anyhow::Result<()> {
    let broker = Mosquitto::start()?;
    let gw = Gateway::new(broker.port())?;
    // The order of re-sealing: the roster, the 3 enrolments, the 4 templates. 0: right after
    // the new key is stored; 8: every file re-sealed, the key file not yet replaced.
    for k in [0usize, 1, 4, 6, 8] {
        let before = gw.key()?;
        let d = gw.start(&[(TEST_ONLY_ABORT_ENV, &k.to_string())]).await?;
        let reply = d.command("rotate-key").await.unwrap_or_default();
        assert!(!reply.starts_with("rotated"), "{k}: {reply}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while d.command("status").await.is_ok() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{k}: rollcalld still answers after the abort"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(d);
        let next = gw.key_file(NEXT_FILE)?;
        assert_ne!(next, before);
        assert_eq!(
            gw.opened_by(next)?,
            k,
            "{k}: files re-sealed before the abort"
        );
        assert_eq!(
            gw.opened_by(before)?,
            8 - k,
            "{k}: the rest still under the old key"
        );

        let mut d = gw.start(&[]).await?;
        assert!(
            !gw.state().join(NEXT_FILE).exists(),
            "{k}: rotation not finished"
        );
        assert_eq!(
            gw.key()?,
            next,
            "{k}: the interrupted rotation's key is the key"
        );
        assert_eq!(gw.opened_by(next)?, 8, "{k}: every file under the new key");
        assert_eq!(gw.opened_by(before)?, 0, "{k}: none under the old one");
        fingers_identified(&d).await?;
        let reply = d.command("status").await?;
        assert!(reply.starts_with("epoch="), "{reply}");
        assert!(d.terminate()?.success(), "log:\n{}", d.log());
    }
    Ok(())
}
