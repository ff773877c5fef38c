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
