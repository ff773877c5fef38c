//! The daemon's entry points with simulated readers: presentations go through the byte-level
//! simulators and the real drivers, and come out as events.

use std::time::Duration;

use rollcall_drivers::indicator::{AuraPort, aura_link};
use rollcall_drivers::simulated::{Presentation, Presenter};
use rollcall_drivers::{
    IndicatorConfig, ReaderConfig, ReaderEvent, ReaderHealth, ReaderWiring, Signal, run_indicator,
    run_reader,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn reader(toml_text: &str) -> ReaderConfig {
    toml::from_str(toml_text).expect("valid reader table")
}

struct Running {
    events: mpsc::Receiver<ReaderEvent>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), rollcall_drivers::DriverError>>,
}

fn start(config: ReaderConfig, presenter: &Presenter) -> Running {
    start_with_aura(config, presenter, None)
}

fn start_with_aura(config: ReaderConfig, presenter: &Presenter, aura: Option<AuraPort>) -> Running {
    let (tx, events) = mpsc::channel(64);
    let stop = CancellationToken::new();
    let wiring = ReaderWiring::for_config(&config, presenter).with_aura(aura);
    let s = stop.clone();
    let task = tokio::spawn(async move { run_reader(&config, wiring, tx, s).await });
    Running { events, stop, task }
}

impl Running {
    async fn next(&mut self) -> ReaderEvent {
        tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .expect("an event within 10 s")
            .expect("reader still running")
    }

    async fn stop(self) {
        self.stop.cancel();
        let r = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("stops promptly");
        r.expect("no panic").expect("clean shutdown");
    }
}

/// Presentations sent before the reader subscribed are lost; give it a moment to start.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn simulated_fingerprint_goes_through_ef01_driver() {
    let presenter = Presenter::new();
    let mut r = start(
        reader("id = \"door-finger\"\nkind = \"simulated-fingerprint\""),
        &presenter,
    );
    settle().await;
    assert!(presenter.present("door-finger", Presentation::Finger(Some(7))));
    assert_eq!(
        r.next().await,
        ReaderEvent::Fingerprint {
            slot: 7,
            score: 150
        }
    );
    presenter.present("door-finger", Presentation::Finger(None));
    assert_eq!(r.next().await, ReaderEvent::FingerprintNoMatch);
    presenter.present("door-finger", Presentation::Finger(Some(999)));
    presenter.present("other-reader", Presentation::Finger(Some(1)));
    presenter.present("door-finger", Presentation::Finger(Some(7)));
    assert_eq!(
        r.next().await,
        ReaderEvent::Fingerprint {
            slot: 999,
            score: 150
        }
    );
    assert_eq!(
        r.next().await,
        ReaderEvent::Fingerprint {
            slot: 7,
            score: 150
        }
    );
    r.stop().await;
}

#[tokio::test]
async fn simulated_card_routes_each_uid_length_through_a_real_decoder() {
    let presenter = Presenter::new();
    let mut r = start(
        reader("id = \"door-card\"\nkind = \"simulated-card\""),
        &presenter,
    );
    settle().await;
    for uid in [
        vec![0x62, 0xE3, 0x08, 0x6C, 0xED],             // RDM6300
        vec![0xDE, 0xAD, 0xBE, 0xEF],                   // PN532, 4 bytes
        vec![0x04, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66], // PN532, 7 bytes
        vec![212, 0x1B, 0x81],                          // Wiegand 26
    ] {
        presenter.present("door-card", Presentation::Card(uid.clone()));
        assert_eq!(r.next().await, ReaderEvent::Card { uid });
    }
    r.stop().await;
}

#[tokio::test]
async fn same_card_twice_is_two_taps() {
    let presenter = Presenter::new();
    let mut r = start(reader("id = \"c\"\nkind = \"simulated-card\""), &presenter);
    settle().await;
    for uid in [vec![1, 2, 3, 4, 5], vec![9, 8, 7, 6]] {
        presenter.present("c", Presentation::Card(uid.clone()));
        presenter.present("c", Presentation::Card(uid.clone()));
        assert_eq!(r.next().await, ReaderEvent::Card { uid: uid.clone() });
        assert_eq!(r.next().await, ReaderEvent::Card { uid });
    }
    r.stop().await;
}

#[tokio::test]
async fn missing_port_is_reported_down_not_a_panic() {
    let presenter = Presenter::new();
    let mut r = start(
        reader("id = \"door\"\nkind = \"rdm6300\"\nport = \"/dev/ttyAMA-rollcall-test-missing\""),
        &presenter,
    );
    match r.next().await {
        ReaderEvent::Health(ReaderHealth::Down(message)) => {
            assert!(
                message.contains("/dev/ttyAMA-rollcall-test-missing"),
                "{message}"
            );
            assert!(message.contains("no such device"), "{message}");
        }
        other => panic!("expected Down, got {other:?}"),
    }
    r.stop().await;
}

