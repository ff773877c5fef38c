//! The Wiegand reader shell: edges from a source (here the simulator's channel, on a Pi the GPIO
//! character device), the 5 ms gap timed by tokio, frames out.

use std::time::Duration;

use rollcall_drivers::wiegand::sim::{Fault, frame_edges};
use rollcall_drivers::wiegand::{Card, Timing, WiegandError, WiegandReader};
use tokio::sync::mpsc;

#[tokio::test]
async fn frames_parity_errors_and_noise_through_the_reader() {
    let (tx, rx) = mpsc::channel(1024);
    let mut reader = WiegandReader::new(rx, Timing::default());
    let w26 = Card::W26 {
        facility: 212,
        card: 7041,
    };
    let w34 = Card::W34 { data: 0x0102_0304 };
    let frames = [
        (w26, None, Ok(w26)),
        (
            w26,
            Some(Fault::Parity),
            Err(WiegandError::Parity {
                bits: 26,
                which: "trailing odd",
            }),
        ),
        (w34, Some(Fault::Noise), Ok(w34)),
        (
            w34,
            Some(Fault::Truncated(20)),
            Err(WiegandError::Length(20)),
        ),
    ];
    let mut t = 1_000_000_000u64;
    for (card, fault, expected) in frames {
        for edge in frame_edges(card, t, fault) {
            tx.send(edge).await.unwrap();
        }
        t += 200_000_000;
        let got = tokio::time::timeout(Duration::from_secs(2), reader.next_frame())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Some(expected));
    }
    assert_eq!(reader.noise_pulses(), 1);
    drop(tx);
    assert_eq!(reader.next_frame().await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn slow_and_fast_readers_through_the_reader_with_the_default_timing() {
    use rollcall_drivers::wiegand::sim::frame_edges_every;
    let (tx, rx) = mpsc::channel(1024);
    let mut reader = WiegandReader::new(rx, Timing::default());
    let w26 = Card::W26 {
        facility: 212,
        card: 7041,
    };
    let mut t = 1_000_000_000u64;
    for interval_ns in [20_000_000, 1_000_000, 2_000_000] {
        for edge in frame_edges_every(w26, t, interval_ns, None) {
            tx.send(edge).await.unwrap();
        }
        t += 2_000_000_000;
        let got = tokio::time::timeout(Duration::from_secs(2), reader.next_frame())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Some(Ok(w26)), "{interval_ns} ns between bits");
    }
}
