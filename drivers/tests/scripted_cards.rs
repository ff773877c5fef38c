//! PN532 and RDM6300 exchanges replayed byte for byte; frames written out from the datasheet
//! layouts in ../shared/reference/readers.md (checksums worked by hand in the comments).

use std::time::Duration;

use rollcall_drivers::pn532::Pn532;
use rollcall_drivers::rdm6300::Rdm6300;
use tokio_test::io::Builder;

const ACK: &[u8] = &[0x00, 0x00, 0xFF, 0x00, 0xFF, 0x00];
const WAKE: &[u8] = &[0x55, 0x55, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const SAM_CONFIGURATION: &[u8] = &[
    0x00, 0x00, 0xFF, 0x05, 0xFB, 0xD4, 0x14, 0x01, 0x14, 0x01, 0x02, 0x00,
];
// D5 15: LEN 2, LCS FE, DCS -(D5+15) = -EA = 16.
const SAM_REPLY: &[u8] = &[0x00, 0x00, 0xFF, 0x02, 0xFE, 0xD5, 0x15, 0x16, 0x00];
const IN_LIST_PASSIVE_TARGET: &[u8] = &[
    0x00, 0x00, 0xFF, 0x04, 0xFC, 0xD4, 0x4A, 0x01, 0x00, 0xE1, 0x00,
];

#[tokio::test]
async fn pn532_wakes_up_and_reads_a_4_byte_uid() {
    let mock = Builder::new()
        .write(WAKE)
        .write(SAM_CONFIGURATION)
        .read(ACK)
        .read(SAM_REPLY)
        .write(IN_LIST_PASSIVE_TARGET)
        .read(ACK)
        // D5 4B | 1 target | Tg 1 | SENS_RES 00 04 | SEL_RES 08 | len 4 | DE AD BE EF
        // LEN 0C, LCS F4, DCS 96.
        .read(&[
            0x00, 0x00, 0xFF, 0x0C, 0xF4, 0xD5, 0x4B, 0x01, 0x01, 0x00, 0x04, 0x08, 0x04, 0xDE,
            0xAD, 0xBE, 0xEF, 0x96, 0x00,
        ])
        .build();
    let mut dev = Pn532::new(mock);
    dev.wake_up().await.unwrap();
    let target = dev.poll(Duration::from_millis(500)).await.unwrap().unwrap();
    assert_eq!(target.uid, [0xDE, 0xAD, 0xBE, 0xEF]);
    assert_eq!(target.sens_res, [0x00, 0x04]);
    assert_eq!(target.sel_res, 0x08);
}

#[tokio::test]
async fn pn532_bounded_search_reports_no_card() {
    let mock = Builder::new()
        // RFConfiguration MaxRetries: D4 32 05 FF 01 02, LEN 6, LCS FA, DCS F3.
        .write(&[
            0x00, 0x00, 0xFF, 0x06, 0xFA, 0xD4, 0x32, 0x05, 0xFF, 0x01, 0x02, 0xF3, 0x00,
        ])
        .read(ACK)
        // D5 33: LEN 2, LCS FE, DCS F8.
        .read(&[0x00, 0x00, 0xFF, 0x02, 0xFE, 0xD5, 0x33, 0xF8, 0x00])
        .write(IN_LIST_PASSIVE_TARGET)
        .read(ACK)
        // D5 4B 00: no target; LEN 3, LCS FD, DCS E0.
        .read(&[0x00, 0x00, 0xFF, 0x03, 0xFD, 0xD5, 0x4B, 0x00, 0xE0, 0x00])
        .build();
    let mut dev = Pn532::new(mock);
    dev.set_passive_retries(2).await.unwrap();
    assert_eq!(dev.poll(Duration::from_millis(500)).await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn pn532_endless_search_is_aborted_with_an_ack() {
    let mock = Builder::new()
        .write(IN_LIST_PASSIVE_TARGET)
        .read(ACK)
        .wait(Duration::from_secs(5))
        .write(ACK)
        .build();
    let mut dev = Pn532::new(mock);
    assert_eq!(dev.poll(Duration::from_millis(300)).await.unwrap(), None);
}

#[tokio::test]
async fn pn532_firmware_version() {
    let mock = Builder::new()
        .write(&[0x00, 0x00, 0xFF, 0x02, 0xFE, 0xD4, 0x02, 0x2A, 0x00])
        .read(ACK)
        // D5 03 32 01 06 07: LEN 6, LCS FA, DCS E8.
        .read(&[
            0x00, 0x00, 0xFF, 0x06, 0xFA, 0xD5, 0x03, 0x32, 0x01, 0x06, 0x07, 0xE8, 0x00,
        ])
        .build();
    let fw = Pn532::new(mock).firmware_version().await.unwrap();
    assert_eq!((fw.ic, fw.version, fw.revision), (0x32, 1, 6));
}

#[tokio::test]
async fn rdm6300_datasheet_frame_repeated_is_one_tap() {
    let frame: &[u8] = &[
        0x02, 0x36, 0x32, 0x45, 0x33, 0x30, 0x38, 0x36, 0x43, 0x45, 0x44, 0x30, 0x38, 0x03,
    ];
    let mock = Builder::new()
        .read(frame)
        .read(frame)
        .read(&frame[..7])
        .read(&frame[7..])
        .build();
    let mut reader = Rdm6300::new(mock);
    let tag = reader.next_tap().await.unwrap().unwrap();
    assert_eq!(tag.id, 3_808_980_205);
    assert_eq!(tag.uid(), [0x62, 0xE3, 0x08, 0x6C, 0xED]);
    assert_eq!(
        reader.next_tap().await.unwrap(),
        None,
        "repeats collapsed, then end of input"
    );
}

// RFConfiguration MaxRetries 02: D4 32 05 FF 01 02, LEN 6, LCS FA, DCS F3.
const MAX_RETRIES_2: &[u8] = &[
    0x00, 0x00, 0xFF, 0x06, 0xFA, 0xD4, 0x32, 0x05, 0xFF, 0x01, 0x02, 0xF3, 0x00,
];
// D5 33: LEN 2, LCS FE, DCS F8.
const MAX_RETRIES_REPLY: &[u8] = &[0x00, 0x00, 0xFF, 0x02, 0xFE, 0xD5, 0x33, 0xF8, 0x00];
// D5 4B | 1 target | Tg 1 | SENS_RES 00 04 | SEL_RES 08 | len 4 | DE AD BE EF: LEN 0C, LCS F4,
// DCS 96.
const TARGET_DEADBEEF: &[u8] = &[
    0x00, 0x00, 0xFF, 0x0C, 0xF4, 0xD5, 0x4B, 0x01, 0x01, 0x00, 0x04, 0x08, 0x04, 0xDE, 0xAD, 0xBE,
    0xEF, 0x96, 0x00,
];

#[tokio::test(start_paused = true)]
async fn pn532_that_power_cycled_is_woken_before_the_retry() {
    // The chip browned out after MaxRetries was set: it sleeps and does not even ACK the poll.
    // The driver sends the wake-up preamble, SAMConfiguration and MaxRetries again, then the
    // poll, within one call: one timeout, no reader-down cycle.
    let start = tokio::time::Instant::now();
    let mock = Builder::new()
        .write(MAX_RETRIES_2)
        .read(ACK)
        .read(MAX_RETRIES_REPLY)
        .write(IN_LIST_PASSIVE_TARGET)
        .wait(Duration::from_secs(1))
        .write(WAKE)
        .write(SAM_CONFIGURATION)
        .read(ACK)
        .read(SAM_REPLY)
        .write(MAX_RETRIES_2)
        .read(ACK)
        .read(MAX_RETRIES_REPLY)
        .write(IN_LIST_PASSIVE_TARGET)
        .read(ACK)
        .read(TARGET_DEADBEEF)
        .build();
    let mut dev = Pn532::new(mock);
    dev.set_passive_retries(2).await.unwrap();
    let target = dev.poll(Duration::from_millis(500)).await.unwrap().unwrap();
    assert_eq!(target.uid, [0xDE, 0xAD, 0xBE, 0xEF]);
    assert!(
        start.elapsed() < Duration::from_millis(1_100),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn pn532_error_frame_is_an_error_not_a_retry() {
    // An unknown command 01: D4 01, LEN 2, LCS FE, DCS -(D4+01) = 2B. The chip ACKs it, then
    // answers the error frame 00 00 FF 01 FF 7F 81 00.
    let mock = Builder::new()
        .write(&[0x00, 0x00, 0xFF, 0x02, 0xFE, 0xD4, 0x01, 0x2B, 0x00])
        .read(ACK)
        .read(&[0x00, 0x00, 0xFF, 0x01, 0xFF, 0x7F, 0x81, 0x00])
        .build();
    let err = Pn532::new(mock)
        .command(&[0x01], Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("error frame"), "{err}");
}

#[tokio::test]
async fn pn532_extended_frames_both_ways() {
    // Diagnose line test (00 00) with 258 bytes A5: TFI + 260 = 261 = 01 05, LCS -(01+05) = FA;
    // 258 x A5 = 0xA64A, so DCS = -(D4+00+00+4A) = E2. The echo D5 01 00 + the same bytes:
    // same lengths, DCS -(D5+01+00+4A) = E0.
    let payload = vec![0xA5; 258];
    let mut request = vec![
        0x00, 0x00, 0xFF, 0xFF, 0xFF, 0x01, 0x05, 0xFA, 0xD4, 0x00, 0x00,
    ];
    request.extend_from_slice(&payload);
    request.extend_from_slice(&[0xE2, 0x00]);
    let mut reply = vec![
        0x00, 0x00, 0xFF, 0xFF, 0xFF, 0x01, 0x05, 0xFA, 0xD5, 0x01, 0x00,
    ];
    reply.extend_from_slice(&payload);
    reply.extend_from_slice(&[0xE0, 0x00]);
    let mock = Builder::new()
        .write(&request)
        .read(ACK)
        .read(&reply)
        .build();
    let command = [&[0x00, 0x00][..], &payload].concat();
    let got = Pn532::new(mock)
        .command(&command, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(got, [&[0x01, 0x00][..], &payload].concat());
}