#[tokio::test]
async fn missing_gpio_chip_is_reported_down_with_advice() {
    let presenter = Presenter::new();
    for chip in ["/dev/gpiochip-rollcall-test-missing", "/dev/null"] {
        let mut r = start(
            reader(&format!(
                "id = \"gate\"\nkind = \"wiegand\"\nchip = {chip:?}\nd0_line = 17\nd1_line = 27"
            )),
            &presenter,
        );
        match r.next().await {
            ReaderEvent::Health(ReaderHealth::Down(message)) => {
                assert!(message.contains(chip), "{message}");
                assert!(message.contains("gpiodetect"), "{message}");
            }
            other => panic!("expected Down, got {other:?}"),
        }
        r.stop().await;
    }
}

#[tokio::test]
async fn invalid_config_is_an_error_not_a_retry_loop() {
    let presenter = Presenter::new();
    let (tx, _rx) = mpsc::channel(1);
    let config = reader("id = \"x\"\nkind = \"ef01\"");
    let wiring = ReaderWiring::for_config(&config, &presenter);
    let err = run_reader(&config, wiring, tx, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("port"), "{err}");
}

#[tokio::test]
async fn a_simulated_reader_without_a_presenter_is_a_config_error() {
    let (tx, _rx) = mpsc::channel(1);
    let config = reader("id = \"x\"\nkind = \"rdm6300\"\nsimulate = true");
    let err = run_reader(
        &config,
        ReaderWiring::hardware(),
        tx,
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("presenter"), "{err}");
}

#[tokio::test]
async fn closed_event_channel_ends_the_reader_with_an_error() {
    let presenter = Presenter::new();
    let (tx, rx) = mpsc::channel(1);
    drop(rx);
    let config = reader("id = \"f\"\nkind = \"simulated-fingerprint\"");
    let stop = CancellationToken::new();
    let p = presenter.clone();
    let wiring = ReaderWiring::simulated(p);
    let task = tokio::spawn(async move { run_reader(&config, wiring, tx, stop).await });
    settle().await;
    presenter.present("f", Presentation::Finger(Some(1)));
    let r = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(r, Err(rollcall_drivers::DriverError::Closed(_))),
        "{r:?}"
    );
}

#[tokio::test]
async fn indicators_consume_signals_and_stop() {
    for table in [
        "kind = \"log\"",
        "kind = \"gpio\"\ngreen_line = 5\nred_line = 6\nbuzzer_line = 13\nsimulate = true",
        "kind = \"aura\"\nreader = \"nobody\"",
    ] {
        let config: IndicatorConfig = toml::from_str(table).unwrap();
        let (tx, rx) = mpsc::channel(8);
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move { run_indicator(&config, None, rx, s).await });
        for signal in [Signal::Accepted, Signal::Unknown, Signal::StorageFull] {
            tx.send(signal).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.cancel();
        let r = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap();
        assert!(r.is_ok(), "{table}: {r:?}");
    }
}

#[tokio::test]
async fn aura_indicator_drives_the_fingerprint_readers_led() {
    // The reader and its Aura LED share one UART; the indicator speaks through the reader.
    // The daemon wires the two explicitly: the indicator gets one end, the reader the other.
    let presenter = Presenter::new();
    let (link, port) = aura_link();
    let mut r = start_with_aura(
        reader("id = \"aura-reader\"\nkind = \"simulated-fingerprint\""),
        &presenter,
        Some(port),
    );
    settle().await;
    let config: IndicatorConfig =
        toml::from_str("kind = \"aura\"\nreader = \"aura-reader\"").unwrap();
    let (tx, rx) = mpsc::channel(8);
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move { run_indicator(&config, Some(link), rx, s).await });
    tx.send(Signal::Unknown).await.unwrap();
    // The reader keeps identifying while it serves the LED.
    presenter.present("aura-reader", Presentation::Finger(Some(3)));
    assert_eq!(
        r.next().await,
        ReaderEvent::Fingerprint {
            slot: 3,
            score: 150
        }
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn simulated_readers_work_with_paused_time() {
    // Daemon tests often pause tokio's clock; the simulated kinds use in-memory pipes, so
    // auto-advancing time never fires a reply timeout early.
    let presenter = Presenter::new();
    let mut finger = start(
        reader("id = \"pf\"\nkind = \"simulated-fingerprint\""),
        &presenter,
    );
    let mut card = start(reader("id = \"pc\"\nkind = \"simulated-card\""), &presenter);
    settle().await;
    for i in 0..5u16 {
        presenter.present("pf", Presentation::Finger(Some(i)));
        presenter.present("pc", Presentation::Card(vec![1, 2, 3, i as u8]));
        assert_eq!(
            finger.next().await,
            ReaderEvent::Fingerprint {
                slot: i,
                score: 150
            }
        );
        assert_eq!(
            card.next().await,
            ReaderEvent::Card {
                uid: vec![1, 2, 3, i as u8]
            }
        );
    }
    finger.stop().await;
    card.stop().await;
}
