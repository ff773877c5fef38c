//! The real drivers open a pseudo-terminal by path through tokio-serial, exactly as they open
//! /dev/ttyAMA0 on a Pi, with the byte-level simulator on the other end.
#![cfg(feature = "linux")]

use std::collections::BTreeMap;
use std::time::Duration;

use rollcall_drivers::ef01::sim::{Ef01Sim, SimHandle, SimModel};
use rollcall_drivers::ef01::{Ef01, Identify};
use rollcall_drivers::pn532::Pn532;
use rollcall_drivers::pn532::sim::{Pn532Handle, Pn532Sim};
use rollcall_drivers::rdm6300::sim::{Fault, present};
use rollcall_drivers::rdm6300::{Rdm6300, Tag};
use rollcall_drivers::simulated::{Presentation, Presenter};
use rollcall_drivers::{ReaderConfig, ReaderEvent, ReaderHealth, ReaderWiring, run_reader};
use tokio::sync::mpsc;
use tokio_serial::SerialStream;
use tokio_util::sync::CancellationToken;

mod common;
use common::{assert_tty_configurable, open, pty};

#[tokio::test]
async fn ef01_driver_over_pty_identifies_and_reconciles() {
    assert_tty_configurable();
    let (master, path, _keep) = pty();
    let sim = SimHandle::new(Ef01Sim::new(SimModel::R503));
    let stop = CancellationToken::new();
    let (s, t) = (sim.clone(), stop.clone());
    tokio::spawn(async move { s.serve(master, t).await });

    let mut dev = Ef01::new(open(&path, 57_600));
    dev.handshake().await.unwrap();
    dev.verify_password(0).await.unwrap();
    assert_eq!(
        dev.read_system_parameters().await.unwrap().library_size,
        200
    );

    let (a, b) = {
        let s = sim.lock();
        (s.template_for(1), s.template_for(2))
    };
    let roster = BTreeMap::from([(4u16, a.clone()), (150u16, b)]);
    let done = dev.reconcile(&roster).await.unwrap();
    assert_eq!(done.loaded, vec![4, 150]);
    assert_eq!(
        sim.lock().library(),
        &roster,
        "1536-byte templates crossed the pty intact"
    );

    sim.lock().place_finger(a);
    assert_eq!(
        dev.identify(200).await.unwrap(),
        Identify::Match {
            slot: 4,
            score: 150
        }
    );
    let port = dev.into_inner();
    drop(port);
    stop.cancel();
}

#[tokio::test]
async fn rdm6300_over_pty_collapses_repeats_and_survives_garbage() {
    assert_tty_configurable();
    let (mut master, path, _keep) = pty();
    let mut reader = Rdm6300::new(open(&path, 9_600));
    let tag = Tag {
        version: 0x62,
        id: 0xE308_6CED,
    };
    let other = Tag {
        version: 0x01,
        id: 42,
    };
    let writer = tokio::spawn(async move {
        present(&mut master, tag, 5, Some(Fault::Garbage))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        present(&mut master, other, 3, Some(Fault::BadChecksum))
            .await
            .unwrap();
        present(&mut master, tag, 1, Some(Fault::Truncated(6)))
            .await
            .unwrap();
        master
    });
    assert_eq!(next_tap(&mut reader).await, tag, "five frames, one tap");
    assert_eq!(
        next_tap(&mut reader).await,
        other,
        "first frame corrupt, repeats still read"
    );
    let _master = writer.await.unwrap();
    // The truncated frame for `tag` never completes: no third tap.
    assert!(
        tokio::time::timeout(Duration::from_millis(400), reader.next_tap())
            .await
            .is_err()
    );
    assert!(reader.corrupt_frames() >= 2);
}

#[tokio::test]
async fn pn532_over_pty_wakes_and_reads_4_and_7_byte_uids() {
    assert_tty_configurable();
    let (master, path, _keep) = pty();
    let sim = Pn532Handle::new(Pn532Sim::new());
    let stop = CancellationToken::new();
    let (s, t) = (sim.clone(), stop.clone());
    tokio::spawn(async move { s.serve(master, t).await });
    let mut dev = Pn532::new(open(&path, 115_200));
    dev.wake_up().await.unwrap();
    let fw = dev.firmware_version().await.unwrap();
    assert_eq!(fw.ic, 0x32);
    // Default MaxRetries: the chip searches forever; the driver stops it with an ACK.
    assert_eq!(dev.poll(Duration::from_millis(200)).await.unwrap(), None);
    dev.set_passive_retries(2).await.unwrap();
    assert_eq!(dev.poll(Duration::from_millis(500)).await.unwrap(), None);
    sim.lock().place_card(vec![0xDE, 0xAD, 0xBE, 0xEF], 1);
    assert_eq!(
        dev.poll(Duration::from_millis(500))
            .await
            .unwrap()
            .unwrap()
            .uid,
        [0xDE, 0xAD, 0xBE, 0xEF]
    );
    sim.lock().place_card(vec![4, 1, 2, 3, 4, 5, 6], 1);
    assert_eq!(
        dev.poll(Duration::from_millis(500))
            .await
            .unwrap()
            .unwrap()
            .uid,
        [4, 1, 2, 3, 4, 5, 6]
    );
    sim.lock()
        .inject(rollcall_drivers::pn532::sim::Fault::BadChecksum);
    sim.lock().place_card(vec![1, 2, 3, 4], 5);
    assert_eq!(
        dev.poll(Duration::from_millis(500))
            .await
            .unwrap()
            .unwrap()
            .uid,
        [1, 2, 3, 4],
        "garbled reply re-sent"
    );
    stop.cancel();
}

