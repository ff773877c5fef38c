//! RDM6300 repeat handling through the async reader: a card held in the field repeats its frame
//! at the module's period; the reader must make one tap of it whatever the period (up to 500 ms)
//! and even when a frame is lost, and two taps of two presentations further apart than its
//! window. Time is tokio's paused clock, so the periods are exact.

use std::time::Duration;

use rollcall_drivers::rdm6300::sim::{Repeat, present_repeating};
use rollcall_drivers::rdm6300::{Rdm6300, Tag};

const TAG: Tag = Tag {
    version: 0x62,
    id: 0xE308_6CED,
};

/// Taps the reader reports while `presentations` are written, `gap` apart.
async fn taps(
    reader: impl FnOnce(tokio::io::DuplexStream) -> Rdm6300<tokio::io::DuplexStream>,
    presentations: Vec<Repeat>,
    gap: Duration,
) -> Vec<Tag> {
    let (mut module, host) = tokio::io::duplex(1024);
    let mut reader = reader(host);
    let writer = tokio::spawn(async move {
        for (i, repeat) in presentations.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            present_repeating(&mut module, TAG, repeat).await.unwrap();
        }
    });
    let mut taps = Vec::new();
    while let Some(tag) = reader.next_tap().await.unwrap() {
        taps.push(tag);
    }
    writer.await.unwrap();
    taps
}

#[tokio::test(start_paused = true)]
async fn a_two_second_hold_is_one_tap_at_100_250_and_500_ms_periods() {
    for period in [100, 250, 500] {
        let hold = Repeat::held(Duration::from_millis(period), Duration::from_secs(2));
        assert_eq!(hold.frames, 2_000 / period as usize + 1);
        let got = taps(Rdm6300::new, vec![hold], Duration::ZERO).await;
        assert_eq!(got, [TAG], "{period} ms period");
    }
}

#[tokio::test(start_paused = true)]
async fn a_lost_frame_in_a_hold_is_still_one_tap() {
    for period in [100, 250, 500] {
        let hold = Repeat::held(Duration::from_millis(period), Duration::from_secs(2)).losing(2);
        let got = taps(Rdm6300::new, vec![hold], Duration::ZERO).await;
        assert_eq!(got, [TAG], "{period} ms period, third frame lost");
    }
}

#[tokio::test(start_paused = true)]
async fn presentations_further_apart_than_the_window_are_two_taps() {
    let hold = || Repeat::held(Duration::from_millis(250), Duration::from_millis(750));
    // Default window (1.2 s): 1.3 s without a frame between the two holds.
    let got = taps(
        Rdm6300::new,
        vec![hold(), hold()],
        Duration::from_millis(1_300),
    )
    .await;
    assert_eq!(got, [TAG, TAG]);
    // A configured 600 ms window: 700 ms apart is two taps, 500 ms apart one.
    let short = |host| Rdm6300::new(host).with_repeat_window(Duration::from_millis(600));
    let got = taps(short, vec![hold(), hold()], Duration::from_millis(700)).await;
    assert_eq!(got, [TAG, TAG]);
    let got = taps(short, vec![hold(), hold()], Duration::from_millis(500)).await;
    assert_eq!(got, [TAG]);
}
