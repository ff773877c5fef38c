//! PN532 HSU frames, pure.
//!
//! ```text
//! normal:   00 | 00 FF | LEN | LCS | TFI | data... | DCS | 00
//!           LEN counts TFI + data; LCS = -LEN; DCS = -(TFI + data)   (mod 256)
//! extended: 00 | 00 FF | FF FF | LENM LENL | LCS | TFI | data... | DCS | 00
//!           for more than 254 data bytes; LCS = -(LENM + LENL)
//! ACK:      00 00 FF 00 FF 00          NACK: 00 00 FF FF 00 00
//! error:    00 00 FF 01 FF 7F 81 00    (the chip's answer to a command it does not support)
//! ```
//! The preamble and postamble are optional on the wire; parsing keys on the `00 FF` start code.

/// The ACK frame the chip sends before every answer: it heard the command.
pub const ACK: [u8; 6] = [0x00, 0x00, 0xFF, 0x00, 0xFF, 0x00];
/// The NACK frame (asks the other side to send its last frame again).
pub const NACK: [u8; 6] = [0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00];
/// Frame identifier, host to PN532.
pub const TFI_HOST: u8 = 0xD4;
/// Frame identifier, PN532 to host.
pub const TFI_CHIP: u8 = 0xD5;
/// Frame identifier of the application-level error frame.
pub const TFI_ERROR: u8 = 0x7F;
/// The error frame: what the chip answers (after its ACK) to a command it does not support or
/// whose parameters make no sense.
pub const ERROR_FRAME: [u8; 8] = [0x00, 0x00, 0xFF, 0x01, 0xFF, 0x7F, 0x81, 0x00];
/// Most bytes after the TFI in one frame: the PN532's 265-byte frame buffer holds TFI + 264.
pub const MAX_DATA: usize = 264;

/// A frame whose length and data checksums are right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `00 00 FF 00 FF 00`.
    Ack,
    /// `00 00 FF FF 00 00`.
    Nack,
    /// An information frame.
    Info {
        /// D4 host to chip, D5 chip to host, 7F error.
        tfi: u8,
        /// Command code and parameters.
        data: Vec<u8>,
    },
}

impl Frame {
    /// A host-to-chip information frame.
    pub fn command(data: &[u8]) -> Self {
        Frame::Info {
            tfi: TFI_HOST,
            data: data.to_vec(),
        }
    }

    /// The frame's bytes, with preamble and postamble: a normal frame up to 254 data bytes, an
    /// extended one beyond. Data beyond [`MAX_DATA`] bytes does not fit the chip and is cut.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Frame::Ack => ACK.to_vec(),
            Frame::Nack => NACK.to_vec(),
            Frame::Info { tfi, data } => {
                let data = &data[..data.len().min(MAX_DATA)];
                let sum = data.iter().fold(*tfi, |s, b| s.wrapping_add(*b));
                let mut out = vec![0x00, 0x00, 0xFF];
                match u8::try_from(data.len() + 1) {
                    Ok(len) if len < 0xFF => out.extend_from_slice(&[len, len.wrapping_neg()]),
                    _ => {
                        let [m, l] = ((data.len() + 1) as u16).to_be_bytes();
                        out.extend_from_slice(&[
                            0xFF,
                            0xFF,
                            m,
                            l,
                            m.wrapping_add(l).wrapping_neg(),
                        ]);
                    }
                }
                out.push(*tfi);
                out.extend_from_slice(data);
                out.push(sum.wrapping_neg());
                out.push(0x00);
                out
            }
        }
    }
}

/// A parse that made progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A frame occupying the first `len` bytes (leading zeros included).
    Frame {
        /// The frame, checksums verified.
        frame: Frame,
        /// Bytes to drop from the front of the buffer, leading zeros included.
        len: usize,
    },
    /// A frame has started; at least this many more bytes are needed.
    NeedMore(usize),
}

