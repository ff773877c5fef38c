//! rollcalld as a process, against a real Mosquitto started by the test, with the test-only
//! acker standing in for the centre. Each test has its own broker, directory and gateway.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use rollcall_protocol::topic::{self, Kind};
use rollcall_protocol::v1::{Ack, Refusal, Subject};
use rollcall_tests::acker::Acker;
use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::rollcalld::{GatewayOptions, Reply, Rollcalld, parse_reply};
use rumqttc::{AsyncClient, MqttOptions, QoS};

const BIN: &str = env!("CARGO_BIN_EXE_rollcalld");
const DEVICE: &str = "room-101";
const LONG: Duration = Duration::from_secs(60);

fn bin() -> &'static Path {
    Path::new(BIN)
}

/// Taps a card that is not on the roster, with a UID made from `n` (5 bytes, as an RDM6300
/// reports).
async fn tap(gw: &Rollcalld, n: u64) -> anyhow::Result<Reply> {
    let line = gw
        .command(&format!("card door-card {:010X}", 0x10_0000 + n))
        .await?;
    parse_reply(&line).ok_or_else(|| anyhow::anyhow!("tap {n}: {line}"))
}

fn short_hash(subject: &Subject) -> String {
    match subject {
        Subject::UnknownCard(h) => format!("unknown-card={}", hex::encode(&h[..6])),
        Subject::Student(s) => format!("student={s}"),
        Subject::UnknownFinger => "unknown-finger".into(),
    }
}

/// Every accepted tap must be at the centre, as the same punch.
fn assert_all_delivered(acker: &Acker, accepted: &BTreeMap<u64, String>) {
    let seen = acker.seen();
    let committed: BTreeMap<u64, String> = seen
        .punches
        .iter()
        .filter(|((d, _), _)| d == DEVICE)
        .flat_map(|(_, m)| m.iter().map(|(seq, p)| (*seq, short_hash(&p.subject))))
        .collect();
    for (seq, subject) in accepted {
        assert_eq!(
            committed.get(seq),
            Some(subject),
            "accepted punch {seq} ({subject}) missing or different at the centre"
        );
    }
    assert_eq!(seen.misordered_batches, 0, "a batch was not in seq order");
}

