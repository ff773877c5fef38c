//! EF01 exchanges replayed byte for byte. Every byte string is written out from the datasheet
//! (../shared/reference/readers.md), not built with the crate's own encoder. The mock fails the
//! test if the driver writes anything else or leaves part of the script unused.

use std::time::Duration;

use rollcall_drivers::ef01::{Confirm, Ef01, Ef01Error, Identify};
use tokio_test::io::Builder;

const GEN_IMG: &[u8] = &[
    0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x03, 0x01, 0x00, 0x05,
];
const IMG2TZ_1: &[u8] = &[
    0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x04, 0x02, 0x01, 0x00, 0x08,
];
const SEARCH_1_0_200: &[u8] = &[
    0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x08, 0x04, 0x01, 0x00, 0x00, 0x00, 0xC8, 0x00,
    0xD6,
];
const ACK_OK: &[u8] = &[
    0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x03, 0x00, 0x00, 0x0A,
];
// Confirmation 02 (no finger): sum 07 + 00 + 03 + 02 = 0x0C.
const ACK_NO_FINGER: &[u8] = &[
    0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x03, 0x02, 0x00, 0x0C,
];

#[tokio::test]
async fn verify_password_sends_datasheet_bytes() {
    let mock = Builder::new()
        .write(&[
            0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x07, 0x13, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x1B,
        ])
        .read(ACK_OK)
        .build();
    let mut dev = Ef01::new(mock);
    dev.verify_password(0).await.unwrap();
}

