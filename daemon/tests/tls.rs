//! Nothing leaves the device unauthenticated or in clear text, and a device can publish only as
//! itself: rollcalld over TLS with a client certificate, against a Mosquitto that requires one
//! and confines each certificate's CN to its own topics.

use std::path::Path;
use std::time::Duration;

use rollcall_tests::acker::Acker;
use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::pki::Pki;
use rollcall_tests::rollcalld::{GatewayOptions, Rollcalld};

const BIN: &str = env!("CARGO_BIN_EXE_rollcalld");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn punches_travel_over_tls_with_a_client_certificate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(&dir.path().join("pki"))?;
    let broker = Mosquitto::start_tls(&pki)?;
    let acker = Acker::start(broker.port()).await?;
    let (cert, key) = pki.client("room-101")?;
    let mut opts = GatewayOptions::new(broker.tls_port().expect("tls listener"));
    opts.tls = Some((pki.ca(), cert, key));
    let gw = Rollcalld::start(Path::new(BIN), &opts.write(&dir.path().join("gw"))?).await?;
    for n in 0..5 {
        gw.command(&format!("card door-card {:010X}", 0x20_0000 + n))
            .await?;
    }
    gw.wait_journal((5, 5, 0)).await?;
    assert_eq!(acker.seen().seqs("room-101"), [1, 2, 3, 4, 5]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_publish_as_another_device() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(&dir.path().join("pki"))?;
    let broker = Mosquitto::start_tls(&pki)?;
    let acker = Acker::start(broker.port()).await?;
    // A certificate for room-101, in a gateway configured as room-102.
    let (cert, key) = pki.client("room-101")?;
    let mut opts = GatewayOptions::new(broker.tls_port().expect("tls listener"));
    opts.device_id = "room-102".into();
    opts.tls = Some((pki.ca(), cert, key));
    let gw = Rollcalld::start(Path::new(BIN), &opts.write(&dir.path().join("gw"))?).await?;
    for n in 0..3 {
        gw.command(&format!("card door-card {:010X}", 0x30_0000 + n))
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        acker.seen().seqs("room-102").is_empty(),
        "the broker let room-101's certificate publish as room-102"
    );
    assert_eq!(
        gw.journal().await?,
        (3, 0, 3),
        "unacked punches stay in the journal"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(&dir.path().join("pki"))?;
    let rogue = Pki::create(&dir.path().join("rogue"))?;
    let broker = Mosquitto::start_tls(&pki)?;
    let acker = Acker::start(broker.port()).await?;
    let (cert, key) = rogue.client("room-101")?;
    let mut opts = GatewayOptions::new(broker.tls_port().expect("tls listener"));
    opts.tls = Some((pki.ca(), cert, key));
    let gw = Rollcalld::start(Path::new(BIN), &opts.write(&dir.path().join("gw"))?).await?;
    gw.command("card door-card 0000400000").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(acker.seen().seqs("room-101").is_empty());
    assert_eq!(gw.journal().await?, (1, 0, 1));
    Ok(())
}

/// What the centre sends one device (its roster, its commands) is readable by that device only:
/// the documented ACL (`rollcall_protocol::topic::device_acl`) confines reads to the
/// certificate's own CN, so one gateway cannot learn another room's credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_reads_only_its_own_roster_and_commands() -> anyhow::Result<()> {
    use rollcall_protocol::topic::{self, Kind};
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

    let dir = tempfile::tempdir()?;
    let pki = Pki::create(&dir.path().join("pki"))?;
    let broker = Mosquitto::start_tls(&pki)?;
    let (cert, key) = pki.client("room-101")?;
    let mut o = MqttOptions::new("room-101", "127.0.0.1", broker.tls_port().expect("tls"));
    o.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: std::fs::read(pki.ca())?,
        alpn: None,
        client_auth: Some((std::fs::read(cert)?, std::fs::read(key)?)),
    }));
    let (device, mut events) = AsyncClient::new(o, 10);
    let (tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    let (subbed_tx, mut subbed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(p.topic);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = subbed_tx.send(());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let own = topic::build("test-site", "room-101", Kind::Roster);
    let wanted = [
        own.clone(),
        topic::build("test-site", "room-102", Kind::Roster),
        topic::build("test-site", "room-102", Kind::Command),
        topic::build("test-site", "room-102", Kind::Ack),
    ];
    for t in &wanted {
        device.subscribe(t.as_str(), QoS::AtLeastOnce).await?;
        tokio::time::timeout(Duration::from_secs(10), subbed.recv()).await?;
    }
    // The centre's side (the plain loopback listener of the test broker) sends to each.
    let (centre, mut centre_events) =
        AsyncClient::new(MqttOptions::new("centre", "127.0.0.1", broker.port()), 10);
    tokio::spawn(async move { while centre_events.poll().await.is_ok() {} });
    for t in &wanted {
        centre
            .publish(t.as_str(), QoS::AtLeastOnce, false, b"x".to_vec())
            .await?;
    }
    let first = tokio::time::timeout(Duration::from_secs(10), got.recv())
        .await?
        .expect("the device's own roster");
    assert_eq!(first, own);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        got.try_recv().is_err(),
        "room-101's certificate read another device's topics"
    );
    Ok(())
}