async fn device_epoch(acker: &Acker) -> u64 {
    loop {
        if let Some(e) = acker
            .seen()
            .punches
            .keys()
            .find(|(d, _)| d == DEVICE)
            .map(|k| k.1)
        {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_buffers_then_drains_in_order() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Mosquitto::start()?;
    let port = broker.port();
    broker.kill();
    let gw = Rollcalld::start(bin(), &GatewayOptions::new(port).write(dir.path())?).await?;
    let mut accepted = BTreeMap::new();
    for n in 0..60 {
        let r = tap(&gw, n).await?;
        assert_eq!(
            r.outcome, "unknown",
            "an unknown card is stored and answered as unknown: {r:?}"
        );
        accepted.insert(r.seq.expect("stored"), r.subject);
    }
    assert_eq!(
        accepted.keys().copied().collect::<Vec<_>>(),
        (1..=60).collect::<Vec<_>>()
    );
    assert_eq!(gw.journal().await?, (60, 0, 60), "all held while offline");

    broker.restart()?;
    let acker = Acker::start(port).await?;
    let epoch = tokio::time::timeout(LONG, device_epoch(&acker)).await?;
    acker
        .wait_for("all 60 punches", LONG, |s| {
            s.contiguous(DEVICE, epoch) == 60
        })
        .await?;
    assert_all_delivered(&acker, &accepted);
    gw.wait_journal((60, 60, 0)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_accepted_punch() -> anyhow::Result<()> {
    let cycles: usize = std::env::var("ROLLCALL_KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let acker = Acker::start(broker.port()).await?;
    // Eight card readers tapped at once, so kills land among many concurrent commits.
    const READERS: u64 = 8;
    let mut opts = GatewayOptions::new(broker.port());
    opts.readers = Some(
        (0..READERS)
            .map(|r| format!("[[reader]]\nid = \"c{r}\"\nkind = \"simulated-card\"\n"))
            .collect(),
    );
    let config = opts.write(dir.path())?;
    let mut rng = StdRng::seed_from_u64(0xC0FFEE);
    let mut accepted: BTreeMap<u64, String> = BTreeMap::new();
    let mut n = 0u64;
    for cycle in 0..cycles {
        let mut gw = Rollcalld::start(bin(), &config).await?;
        let kill_after = Duration::from_millis(rng.random_range(20..600));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let tapping = futures_join_all((0..READERS).map(|r| {
            let (gw, tx) = (&gw, tx.clone());
            let base = n + r * 1_000_000;
            async move {
                for k in 0.. {
                    let line = gw
                        .command(&format!("card c{r} {:010X}", 0x10_0000 + base + k))
                        .await;
                    match line.ok().as_deref().and_then(parse_reply) {
                        Some(reply) => {
                            let _ = tx.send(reply);
                        }
                        None => return,
                    }
                }
            }
        }));
        let _ = tokio::time::timeout(kill_after, tapping).await;
        gw.kill9();
        drop(tx);
        while let Some(reply) = rx.recv().await {
            if let Some(seq) = reply.seq {
                let before = accepted.insert(seq, reply.subject.clone());
                assert!(
                    before.is_none(),
                    "cycle {cycle}: seq {seq} handed out twice"
                );
            }
        }
        n += 10_000_000;
    }
    // A last life to drain what is left.
    let gw = Rollcalld::start(bin(), &config).await?;
    assert!(
        accepted.len() > cycles,
        "only {} taps were accepted in {cycles} cycles",
        accepted.len()
    );
    let last = *accepted.keys().last().expect("some punches");
    let epoch = tokio::time::timeout(LONG, device_epoch(&acker)).await?;
    acker
        .wait_for("every accepted punch", LONG, |s| {
            s.contiguous(DEVICE, epoch) >= last
        })
        .await?;
    assert_all_delivered(&acker, &accepted);
    let seen = acker.seen();
    assert_eq!(
        seen.punches.keys().filter(|(d, _)| d == DEVICE).count(),
        1,
        "one journal epoch throughout"
    );
    eprintln!(
        "{cycles} kill -9 cycles: {} taps accepted, {} deliveries, {} re-sent duplicates (dropped by dedupe)",
        accepted.len(),
        seen.deliveries,
        seen.duplicates
    );
    drop(gw);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarts_mid_stream_lose_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Mosquitto::start()?;
    let acker = Acker::start(broker.port()).await?;
    let gw = Rollcalld::start(
        bin(),
        &GatewayOptions::new(broker.port()).write(dir.path())?,
    )
    .await?;
    let mut accepted = BTreeMap::new();
    for n in 0..120u64 {
        let r = tap(&gw, n).await?;
        accepted.insert(r.seq.expect("stored"), r.subject);
        if n == 40 {
            broker.kill();
        }
        if n == 60 {
            broker.restart()?;
        }
        if n == 90 {
            broker.stop();
            broker.restart()?;
        }
    }
    let epoch = tokio::time::timeout(LONG, device_epoch(&acker)).await?;
    acker
        .wait_for("all 120 punches", LONG, |s| {
            s.contiguous(DEVICE, epoch) >= 120
        })
        .await?;
    assert_all_delivered(&acker, &accepted);
    Ok(())
}

async fn raw_client(port: u16) -> anyhow::Result<AsyncClient> {
    let (client, mut events) =
        AsyncClient::new(MqttOptions::new("test-forger", "127.0.0.1", port), 100);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_duplicate_and_foreign_acks_are_ignored() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let acker = Acker::start(broker.port()).await?;
    acker.set_acking(false);
    let mut opts = GatewayOptions::new(broker.port());
    opts.ack_timeout = "30s".into();
    let gw = Rollcalld::start(bin(), &opts.write(dir.path())?).await?;
    for n in 0..10 {
        tap(&gw, n).await?;
    }
    acker
        .wait_for("10 punches", LONG, |s| s.deliveries >= 10)
        .await?;
    let epoch = device_epoch(&acker).await;
    let forger = raw_client(broker.port()).await?;
    let ack_topic = topic::build("test-site", DEVICE, Kind::Ack);
    let ack = |device_id: &str, epoch: u64, up_to_seq: u64| {
        Ack {
            device_id: device_id.into(),
            epoch,
            up_to_seq,
            refusals: None,
        }
        .encode()
    };
    let send = |ack: Vec<u8>| {
        let (f, t) = (forger.clone(), ack_topic.clone());
        async move { f.publish(t, QoS::AtLeastOnce, false, ack).await }
    };
    send(ack(DEVICE, epoch ^ 1, 10)).await?;
    send(ack("room-999", epoch, 10)).await?;
    send(ack(DEVICE, epoch, 1000)).await?;
    send(b"\xff\x00garbage".to_vec()).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        gw.journal().await?,
        (10, 0, 10),
        "no bad ack deleted anything"
    );

    send(ack(DEVICE, epoch, 4)).await?;
    gw.wait_journal((10, 4, 6)).await?;
    send(ack(DEVICE, epoch, 2)).await?;
    send(ack(DEVICE, epoch, 4)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        gw.journal().await?,
        (10, 4, 6),
        "stale and duplicate acks change nothing"
    );

    acker.set_acking(true);
    // A new punch makes the acker ack the highest contiguous seq it holds.
    tap(&gw, 10).await?;
    gw.wait_journal((11, 11, 0)).await?;
    Ok(())
}

/// A client that may publish messages of any size (rumqttc's default limit is 10 KiB).
async fn big_client(port: u16) -> anyhow::Result<AsyncClient> {
    let mut opts = MqttOptions::new("test-big", "127.0.0.1", port);
    opts.set_max_packet_size(8 << 20, 8 << 20);
    let (client, mut events) = AsyncClient::new(opts, 100);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    Ok(client)
}

fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_punches_are_deleted_counted_logged_and_shown_in_the_status() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let acker = Acker::start(broker.port()).await?;
    acker.set_acking(false);
    let metrics_port = rollcall_tests::free_port()?;
    let mut opts = GatewayOptions::new(broker.port());
    opts.ack_timeout = "30s".into();
    opts.metrics_port = Some(metrics_port);
    let gw = Rollcalld::start(bin(), &opts.write(dir.path())?).await?;
    for n in 0..5 {
        tap(&gw, n).await?;
    }
    acker
        .wait_for("5 punches", LONG, |s| s.deliveries >= 5)
        .await?;
    let epoch = device_epoch(&acker).await;

    let (watcher, mut status_events) = AsyncClient::new(
        MqttOptions::new("test-status", "127.0.0.1", broker.port()),
        100,
    );
    watcher
        .subscribe(
            topic::build("test-site", DEVICE, Kind::Status),
            QoS::AtLeastOnce,
        )
        .await?;

    // The centre stored all five but refused them: seq 5 for a reason this gateway does not
    // know, seqs 1..=4 because the device is disabled.
    let detail = "device room-101 is disabled: enable it with `rollcall device enable room-101`";
    let ack = Ack {
        device_id: DEVICE.into(),
        epoch,
        up_to_seq: 5,
        refusals: Some(vec![
            Refusal {
                reason: "a_code_from_the_future".into(),
                first_seq: 5,
                last_seq: 5,
                count: 1,
                detail: "x".into(),
            },
            Refusal {
                reason: "disabled_device".into(),
                first_seq: 1,
                last_seq: 4,
                count: 4,
                detail: detail.into(),
            },
        ]),
    };
    let centre = raw_client(broker.port()).await?;
    centre
        .publish(
            topic::build("test-site", DEVICE, Kind::Ack),
            QoS::AtLeastOnce,
            false,
            ack.encode(),
        )
        .await?;
    gw.wait_journal((5, 5, 0)).await?;

    let metrics = http_get(metrics_port, "/metrics").await?;
    assert_eq!(
        metric(
            &metrics,
            "rollcall_refused_punches_total{reason=\"disabled_device\"}"
        ),
        Some(4),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "rollcall_refused_punches_total{reason=\"other\"}"),
        Some(1),
        "unknown codes share one label: {metrics}"
    );

    let status = loop {
        let s = next_status(&mut status_events).await?;
        if s.last_refusal.is_some() {
            break s;
        }
    };
    let refusal = status.last_refusal.expect("checked");
    assert_eq!(
        (
            refusal.reason.as_str(),
            refusal.first_seq,
            refusal.last_seq,
            refusal.count
        ),
        ("disabled_device", 1, 4, 4)
    );
    assert_eq!(refusal.detail, detail);
    assert_eq!(status.journal_depth, 0);

    // The same ack again (a broker redelivery) counts nothing twice.
    centre
        .publish(
            topic::build("test-site", DEVICE, Kind::Ack),
            QoS::AtLeastOnce,
            false,
            ack.encode(),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = http_get(metrics_port, "/metrics").await?;
    assert_eq!(
        metric(
            &metrics,
            "rollcall_refused_punches_total{reason=\"disabled_device\"}"
        ),
        Some(4),
        "{metrics}"
    );
    let log = gw.log();
    assert!(
        log.contains("the centre refused punches") && log.contains("rollcall device enable"),
        "{log}"
    );
    Ok(())
}

/// A message larger than any ack (2 MiB) or garbage on the ack topic is read and dropped by the
/// gateway's own size check: the link stays up (no reconnect loop on redelivery) and real acks
/// go on deleting punches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_or_garbage_ack_is_dropped_without_a_reconnect() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let _acker = Acker::start(broker.port()).await?;
    let metrics_port = rollcall_tests::free_port()?;
    let mut opts = GatewayOptions::new(broker.port());
    opts.metrics_port = Some(metrics_port);
    let gw = Rollcalld::start(bin(), &opts.write(dir.path())?).await?;
    for n in 0..3 {
        tap(&gw, n).await?;
    }
    gw.wait_journal((3, 3, 0)).await?;

    let hostile = big_client(broker.port()).await?;
    let ack_topic = topic::build("test-site", DEVICE, Kind::Ack);
    hostile
        .publish(&ack_topic, QoS::AtLeastOnce, false, vec![0xA5u8; 2 << 20])
        .await?;
    hostile
        .publish(
            &ack_topic,
            QoS::AtLeastOnce,
            false,
            b"\xff garbage".to_vec(),
        )
        .await?;
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let m = http_get(metrics_port, "/metrics").await?;
        if metric(&m, "rollcall_acks_total{result=\"oversized\"}") == Some(1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "oversized ack never seen: {m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in 3..6 {
        tap(&gw, n).await?;
    }
    gw.wait_journal((6, 6, 0)).await?;
    // Long enough for a dropped connection to come back (reconnect back-off starts at 200 ms).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = http_get(metrics_port, "/metrics").await?;
    assert_eq!(metric(&m, "rollcall_mqtt_reconnects_total"), Some(0), "{m}");
    assert_eq!(
        metric(&m, "rollcall_acks_total{result=\"oversized\"}"),
        Some(1),
        "{m}"
    );
    assert_eq!(
        metric(&m, "rollcall_acks_total{result=\"undecodable\"}"),
        Some(1),
        "{m}"
    );
    assert_eq!(metric(&m, "rollcall_link_up"), Some(1), "{m}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_journal_refuses_with_storage_full_and_keeps_what_it_has() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let acker = Acker::start(broker.port()).await?;
    acker.set_acking(false);
    let metrics_port = rollcall_tests::free_port()?;
    let mut opts = GatewayOptions::new(broker.port());
    opts.capacity = 5;
    opts.ack_timeout = "1s".into();
    opts.metrics_port = Some(metrics_port);
    let gw = Rollcalld::start(bin(), &opts.write(dir.path())?).await?;
    let mut outcomes = Vec::new();
    for n in 0..7 {
        outcomes.push(tap(&gw, n).await?.outcome);
    }
    assert_eq!(
        outcomes,
        [
            "unknown",
            "unknown",
            "unknown",
            "unknown",
            "unknown",
            "storage_full",
            "storage_full"
        ]
    );
    let metrics = http_get(metrics_port, "/metrics").await?;
    assert!(
        metrics.contains("rollcall_punches_total{outcome=\"storage_full\"} 2"),
        "{metrics}"
    );

    acker.set_acking(true);
    gw.wait_journal((5, 5, 0)).await?;
    assert_eq!(
        tap(&gw, 7).await?.outcome,
        "unknown",
        "room again once the centre acked"
    );
    let seen = acker.seen();
    assert_eq!(seen.seqs(DEVICE)[..5], [1, 2, 3, 4, 5]);
    Ok(())
}

async fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_journal_stops_start_with_the_file_and_the_fix() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = GatewayOptions::new(rollcall_tests::free_port()?).write(dir.path())?;
    let journal = dir.path().join("state").join("journal.redb");
    std::fs::write(&journal, vec![0xA5u8; 8192])?;
    let err = Rollcalld::start(bin(), &config)
        .await
        .expect_err("must refuse to start")
        .to_string();
    assert!(err.contains(&journal.display().to_string()), "{err}");
    assert!(err.contains("move the file aside"), "{err}");
    assert_eq!(
        std::fs::read(&journal)?,
        vec![0xA5u8; 8192],
        "the damaged file is kept as it was"
    );

    // A well-formed redb file that is not a journal: opening it for writing would rewrite its
    // header, so it is checked read-only first.
    std::fs::remove_file(&journal)?;
    drop(redb::Database::create(&journal)?);
    let before = blake3::hash(&std::fs::read(&journal)?);
    let err = Rollcalld::start(bin(), &config)
        .await
        .expect_err("must refuse to start")
        .to_string();
    assert!(err.contains("no Rollcall journal metadata"), "{err}");
    assert_eq!(
        blake3::hash(&std::fs::read(&journal)?),
        before,
        "the refused file is byte for byte as it was"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_at_the_control_socket_path_stops_start_and_is_kept() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = GatewayOptions::new(rollcall_tests::free_port()?).write(dir.path())?;
    let precious = dir.path().join("notes.txt");
    std::fs::write(&precious, "not a socket")?;
    let mut text = std::fs::read_to_string(&config)?;
    text.push_str(&format!("[control]\nsocket = \"{}\"\n", precious.display()));
    std::fs::write(&config, text)?;
    let err = Rollcalld::start(bin(), &config)
        .await
        .expect_err("must refuse to start")
        .to_string();
    assert!(
        err.contains(&precious.display().to_string())
            && err.contains("a regular file is in the way"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&precious)?, "not a socket");
    Ok(())
}

/// rollcalld run through `sh` with umask 000, as a careless init script might.
fn under_umask_000(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("rollcalld-umask0.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\numask 000\nexec {BIN} \"$@\"\n"),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    Ok(script)
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("exists")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_private_whatever_the_umask() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let config = GatewayOptions::new(broker.port()).write(dir.path())?;
    let state = dir.path().join("state");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777))?;
    let gw = Rollcalld::start(&under_umask_000(dir.path())?, &config).await?;
    assert_eq!(tap(&gw, 1).await?.outcome, "unknown");
    assert_eq!(mode(&state), 0o700, "state directory");
    assert_eq!(mode(&state.join("journal.redb")), 0o600, "journal");
    assert_eq!(mode(&state.join("card-hash.key")), 0o600, "card-hash key");
    assert_eq!(mode(&state.join("control.sock")), 0o600, "control socket");

    // A fresh state directory is created private too.
    drop(gw);
    let fresh = dir.path().join("fresh").join("state");
    let text = std::fs::read_to_string(&config)?.replace(
        &format!("state_dir = \"{}\"", state.display()),
        &format!("state_dir = \"{}\"", fresh.display()),
    );
    let other = dir.path().join("fresh.toml");
    std::fs::write(&other, text)?;
    let mut child = std::process::Command::new(under_umask_000(dir.path())?)
        .args(["run", "--config"])
        .arg(&other)
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = std::time::Instant::now() + LONG;
    while !fresh.join("card-hash.key").exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    child.kill()?;
    child.wait()?;
    assert_eq!(mode(&fresh), 0o700, "new state directory");
    assert_eq!(mode(&fresh.join("journal.redb")), 0o600, "new journal");
    assert_eq!(mode(&fresh.join("card-hash.key")), 0o600, "new key");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_directory_of_another_user_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = GatewayOptions::new(rollcall_tests::free_port()?).write(dir.path())?;
    let state = dir.path().join("state");
    // Tests run as root; 65534 is `nobody`.
    std::os::unix::fs::chown(&state, Some(65534), Some(65534))?;
    let err = Rollcalld::start(bin(), &config)
        .await
        .expect_err("must refuse to start")
        .to_string();
    assert!(
        err.contains(&format!(
            "state directory {} belongs to uid 65534",
            state.display()
        )) && err.contains("chown"),
        "{err}"
    );
    assert!(
        !state.join("journal.redb").exists(),
        "nothing written into a directory of another user"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_keeps_unacked_punches_for_the_next_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let acker = Acker::start(broker.port()).await?;
    acker.set_acking(false);
    let config = GatewayOptions::new(broker.port()).write(dir.path())?;
    let mut gw = Rollcalld::start(bin(), &config).await?;
    let finger = parse_reply(&gw.command("finger door-finger 1").await?).expect("reply");
    assert_eq!(
        (finger.outcome.as_str(), finger.subject.as_str()),
        ("accepted", "student=S001")
    );
    let card = parse_reply(&gw.command("card door-card 0000000002").await?).expect("reply");
    assert_eq!(
        (card.outcome.as_str(), card.subject.as_str()),
        ("accepted", "student=S002")
    );
    let status = gw.terminate()?;
    assert!(
        status.success(),
        "clean exit on SIGTERM: {status}; log:\n{}",
        gw.log()
    );
    acker.set_acking(true);
    let gw = Rollcalld::start(bin(), &config).await?;
    gw.wait_journal((2, 2, 0)).await?;
    let seen = acker.seen();
    let subjects: Vec<_> = seen
        .punches
        .values()
        .flat_map(|m| m.values().map(|p| p.subject.clone()))
        .collect();
    assert_eq!(
        subjects,
        [
            Subject::Student("S001".into()),
            Subject::Student("S002".into())
        ]
    );
    Ok(())
}

#[test]
fn validate_names_every_bad_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[device]\nid = \"room 1\"\nsite = \"s\"\n[mqtt]\nhost = \"broker.example\"\nport = 0\n[[reader]]\nid = \"r\"\nkind = \"simulated-card\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["device.id:", "mqtt.port:", "mqtt.tls: missing"] {
        assert!(err.contains(key), "{key} not in:\n{err}");
    }
    let good = GatewayOptions::new(1883).write(dir.path()).expect("write");
    let out = std::process::Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every value `validate` accepts must run: durations that overflow a clock instant at run time
/// (the ack timeout is also multiplied by the backoff factor) are refused up front.
#[test]
fn validate_refuses_durations_that_cannot_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = GatewayOptions::new(1883).write(dir.path()).expect("write");
    let text = std::fs::read_to_string(&good).expect("read");
    let validate = |text: &str| {
        let path = dir.path().join("candidate.toml");
        std::fs::write(&path, text).expect("write");
        std::process::Command::new(BIN)
            .args(["validate", "--config"])
            .arg(&path)
            .output()
            .expect("run")
    };
    for (line, key) in [
        ("ack_timeout = \"2s\"", "mqtt.ack_timeout:"),
        ("keep_alive = \"5s\"", "mqtt.keep_alive:"),
        ("status_interval = \"2s\"", "mqtt.status_interval:"),
        ("duplicate_window = \"0s\"", "capture.duplicate_window:"),
    ] {
        assert!(text.contains(line), "{line} not in the test config");
        let name = line.split(' ').next().expect("key");
        let out = validate(&text.replace(line, &format!("{name} = \"500000000000y\"")));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{key} accepted: {err}");
        assert!(err.contains(key) && err.contains("out of range"), "{err}");
    }
    let out = std::process::Command::new(BIN)
        .args(["run", "--simulate", "--demo-every", "0s", "--state-dir"])
        .arg(dir.path().join("demo"))
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(2),
        "a zero demo period is a usage error"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("out of range"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The largest durations `validate` accepts run: the gateway starts and takes punches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_accepted_durations_run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let mut opts = GatewayOptions::new(broker.port());
    opts.ack_timeout = "1h".into();
    let config = opts.write(dir.path())?;
    let text = std::fs::read_to_string(&config)?
        .replace("keep_alive = \"5s\"", "keep_alive = \"65535s\"")
        .replace("status_interval = \"2s\"", "status_interval = \"1h\"")
        .replace("duplicate_window = \"0s\"", "duplicate_window = \"24h\"");
    std::fs::write(&config, text)?;
    let validated = std::process::Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&config)
        .output()?;
    assert!(validated.status.success(), "{validated:?}");
    let gw = Rollcalld::start(bin(), &config).await?;
    assert_eq!(tap(&gw, 1).await?.outcome, "unknown");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        gw.journal().await?.0,
        1,
        "still running; log:\n{}",
        gw.log()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_systemd_it_is_ready_and_feeds_the_watchdog() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let notify_path = dir.path().join("notify.sock");
    let notify = tokio::net::UnixDatagram::bind(&notify_path)?;
    let config = GatewayOptions::new(broker.port()).write(dir.path())?;
    let envs = [
        ("NOTIFY_SOCKET", notify_path.to_str().expect("utf-8")),
        ("WATCHDOG_USEC", "400000"),
    ];
    let mut gw = Rollcalld::start_with(bin(), &config, &["--systemd"], &envs).await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !(got.iter().any(|m: &String| m.contains("READY=1"))
        && got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2)
    {
        let n = tokio::time::timeout(Duration::from_secs(10), notify.recv(&mut buf)).await??;
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    gw.terminate()?;
    let n = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = notify.recv(&mut buf).await?;
            if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
                return Ok::<_, std::io::Error>(n);
            }
        }
    })
    .await??;
    assert!(n > 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_retained_and_the_last_will_reports_a_vanished_gateway() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let mut gw = Rollcalld::start(
        bin(),
        &GatewayOptions::new(broker.port()).write(dir.path())?,
    )
    .await?;
    tap(&gw, 1).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A late subscriber still gets the retained status.
    let (client, mut events) = AsyncClient::new(
        MqttOptions::new("test-status", "127.0.0.1", broker.port()),
        100,
    );
    client
        .subscribe(
            topic::build("test-site", DEVICE, Kind::Status),
            QoS::AtLeastOnce,
        )
        .await?;
    let first = next_status(&mut events).await?;
    assert!(first.online);
    assert_eq!(first.device_id, DEVICE);
    assert_eq!(first.readers.len(), 2);
    assert!(first.free_disk_bytes.is_some_and(|b| b > 0));

    gw.kill9();
    // keep_alive is 5 s in the test config: the broker publishes the will within 1.5 x that.
    let mut will = next_status(&mut events).await?;
    while will.online {
        will = next_status(&mut events).await?;
    }
    assert!(!will.online, "the last will says the gateway vanished");
    Ok(())
}