#[tokio::test]
async fn wrong_password_is_a_module_error() {
    // Confirmation 13: sum 07 + 00 + 03 + 13 = 0x1D.
    let mock = Builder::new()
        .write(&[
            0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x07, 0x13, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x1B,
        ])
        .read(&[
            0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x03, 0x13, 0x00, 0x1D,
        ])
        .build();
    let err = Ef01::new(mock).verify_password(0).await.unwrap_err();
    assert!(
        matches!(
            err,
            Ef01Error::Module {
                code: Confirm::WRONG_PASSWORD,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn identify_matches_slot_and_score() {
    // Search reply: ok, page 0x0005, score 0x0096; sum 07+00+07+00+00+05+00+96 = 0xA9.
    let mock = Builder::new()
        .write(GEN_IMG)
        .read(ACK_OK)
        .write(IMG2TZ_1)
        .read(ACK_OK)
        .write(SEARCH_1_0_200)
        .read(&[
            0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x07, 0x00, 0x00, 0x05, 0x00, 0x96,
            0x00, 0xA9,
        ])
        .build();
    let mut dev = Ef01::new(mock);
    assert_eq!(
        dev.identify(200).await.unwrap(),
        Identify::Match {
            slot: 5,
            score: 150
        }
    );
}

#[tokio::test]
async fn identify_reports_no_match_as_a_value() {
    // Search reply: 09 not found; sum 07+00+07+09 = 0x17.
    let mock = Builder::new()
        .write(GEN_IMG)
        .read(ACK_OK)
        .write(IMG2TZ_1)
        .read(ACK_OK)
        .write(SEARCH_1_0_200)
        .read(&[
            0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x07, 0x09, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x17,
        ])
        .build();
    assert_eq!(
        Ef01::new(mock).identify(200).await.unwrap(),
        Identify::NoMatch
    );
}

#[tokio::test]
async fn no_finger_is_a_value_not_an_error() {
    let mock = Builder::new().write(GEN_IMG).read(ACK_NO_FINGER).build();
    assert_eq!(
        Ef01::new(mock).identify(200).await.unwrap(),
        Identify::NoFinger
    );
}

#[tokio::test]
async fn garbled_reply_is_resent() {
    let mock = Builder::new()
        .write(GEN_IMG)
        // Checksum off by one: the driver must not trust it and must ask again.
        .read(&[
            0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x03, 0x02, 0x00, 0x0D,
        ])
        .write(GEN_IMG)
        .read(ACK_NO_FINGER)
        .build();
    let mut dev = Ef01::new(mock);
    assert_eq!(dev.identify(200).await.unwrap(), Identify::NoFinger);
    assert_eq!(dev.corrupt_frames(), 1);
}

#[tokio::test]
async fn garbage_before_reply_is_skipped() {
    let mock = Builder::new()
        .write(GEN_IMG)
        .read(&[0x00, 0x55, 0xEF, 0x13])
        .read(ACK_NO_FINGER)
        .build();
    assert_eq!(
        Ef01::new(mock).identify(200).await.unwrap(),
        Identify::NoFinger
    );
}

#[tokio::test(start_paused = true)]
async fn unanswered_command_is_resent_after_timeout() {
    let mock = Builder::new()
        .write(GEN_IMG)
        .wait(Duration::from_secs(10))
        .write(GEN_IMG)
        .read(ACK_NO_FINGER)
        .build();
    let mut dev = Ef01::new(mock).with_timeout(Duration::from_millis(200), 1);
    assert_eq!(dev.identify(200).await.unwrap(), Identify::NoFinger);
}

#[tokio::test(start_paused = true)]
async fn stuck_module_gives_up_with_actionable_error() {
    let mock = Builder::new()
        .write(GEN_IMG)
        .wait(Duration::from_secs(10))
        .write(GEN_IMG)
        .wait(Duration::from_secs(10))
        .build();
    let mut dev = Ef01::new(mock).with_timeout(Duration::from_millis(200), 1);
    let err = dev.identify(200).await.unwrap_err();
    assert!(
        matches!(err, Ef01Error::Timeout { attempts: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("TX/RX"), "{err}");
}

#[tokio::test]
async fn template_count() {
    // Ack: ok, count 3; sum 07+00+05+00+00+03 = 0x0F.
    let mock = Builder::new()
        .write(&[
            0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x03, 0x1D, 0x00, 0x21,
        ])
        .read(&[
            0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x05, 0x00, 0x00, 0x03, 0x00, 0x0F,
        ])
        .build();
    assert_eq!(Ef01::new(mock).template_count().await.unwrap(), 3);
}

#[tokio::test]
async fn aura_blue_breathing() {
    let mock = Builder::new()
        .write(&[
            0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x07, 0x35, 0x01, 0x80, 0x02, 0x00,
            0x00, 0xC0,
        ])
        .read(ACK_OK)
        .build();
    Ef01::new(mock).aura(1, 0x80, 2, 0).await.unwrap();
}

#[tokio::test]
async fn read_system_parameters_r503_defaults() {
    // ReadSysPara: 01 00 03 0F, sum 0x13. Reply: ok + 16 bytes, LEN 0x13;
    // sum 07+00+13+00 + 09 + C8 + 03 + FF*4 + 02 + 06 = 0x4F2.
    let mock = Builder::new()
        .write(&[
            0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x03, 0x0F, 0x00, 0x13,
        ])
        .read(&[
            0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x13, 0x00, //
            0x00, 0x00, 0x00, 0x09, 0x00, 0xC8, 0x00, 0x03, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x02,
            0x00, 0x06, //
            0x04, 0xF2,
        ])
        .build();
    let params = Ef01::new(mock).read_system_parameters().await.unwrap();
    assert_eq!(params.library_size, 200);
    assert_eq!(params.baud(), 57_600);
}

#[tokio::test]
async fn delete_one_slot() {
    // DeletChar page 5 count 1: 01 00 07 0C 00 05 00 01, sum 01+00+07+0C+05+01 = 0x1A.
    let mock = Builder::new()
        .write(&[
            0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x07, 0x0C, 0x00, 0x05, 0x00, 0x01,
            0x00, 0x1A,
        ])
        .read(ACK_OK)
        .build();
    Ef01::new(mock).delete(5, 1).await.unwrap();
}

#[tokio::test]
async fn transport_is_given_back() {
    let mock = Builder::new().write(GEN_IMG).read(ACK_NO_FINGER).build();
    let mut dev = Ef01::new(mock);
    dev.identify(200).await.unwrap();
    drop(dev.into_inner());
}

// HandShake is instruction 0x40 (R503 manual): 01 00 03 40, sum 01+00+03+40 = 0x44.
const HANDSHAKE: &[u8] = &[
    0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x03, 0x40, 0x00, 0x44,
];

#[tokio::test]
async fn handshake_is_0x40_answered_with_0x00() {
    let mock = Builder::new().write(HANDSHAKE).read(ACK_OK).build();
    Ef01::new(mock).handshake().await.unwrap();
}

#[tokio::test]
async fn handshake_answered_0x55_is_not_ok() {
    // 0x55 is GetEcho's answer, not HandShake's. Ack 55: sum 07+00+03+55 = 0x5F.
    let mock = Builder::new()
        .write(HANDSHAKE)
        .read(&[
            0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x03, 0x55, 0x00, 0x5F,
        ])
        .build();
    let err = Ef01::new(mock).handshake().await.unwrap_err();
    assert!(
        matches!(
            err,
            Ef01Error::Module {
                code: Confirm::MODULE_OK,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn get_echo_is_0x53_answered_with_0x55() {
    // GetEcho: 01 00 03 53, sum 0x57. Ack 55: sum 07+00+03+55 = 0x5F.
    let mock = Builder::new()
        .write(&[
            0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x03, 0x53, 0x00, 0x57,
        ])
        .read(&[
            0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x03, 0x55, 0x00, 0x5F,
        ])
        .build();
    Ef01::new(mock).get_echo().await.unwrap();
}

#[tokio::test]
async fn get_random_code_returns_four_bytes() {
    // GetRandomCode: 01 00 03 14, sum 0x18. Reply: ok + 12 34 56 78, LEN 7;
    // sum 07+00+07+00+12+34+56+78 = 0x122.
    let mock = Builder::new()
        .write(&[
            0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x03, 0x14, 0x00, 0x18,
        ])
        .read(&[
            0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x07, 0x00, 0x12, 0x34, 0x56, 0x78,
            0x01, 0x22,
        ])
        .build();
    assert_eq!(Ef01::new(mock).random_code().await.unwrap(), 0x1234_5678);
}

#[tokio::test(start_paused = true)]
async fn booting_module_is_asked_again_as_soon_as_it_sends_0x55() {
    // The first HandShake reaches a module still booting and is ignored; 250 ms later the
    // module sends its ready byte and the driver asks again at once, not after its 1 s timeout.
    let start = tokio::time::Instant::now();
    let mock = Builder::new()
        .write(HANDSHAKE)
        .wait(Duration::from_millis(250))
        .read(&[0x55])
        .write(HANDSHAKE)
        .read(ACK_OK)
        .build();
    let mut dev = Ef01::new(mock);
    dev.wait_ready(Duration::from_secs(2)).await.unwrap();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(500),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn module_without_ready_byte_is_asked_until_the_bound() {
    // A module that skips the 0x55: the driver re-sends every reply timeout (500 ms) and gives
    // up at the bound (1.2 s) with an actionable error.
    let mock = Builder::new()
        .write(HANDSHAKE)
        .wait(Duration::from_millis(500))
        .write(HANDSHAKE)
        .wait(Duration::from_millis(500))
        .write(HANDSHAKE)
        .wait(Duration::from_secs(10))
        .build();
    let mut dev = Ef01::new(mock).with_timeout(Duration::from_millis(500), 2);
    let err = dev
        .wait_ready(Duration::from_millis(1200))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Ef01Error::Timeout {
                command: "HandShake",
                attempts: 3
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("TX/RX"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn module_with_a_password_counts_as_up() {
    // Before VfyPwd a module with a password answers 21 (password must be verified):
    // sum 07+00+03+21 = 0x2B. It is up; VfyPwd comes next.
    let mock = Builder::new()
        .write(HANDSHAKE)
        .read(&[
            0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x03, 0x21, 0x00, 0x2B,
        ])
        .build();
    Ef01::new(mock)
        .wait_ready(Duration::from_secs(2))
        .await
        .unwrap();
}