async fn next_tap(r: &mut Rdm6300<SerialStream>) -> Tag {
    tokio::time::timeout(Duration::from_secs(5), r.next_tap())
        .await
        .expect("a tap within 5 s")
        .unwrap()
        .unwrap()
}

async fn next_event(rx: &mut mpsc::Receiver<ReaderEvent>) -> ReaderEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("event in 10 s")
        .expect("open")
}

#[tokio::test]
async fn any_mix_of_simulated_real_kinds_runs_at_once() {
    assert_tty_configurable();
    let tables = [
        "id = \"finger\"\nkind = \"r503\"\nsimulate = true",
        "id = \"em\"\nkind = \"rdm6300\"\nsimulate = true",
        "id = \"nfc\"\nkind = \"pn532\"\nsimulate = true",
        "id = \"door\"\nkind = \"wiegand\"\nsimulate = true",
    ];
    let presenter = Presenter::new();
    let stop = CancellationToken::new();
    let mut receivers = Vec::new();
    let mut tasks = Vec::new();
    for table in tables {
        let config: ReaderConfig = toml::from_str(table).unwrap();
        let (tx, rx) = mpsc::channel(16);
        receivers.push(rx);
        let (p, s) = (presenter.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            run_reader(&config, ReaderWiring::for_config(&config, &p), tx, s).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    presenter.present("finger", Presentation::Finger(Some(12)));
    presenter.present("em", Presentation::Card(vec![0x62, 0xE3, 0x08, 0x6C, 0xED]));
    presenter.present("nfc", Presentation::Card(vec![4, 1, 2, 3, 4, 5, 6]));
    presenter.present("door", Presentation::Card(vec![212, 0x1B, 0x81]));
    assert_eq!(
        next_event(&mut receivers[0]).await,
        ReaderEvent::Fingerprint {
            slot: 12,
            score: 150
        }
    );
    assert_eq!(
        next_event(&mut receivers[1]).await,
        ReaderEvent::Card {
            uid: vec![0x62, 0xE3, 0x08, 0x6C, 0xED]
        }
    );
    assert_eq!(
        next_event(&mut receivers[2]).await,
        ReaderEvent::Card {
            uid: vec![4, 1, 2, 3, 4, 5, 6]
        }
    );
    assert_eq!(
        next_event(&mut receivers[3]).await,
        ReaderEvent::Card {
            uid: vec![212, 0x1B, 0x81]
        }
    );
    stop.cancel();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn reader_reports_down_then_ok_when_its_port_appears() {
    assert_tty_configurable();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyRFID");
    let config: ReaderConfig = toml::from_str(&format!(
        "id = \"late\"\nkind = \"rdm6300\"\nport = {:?}",
        link.display().to_string()
    ))
    .unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task =
        tokio::spawn(async move { run_reader(&config, ReaderWiring::hardware(), tx, s).await });

    match next_event(&mut rx).await {
        ReaderEvent::Health(ReaderHealth::Down(m)) => assert!(m.contains("no such device"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Plug the reader in: the port appears, the supervisor's next attempt opens it.
    let (mut master, path, _keep) = pty();
    std::os::unix::fs::symlink(&path, &link).unwrap();
    assert_eq!(
        next_event(&mut rx).await,
        ReaderEvent::Health(ReaderHealth::Ok)
    );
    let tag = Tag { version: 9, id: 77 };
    present(&mut master, tag, 2, None).await.unwrap();
    assert_eq!(
        next_event(&mut rx).await,
        ReaderEvent::Card {
            uid: tag.uid().to_vec()
        }
    );

    // Unplug: the master side goes away and the slave reports end of file or an I/O error.
    drop(master);
    drop(_keep);
    match next_event(&mut rx).await {
        ReaderEvent::Health(ReaderHealth::Down(m)) => assert!(m.contains("ttyRFID"), "{m}"),
        other => panic!("{other:?}"),
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn silent_fingerprint_module_is_reported_down_with_what_to_check() {
    assert_tty_configurable();
    // A port that exists but where no module answers: wrong wiring, no power, wrong baud.
    let (_master, path, _keep) = pty();
    let config: ReaderConfig =
        toml::from_str(&format!("id = \"mute\"\nkind = \"r307\"\nport = {path:?}")).unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task =
        tokio::spawn(async move { run_reader(&config, ReaderWiring::hardware(), tx, s).await });
    match next_event(&mut rx).await {
        ReaderEvent::Health(ReaderHealth::Down(m)) => {
            assert!(m.starts_with(&path), "{m}");
            assert!(m.contains("HandShake") && m.contains("TX/RX"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