async fn next_status(
    events: &mut rumqttc::EventLoop,
) -> anyhow::Result<rollcall_protocol::v1::Status> {
    let fut = async {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = events.poll().await? {
                return anyhow::Ok(rollcall_protocol::v1::Status::decode(&p.payload)?);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), fut).await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_any_mix_of_real_reader_kinds_against_their_simulators() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let acker = Acker::start(broker.port()).await?;
    let mut opts = GatewayOptions::new(broker.port());
    // The real drivers and codecs, each talking to its device's byte-level simulator.
    opts.readers = Some(
        ["finger:r503", "em:rdm6300", "nfc:pn532", "gate:wiegand"]
            .iter()
            .map(|r| {
                let (id, kind) = r.split_once(':').expect("id:kind");
                format!("[[reader]]\nid = \"{id}\"\nkind = \"{kind}\"\nsimulate = true\n")
            })
            .collect(),
    );
    let gw = Rollcalld::start(bin(), &opts.write(dir.path())?).await?;
    let cases = [
        ("finger finger 1", "accepted", "student=S001"),
        ("finger finger none", "unknown", "unknown-finger"),
        ("card em 0000000002", "accepted", "student=S002"),
        ("card nfc 04A1B2C3", "unknown", "unknown-card="),
        ("card nfc 04A1B2C3D4E5F6", "unknown", "unknown-card="),
        ("card gate D41B81", "unknown", "unknown-card="),
    ];
    for (i, (command, outcome, subject)) in cases.iter().enumerate() {
        let reply = parse_reply(&gw.command(command).await?)
            .ok_or_else(|| anyhow::anyhow!("{command}: error"))?;
        assert_eq!(reply.outcome, *outcome, "{command}: {reply:?}");
        assert!(reply.subject.starts_with(subject), "{command}: {reply:?}");
        assert_eq!(reply.seq, Some(i as u64 + 1), "{command}");
    }
    gw.wait_journal((6, 6, 0)).await?;
    let seen = acker.seen();
    let kinds: Vec<String> = seen
        .punches
        .values()
        .flat_map(|m| m.values().map(|p| p.reader_kind.clone()))
        .collect();
    assert_eq!(
        kinds,
        ["ef01", "ef01", "rdm6300", "pn532", "pn532", "wiegand"]
    );
    Ok(())
}

/// Runs futures concurrently to completion (a tiny join_all without another dependency).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut set: Vec<_> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}
