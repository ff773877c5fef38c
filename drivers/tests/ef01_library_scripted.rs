//! Template transfer replayed byte for byte. Every byte string is written out from the datasheet
//! (../shared/reference/readers.md), with its checksum worked in a comment, not built with the
//! crate's encoder. The mock fails the test if the driver writes anything else or leaves part of
//! the script unused. A 64-byte template in 32-byte packets keeps the bytes short.

use rollcall_drivers::ef01::Ef01;
use tokio_test::io::Builder;

const ACK_OK: &[u8] = &[
    0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x03, 0x00, 0x00, 0x0A,
];
// ReadSysPara: 01 + 00 03 + 0F = 0x13.
const READ_SYS_PARA: &[u8] = &[
    0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x03, 0x0F, 0x00, 0x13,
];
// An R307 set to 32-byte packets: status 0, system id 9, library 1000 (03E8), level 3, address
// FFFFFFFF, packet size code 0, baud N 6. LEN 0x13; sum 07 + 13 + 09 + 03 + E8 + 03 + 4 x FF + 06
// = 0x513.
const SYS_PARA_32: &[u8] = &[
    0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x13, 0x00, 0x00, 0x00, 0x00, 0x09, 0x03, 0xE8,
    0x00, 0x03, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x06, 0x05, 0x13,
];
// DownChar into buffer 1: 01 + 00 04 + 09 + 01 = 0x0F.
const DOWN_CHAR_1: &[u8] = &[
    0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x04, 0x09, 0x01, 0x00, 0x0F,
];
// UpChar from buffer 1: 01 + 00 04 + 08 + 01 = 0x0E.
const UP_CHAR_1: &[u8] = &[
    0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x04, 0x08, 0x01, 0x00, 0x0E,
];
// Store buffer 1 into slot 258 (0102): 01 + 00 06 + 06 + 01 + 01 + 02 = 0x11.
const STORE_1_258: &[u8] = &[
    0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x06, 0x06, 0x01, 0x01, 0x02, 0x00, 0x11,
];

/// A packet of 32 bytes `fill` with PID `pid` (02 data, 08 end of data) and its checksum.
fn data_packet(pid: u8, fill: u8, checksum: [u8; 2]) -> Vec<u8> {
    let mut bytes = vec![0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, pid, 0x00, 0x22];
    bytes.extend([fill; 32]);
    bytes.extend(checksum);
    bytes
}

fn template() -> Vec<u8> {
    [[0x11; 32], [0x22; 32]].concat()
}

#[tokio::test]
async fn download_asks_the_packet_size_then_sends_data_packets_of_it_and_stores() {
    let mock = Builder::new()
        .write(READ_SYS_PARA)
        .read(SYS_PARA_32)
        .write(DOWN_CHAR_1)
        .read(ACK_OK)
        // 02 + 00 22 + 32 x 11 = 0x244.
        .write(&data_packet(0x02, 0x11, [0x02, 0x44]))
        // 08 + 00 22 + 32 x 22 = 0x46A.
        .write(&data_packet(0x08, 0x22, [0x04, 0x6A]))
        .write(STORE_1_258)
        .read(ACK_OK)
        .build();
    let mut dev = Ef01::new(mock);
    dev.load_template(258, &template()).await.unwrap();
}

#[tokio::test]
async fn upload_collects_data_packets_until_end_of_data() {
    let mock = Builder::new()
        .write(UP_CHAR_1)
        .read(ACK_OK)
        .read(&data_packet(0x02, 0x11, [0x02, 0x44]))
        .read(&data_packet(0x08, 0x22, [0x04, 0x6A]))
        .build();
    let mut dev = Ef01::new(mock);
    assert_eq!(dev.upload_char(1).await.unwrap(), template());
}

#[tokio::test]
async fn upload_with_a_bad_data_checksum_is_an_error_naming_where() {
    let mock = Builder::new()
        .write(UP_CHAR_1)
        .read(ACK_OK)
        .read(&data_packet(0x02, 0x11, [0x02, 0x44]))
        .read(&data_packet(0x08, 0x22, [0x04, 0x6B])) // one off
        .build();
    let mut dev = Ef01::new(mock);
    let err = dev.upload_char(1).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "UpChar: unexpected reply: corrupt data packet after 32 bytes: bad checksum: packet says \
         0x046b, bytes sum to 0x046a"
    );
}