/// Bytes that are not a valid frame; drop `skip()` bytes and parse again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Non-zero bytes before the next start code.
    #[error("{0} byte(s) of garbage before a frame")]
    Garbage(usize),
    /// LEN + LCS is not 0 mod 256.
    #[error("bad length checksum")]
    BadLengthChecksum,
    /// TFI + data + DCS is not 0 mod 256.
    #[error("bad data checksum")]
    BadDataChecksum,
    /// An extended frame longer than the chip's buffer.
    #[error("extended frame of {0} bytes: longer than the PN532's 265-byte buffer")]
    TooLong(u16),
}

impl FrameError {
    /// Bytes to drop before parsing again.
    pub fn skip(&self) -> usize {
        match self {
            FrameError::Garbage(n) => *n,
            _ => 1,
        }
    }
}

/// Parses the frame at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Decoded, FrameError> {
    let Some(start) = buf.windows(2).position(|w| w == [0x00, 0xFF]) else {
        // Keep zeros (preamble) and wait; anything else before a start code is garbage.
        return match buf.iter().rposition(|&b| b != 0x00) {
            None => Ok(Decoded::NeedMore(6usize.saturating_sub(buf.len()).max(1))),
            Some(i) => Err(FrameError::Garbage(i + 1)),
        };
    };
    if let Some(i) = buf[..start].iter().rposition(|&b| b != 0x00) {
        return Err(FrameError::Garbage(i + 1));
    }
    let body = &buf[start + 2..];
    let (Some(&len), Some(&lcs)) = (body.first(), body.get(1)) else {
        return Ok(Decoded::NeedMore(2 - body.len()));
    };
    let header = start + 4;
    let with_postamble = |n: usize| n + usize::from(buf.get(n) == Some(&0x00));
    match (len, lcs) {
        (0x00, 0xFF) => {
            return Ok(Decoded::Frame {
                frame: Frame::Ack,
                len: with_postamble(header),
            });
        }
        (0xFF, 0x00) => {
            return Ok(Decoded::Frame {
                frame: Frame::Nack,
                len: with_postamble(header),
            });
        }
        (0xFF, 0xFF) => return parse_extended(buf, start),
        _ => {}
    }
    if len.wrapping_add(lcs) != 0 || len == 0 {
        return Err(FrameError::BadLengthChecksum);
    }
    info(buf, header, usize::from(len))
}

/// An extended frame: `00 FF FF FF LENM LENL LCS TFI data DCS`, `start` at its `00 FF`.
fn parse_extended(buf: &[u8], start: usize) -> Result<Decoded, FrameError> {
    let header = start + 7;
    let (Some(&m), Some(&l), Some(&lcs)) =
        (buf.get(start + 4), buf.get(start + 5), buf.get(start + 6))
    else {
        return Ok(Decoded::NeedMore(header - buf.len()));
    };
    if m.wrapping_add(l).wrapping_add(lcs) != 0 {
        return Err(FrameError::BadLengthChecksum);
    }
    let len = u16::from_be_bytes([m, l]);
    if len == 0 {
        return Err(FrameError::BadLengthChecksum);
    }
    if usize::from(len) > MAX_DATA + 1 {
        return Err(FrameError::TooLong(len));
    }
    info(buf, header, usize::from(len))
}

/// The TFI, data and DCS of an information frame whose `len` bytes start at `header`.
fn info(buf: &[u8], header: usize, len: usize) -> Result<Decoded, FrameError> {
    let with_postamble = |n: usize| n + usize::from(buf.get(n) == Some(&0x00));
    let end = header + len + 1;
    if buf.len() < end {
        return Ok(Decoded::NeedMore(end - buf.len()));
    }
    let payload = &buf[header..end];
    if payload.iter().fold(0u8, |s, b| s.wrapping_add(*b)) != 0 {
        return Err(FrameError::BadDataChecksum);
    }
    Ok(Decoded::Frame {
        frame: Frame::Info {
            tfi: payload[0],
            data: payload[1..payload.len() - 1].to_vec(),
        },
        len: with_postamble(end),
    })
}

