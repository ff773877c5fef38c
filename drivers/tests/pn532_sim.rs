//! The PN532 driver against the PN532 simulator: the chip's error frame, extended frames, and a
//! power cycle in the middle of polling.

use std::time::Duration;

use rollcall_drivers::pn532::Pn532;
use rollcall_drivers::pn532::sim::{Pn532Handle, Pn532Sim};
use tokio::io::DuplexStream;
use tokio_util::sync::CancellationToken;

fn start() -> (Pn532<DuplexStream>, Pn532Handle, CancellationToken) {
    let (host, chip) = tokio::io::duplex(4096);
    let sim = Pn532Handle::new(Pn532Sim::new());
    let stop = CancellationToken::new();
    let (s, t) = (sim.clone(), stop.clone());
    tokio::spawn(async move { s.serve(chip, t).await });
    (Pn532::new(host), sim, stop)
}

#[test]
fn unsupported_command_is_acked_then_answered_with_the_error_frame() {
    // D4 01 (no such command): LEN 2, LCS FE, DCS 2B.
    let mut chip = Pn532Sim::new();
    let out = chip.receive(&[0x00, 0x00, 0xFF, 0x02, 0xFE, 0xD4, 0x01, 0x2B, 0x00]);
    assert_eq!(
        out,
        [
            0x00, 0x00, 0xFF, 0x00, 0xFF, 0x00, // ACK
            0x00, 0x00, 0xFF, 0x01, 0xFF, 0x7F, 0x81, 0x00, // error frame
        ]
    );
}

#[tokio::test]
async fn error_frame_reaches_the_driver_as_an_error() {
    let (mut dev, _sim, _stop) = start();
    dev.wake_up().await.unwrap();
    let err = dev
        .command(&[0x01], Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("error frame"), "{err}");
    // The chip is still fine afterwards.
    assert_eq!(dev.firmware_version().await.unwrap().ic, 0x32);
}

#[tokio::test]
async fn long_frames_go_extended_both_ways() {
    let (mut dev, sim, _stop) = start();
    dev.wake_up().await.unwrap();
    let line: Vec<u8> = (0..=255u8).cycle().take(260).collect();
    let echo = dev
        .command(
            &[&[0x00, 0x00][..], &line].concat(),
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    assert_eq!(echo, [&[0x01, 0x00][..], &line].concat());
    assert_eq!(sim.lock().commands(), [0x14, 0x00]);
}

#[tokio::test(start_paused = true)]
async fn power_cycle_while_polling_is_recovered_within_one_poll() {
    let (mut dev, sim, _stop) = start();
    dev.wake_up().await.unwrap();
    dev.set_passive_retries(2).await.unwrap();
    sim.lock().place_card(vec![0xDE, 0xAD, 0xBE, 0xEF], 1);
    let first = dev.poll(Duration::from_millis(500)).await.unwrap().unwrap();
    assert_eq!(first.uid, [0xDE, 0xAD, 0xBE, 0xEF]);

    sim.lock().power_cycle();
    sim.lock()
        .place_card(vec![0x04, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66], 1);
    let again = dev.poll(Duration::from_millis(500)).await.unwrap().unwrap();
    assert_eq!(again.uid, [0x04, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66]);
    assert!(!sim.lock().is_asleep());
    // Configured again after the wake-up: no card now means a prompt "no card".
    assert_eq!(dev.poll(Duration::from_millis(500)).await.unwrap(), None);
    let commands = sim.lock().commands().to_vec();
    assert_eq!(
        commands,
        [0x14, 0x32, 0x4A, 0x14, 0x32, 0x4A, 0x4A],
        "after the cycle: SAMConfiguration and MaxRetries again before the poll"
    );
}