/// One ISO14443A target from an InListPassiveTarget reply (`4B` and after).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetA {
    /// SENS_RES (ATQA).
    pub sens_res: [u8; 2],
    /// SEL_RES (SAK).
    pub sel_res: u8,
    /// The UID: 4, 7 or 10 bytes.
    pub uid: Vec<u8>,
}

/// Parses the data of an InListPassiveTarget reply: `4B | NbTg | Tg | SENS_RES(2) | SEL_RES |
/// NFCIDLength | NFCID...`. `Ok(None)` when no target was found.
pub fn parse_list_passive_target(data: &[u8]) -> Result<Option<TargetA>, &'static str> {
    match data {
        [0x4B, 0, ..] => Ok(None),
        [0x4B, _, _tg, s0, s1, sel, n, rest @ ..] => {
            let n = usize::from(*n);
            if !matches!(n, 4 | 7 | 10) {
                return Err("UID length is not 4, 7 or 10");
            }
            let uid = rest.get(..n).ok_or("UID shorter than its length byte")?;
            Ok(Some(TargetA {
                sens_res: [*s0, *s1],
                sel_res: *sel,
                uid: uid.to_vec(),
            }))
        }
        [0x4B, ..] => Err("target data too short"),
        _ => Err("not an InListPassiveTarget reply"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &[u8]) -> Frame {
        match parse(bytes) {
            Ok(Decoded::Frame { frame, len }) => {
                assert_eq!(len, bytes.len());
                frame
            }
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[test]
    fn encodes_datasheet_commands() {
        assert_eq!(
            Frame::command(&[0x02]).encode(),
            [0x00, 0x00, 0xFF, 0x02, 0xFE, 0xD4, 0x02, 0x2A, 0x00]
        );
        assert_eq!(
            Frame::command(&[0x14, 0x01, 0x14, 0x01]).encode(),
            [
                0x00, 0x00, 0xFF, 0x05, 0xFB, 0xD4, 0x14, 0x01, 0x14, 0x01, 0x02, 0x00
            ]
        );
        assert_eq!(
            Frame::command(&[0x4A, 0x01, 0x00]).encode(),
            [
                0x00, 0x00, 0xFF, 0x04, 0xFC, 0xD4, 0x4A, 0x01, 0x00, 0xE1, 0x00
            ]
        );
    }

    #[test]
    fn parses_ack_and_datasheet_frames() {
        assert_eq!(frame(&[0x00, 0x00, 0xFF, 0x00, 0xFF, 0x00]), Frame::Ack);
        assert_eq!(frame(&[0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00]), Frame::Nack);
        assert_eq!(
            frame(&[0x00, 0x00, 0xFF, 0x02, 0xFE, 0xD4, 0x02, 0x2A, 0x00]),
            Frame::Info {
                tfi: 0xD4,
                data: vec![0x02]
            }
        );
    }

    #[test]
    fn rejects_bad_checksums() {
        assert_eq!(
            parse(&[0x00, 0x00, 0xFF, 0x02, 0xFD, 0xD4, 0x02, 0x2A, 0x00]),
            Err(FrameError::BadLengthChecksum)
        );
        assert_eq!(
            parse(&[0x00, 0x00, 0xFF, 0x02, 0xFE, 0xD4, 0x02, 0x2B, 0x00]),
            Err(FrameError::BadDataChecksum)
        );
    }

    #[test]
    fn incomplete_frame_asks_for_more() {
        assert_eq!(parse(&[0x00, 0x00, 0xFF, 0x02]), Ok(Decoded::NeedMore(1)));
        assert_eq!(
            parse(&[0x00, 0x00, 0xFF, 0x02, 0xFE, 0xD4]),
            Ok(Decoded::NeedMore(2))
        );
        assert!(matches!(parse(&[0x00]), Ok(Decoded::NeedMore(_))));
    }

    #[test]
    fn resyncs_after_garbage() {
        assert_eq!(
            parse(&[0x55, 0x12, 0x00, 0x00, 0xFF]),
            Err(FrameError::Garbage(2))
        );
        assert_eq!(parse(&[0x55, 0x12]), Err(FrameError::Garbage(2)));
    }

    #[test]
    fn parses_the_error_frame() {
        assert_eq!(
            frame(&[0x00, 0x00, 0xFF, 0x01, 0xFF, 0x7F, 0x81, 0x00]),
            Frame::Info {
                tfi: 0x7F,
                data: vec![]
            }
        );
        assert_eq!(
            Frame::Info {
                tfi: TFI_ERROR,
                data: vec![]
            }
            .encode(),
            ERROR_FRAME
        );
    }

    #[test]
    fn parses_extended_frames() {
        // D5 01 00 as an extended frame: LENM 00, LENL 03, LCS -(00+03) = FD,
        // DCS -(D5+01+00) = -D6 = 2A.
        let small = [
            0x00, 0x00, 0xFF, 0xFF, 0xFF, 0x00, 0x03, 0xFD, 0xD5, 0x01, 0x00, 0x2A, 0x00,
        ];
        assert_eq!(
            frame(&small),
            Frame::Info {
                tfi: 0xD5,
                data: vec![0x01, 0x00]
            }
        );
        for cut in 1..small.len() - 1 {
            assert!(
                matches!(parse(&small[..cut]), Ok(Decoded::NeedMore(_))),
                "{cut} bytes"
            );
        }
        let mut bad = small;
        bad[7] = 0xFE;
        assert_eq!(parse(&bad), Err(FrameError::BadLengthChecksum));
        // 259 data bytes + TFI = 260 = 01 04: LCS -(01+04) = FB.
        let data = vec![0xA5; 259];
        let bytes = Frame::Info {
            tfi: 0xD4,
            data: data.clone(),
        }
        .encode();
        assert_eq!(bytes[..8], [0x00, 0x00, 0xFF, 0xFF, 0xFF, 0x01, 0x04, 0xFB]);
        assert_eq!(bytes.len(), 8 + 260 + 2);
        assert_eq!(frame(&bytes), Frame::Info { tfi: 0xD4, data });
        // Up to 253 data bytes go in a normal frame; from 254 (LEN would be FF) the encoder
        // switches to an extended one.
        assert_eq!(Frame::command(&[0; 253]).encode()[3], 0xFE);
        assert_eq!(Frame::command(&[0; 254]).encode()[3..5], [0xFF, 0xFF]);
        // Longer than the chip's buffer: refused, not waited for.
        assert_eq!(
            parse(&[0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x01]),
            Err(FrameError::TooLong(0xFF00))
        );
    }

    #[test]
    fn parses_target_with_4_and_7_byte_uids() {
        // D5 4B | 1 target | Tg 1 | SENS_RES 00 04 | SEL_RES 08 | 4 | DE AD BE EF
        let four = [
            0x4B, 0x01, 0x01, 0x00, 0x04, 0x08, 0x04, 0xDE, 0xAD, 0xBE, 0xEF,
        ];
        let t = parse_list_passive_target(&four).unwrap().unwrap();
        assert_eq!(t.uid, [0xDE, 0xAD, 0xBE, 0xEF]);
        assert_eq!(t.sens_res, [0x00, 0x04]);
        // NTAG215: SENS_RES 00 44, SEL_RES 00, 7-byte UID.
        let seven = [
            0x4B, 0x01, 0x01, 0x00, 0x44, 0x00, 0x07, 0x04, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
        ];
        let t = parse_list_passive_target(&seven).unwrap().unwrap();
        assert_eq!(t.uid, [0x04, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66]);
        assert_eq!(parse_list_passive_target(&[0x4B, 0x00]), Ok(None));
        assert!(parse_list_passive_target(&four[..9]).is_err());
        assert!(parse_list_passive_target(&[0x4B, 0x01, 0x01, 0, 4, 8, 5, 1, 2, 3, 4, 5]).is_err());
    }

    #[test]
    fn an_extended_frame_cut_short_asks_for_exactly_the_missing_bytes() {
        // 00 | 00 FF | FF FF | LENM 00 LENL 03 | LCS FD | D5 01 00 | DCS 2A | 00
        let small = [
            0x00, 0x00, 0xFF, 0xFF, 0xFF, 0x00, 0x03, 0xFD, 0xD5, 0x01, 0x00, 0x2A, 0x00,
        ];
        // The length bytes and LCS end at byte 8; then TFI, two data bytes and DCS.
        for (cut, missing) in [(5, 3), (6, 2), (7, 1), (8, 4), (10, 2), (11, 1)] {
            assert_eq!(
                parse(&small[..cut]),
                Ok(Decoded::NeedMore(missing)),
                "{cut} bytes"
            );
        }
    }

    #[test]
    fn an_extended_frame_filling_the_chips_buffer_is_read_and_one_byte_more_is_refused() {
        // TFI + 264 data bytes = 265 = 01 09: LCS -(01+09) = F6. The data is all zeros, so
        // DCS = -D5 = 2B.
        let full = Frame::Info {
            tfi: TFI_CHIP,
            data: vec![0; 264],
        };
        let bytes = full.encode();
        assert_eq!(bytes[..8], [0x00, 0x00, 0xFF, 0xFF, 0xFF, 0x01, 0x09, 0xF6]);
        assert_eq!(bytes[bytes.len() - 2..], [0x2B, 0x00]);
        assert_eq!(frame(&bytes), full);
        // 266 = 01 0A: LCS -(01+0A) = F5. Refused from its header, not waited for.
        assert_eq!(
            parse(&[0x00, 0x00, 0xFF, 0xFF, 0xFF, 0x01, 0x0A, 0xF5]),
            Err(FrameError::TooLong(266))
        );
    }

    #[test]
    fn frames_without_preamble_or_postamble_are_read() {
        // The preamble and postamble are optional: the frame is the start code to the DCS.
        assert_eq!(frame(&[0x00, 0xFF, 0x00, 0xFF]), Frame::Ack);
        assert_eq!(frame(&[0x00, 0xFF, 0xFF, 0x00]), Frame::Nack);
        assert_eq!(
            frame(&[0x00, 0xFF, 0x02, 0xFE, 0xD4, 0x02, 0x2A]),
            Frame::Info {
                tfi: 0xD4,
                data: vec![0x02]
            }
        );
        assert_eq!(
            frame(&[
                0x00, 0xFF, 0xFF, 0xFF, 0x00, 0x03, 0xFD, 0xD5, 0x01, 0x00, 0x2A
            ]),
            Frame::Info {
                tfi: 0xD5,
                data: vec![0x01, 0x00]
            }
        );
    }

    #[test]
    fn a_target_reply_cut_short_is_told_apart_from_another_reply() {
        // 4B | 1 target | Tg 1 | SENS_RES 00 04 ... and nothing more.
        assert_eq!(
            parse_list_passive_target(&[0x4B, 0x01, 0x01, 0x00, 0x04]),
            Err("target data too short")
        );
        assert_eq!(
            parse_list_passive_target(&[0x4B, 0x01, 0x01, 0x00, 0x04, 0x08, 0x04, 0xDE]),
            Err("UID shorter than its length byte")
        );
        // A GetFirmwareVersion answer where the target list was expected.
        assert_eq!(
            parse_list_passive_target(&[0x03, 0x32, 0x01, 0x06, 0x07]),
            Err("not an InListPassiveTarget reply")
        );
    }

    #[test]
    fn one_resync_step_drops_all_the_noise_before_a_frame() {
        let noisy = [0x55, 0x12, 0x34, 0x00, 0x00, 0xFF, 0x00, 0xFF, 0x00];
        let e = parse(&noisy).expect_err("noise first");
        assert_eq!(e, FrameError::Garbage(3));
        assert_eq!(
            parse(&noisy[e.skip()..]),
            Ok(Decoded::Frame {
                frame: Frame::Ack,
                len: 6
            })
        );
    }
}
