//! EF01 packets: pure parsing and encoding, no I/O.
//!
//! ```text
//! EF 01 | ADDR (4) | PID (1) | LEN (2) | PAYLOAD (LEN-2) | SUM (2)     all big-endian
//! SUM = low 16 bits of PID + LEN hi + LEN lo + every payload byte
//! ```

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// First two bytes of every packet.
pub const HEADER: [u8; 2] = [0xEF, 0x01];
/// The address every module answers to until it is changed.
pub const DEFAULT_ADDRESS: u32 = 0xFFFF_FFFF;
/// Bytes before the payload: header, address, PID, LEN.
pub const PREFIX_LEN: usize = 9;
/// Largest LEN accepted: a 256-byte data packet plus its checksum.
pub const MAX_LEN: u16 = 258;

/// Packet identifier (PID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// 0x01: a command from the host.
    Command,
    /// 0x02: a data packet with more to follow.
    Data,
    /// 0x07: the module's acknowledgement (confirmation code first).
    Ack,
    /// 0x08: the last data packet of a transfer.
    EndData,
}

impl PacketKind {
    /// The packet identifier byte on the wire.
    pub fn pid(self) -> u8 {
        match self {
            PacketKind::Command => 0x01,
            PacketKind::Data => 0x02,
            PacketKind::Ack => 0x07,
            PacketKind::EndData => 0x08,
        }
    }

    /// The kind for a PID byte, if it is one.
    pub fn from_pid(pid: u8) -> Option<Self> {
        match pid {
            0x01 => Some(PacketKind::Command),
            0x02 => Some(PacketKind::Data),
            0x07 => Some(PacketKind::Ack),
            0x08 => Some(PacketKind::EndData),
            _ => None,
        }
    }
}

/// One checked packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Module address the packet is for or from.
    pub address: u32,
    /// Command, data, ack or end of data (the PID byte).
    pub kind: PacketKind,
    /// The payload (instruction code or confirmation code first), without the checksum.
    pub payload: Vec<u8>,
}

impl Packet {
    /// A packet to the default address.
    pub fn new(kind: PacketKind, payload: Vec<u8>) -> Self {
        Self {
            address: DEFAULT_ADDRESS,
            kind,
            payload,
        }
    }

    /// The packet's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PREFIX_LEN + self.payload.len() + 2);
        self.encode_into(&mut out);
        out
    }

    /// Appends the packet's bytes to `out`.
    ///
    /// Payloads longer than 256 bytes are not valid EF01 packets; callers split data into
    /// packet-size chunks first (see [`split_data`]).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let len = (self.payload.len() + 2) as u16;
        out.extend_from_slice(&HEADER);
        out.extend_from_slice(&self.address.to_be_bytes());
        out.push(self.kind.pid());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.payload);
        out.extend_from_slice(&checksum(self.kind.pid(), len, &self.payload).to_be_bytes());
    }
}

/// Low 16 bits of PID + LEN bytes + payload bytes.
pub fn checksum(pid: u8, len: u16, payload: &[u8]) -> u16 {
    let [hi, lo] = len.to_be_bytes();
    payload.iter().fold(
        u16::from(pid)
            .wrapping_add(u16::from(hi))
            .wrapping_add(u16::from(lo)),
        |sum, b| sum.wrapping_add(u16::from(*b)),
    )
}

/// A parse that made progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, checked packet occupying the first `len` bytes of the buffer.
    Packet {
        /// The packet, checksum verified.
        packet: Packet,
        /// Bytes it occupied.
        len: usize,
    },
    /// The buffer holds the start of a packet; at least this many more bytes are needed.
    NeedMore(usize),
}

/// Bytes that are not a valid packet. `skip()` says how many bytes to drop to resynchronise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Bytes before the next `EF 01` header (line noise, a half frame, the 0x55 after reset).
    #[error("{} byte(s) of garbage before a packet header", .0.len())]
    Garbage(Vec<u8>),
    /// The PID is not one of 01, 02, 07, 08.
    #[error("unknown packet identifier {0:#04x}")]
    UnknownPid(u8),
    /// LEN is below 2 or above 258.
    #[error("impossible packet length {0}")]
    BadLength(u16),
    /// The checksum does not match the packet.
    #[error("bad checksum: packet says {found:#06x}, bytes sum to {computed:#06x}")]
    BadChecksum {
        /// Checksum in the packet.
        found: u16,
        /// Checksum of the bytes received.
        computed: u16,
    },
}

impl FrameError {
    /// How many bytes to drop before parsing again.
    pub fn skip(&self) -> usize {
        match self {
            FrameError::Garbage(bytes) => bytes.len(),
            // Drop only the header's first byte: a real packet may start inside a corrupt one.
            _ => 1,
        }
    }
}

/// Parses the packet at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Decoded, FrameError> {
    if let Some(garbage) = leading_garbage(buf) {
        return Err(FrameError::Garbage(buf[..garbage].to_vec()));
    }
    if buf.len() < PREFIX_LEN {
        return Ok(Decoded::NeedMore(PREFIX_LEN - buf.len()));
    }
    let address = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]);
    let pid = buf[6];
    let kind = PacketKind::from_pid(pid).ok_or(FrameError::UnknownPid(pid))?;
    let len = u16::from_be_bytes([buf[7], buf[8]]);
    if !(2..=MAX_LEN).contains(&len) {
        return Err(FrameError::BadLength(len));
    }
    let total = PREFIX_LEN + usize::from(len);
    if buf.len() < total {
        return Ok(Decoded::NeedMore(total - buf.len()));
    }
    let payload = &buf[PREFIX_LEN..total - 2];
    let found = u16::from_be_bytes([buf[total - 2], buf[total - 1]]);
    let computed = checksum(pid, len, payload);
    if found != computed {
        return Err(FrameError::BadChecksum { found, computed });
    }
    Ok(Decoded::Packet {
        packet: Packet {
            address,
            kind,
            payload: payload.to_vec(),
        },
        len: total,
    })
}

/// Number of bytes before the first possible header, if any. A lone trailing `EF` is kept,
/// since its `01` may still be on the way.
fn leading_garbage(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == HEADER[0] && (i + 1 == buf.len() || buf[i + 1] == HEADER[1]) {
            break;
        }
        i += 1;
    }
    (i > 0).then_some(i)
}

/// Splits `data` into data packets of `packet_size` bytes, the last one marked [`PacketKind::EndData`].
pub fn split_data(address: u32, data: &[u8], packet_size: usize) -> Vec<Packet> {
    let size = packet_size.clamp(1, 256);
    let chunks: Vec<&[u8]> = data.chunks(size).collect();
    let last = chunks.len().saturating_sub(1);
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| Packet {
            address,
            kind: if i == last {
                PacketKind::EndData
            } else {
                PacketKind::Data
            },
            payload: chunk.to_vec(),
        })
        .collect()
}

/// tokio-util codec over [`parse`]. Corrupt input is an item, not a stream error, so one bad
/// frame never ends the stream.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ef01Codec;

impl Decoder for Ef01Codec {
    type Item = Result<Packet, FrameError>;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        match parse(src) {
            Ok(Decoded::Packet { packet, len }) => {
                src.advance(len);
                Ok(Some(Ok(packet)))
            }
            Ok(Decoded::NeedMore(n)) => {
                src.reserve(n);
                Ok(None)
            }
            Err(e) => {
                src.advance(e.skip().min(src.len()));
                Ok(Some(Err(e)))
            }
        }
    }
}

impl Encoder<Packet> for Ef01Codec {
    type Error = std::io::Error;

    fn encode(&mut self, item: Packet, dst: &mut BytesMut) -> Result<(), Self::Error> {
        dst.extend_from_slice(&item.encode());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(bytes: &[u8]) -> Packet {
        match parse(bytes) {
            Ok(Decoded::Packet { packet, len }) => {
                assert_eq!(len, bytes.len());
                packet
            }
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    #[test]
    fn parses_datasheet_ack_ok() {
        let p = packet(&[
            0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x03, 0x00, 0x00, 0x0A,
        ]);
        assert_eq!(p.kind, PacketKind::Ack);
        assert_eq!(p.address, 0xFFFF_FFFF);
        assert_eq!(p.payload, vec![0x00]);
    }

    #[test]
    fn encodes_datasheet_commands() {
        let cases: [(&[u8], &[u8]); 6] = [
            (
                &[0x01],
                &[
                    0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x03, 0x01, 0x00, 0x05,
                ],
            ),
            (
                &[0x13, 0, 0, 0, 0],
                &[
                    0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x07, 0x13, 0x00, 0x00, 0x00,
                    0x00, 0x00, 0x1B,
                ],
            ),
            (
                &[0x02, 0x01],
                &[
                    0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x04, 0x02, 0x01, 0x00, 0x08,
                ],
            ),
            (
                &[0x04, 0x01, 0x00, 0x00, 0x00, 0xC8],
                &[
                    0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x08, 0x04, 0x01, 0x00, 0x00,
                    0x00, 0xC8, 0x00, 0xD6,
                ],
            ),
            (
                &[0x1D],
                &[
                    0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x03, 0x1D, 0x00, 0x21,
                ],
            ),
            (
                &[0x35, 0x01, 0x80, 0x02, 0x00],
                &[
                    0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x07, 0x35, 0x01, 0x80, 0x02,
                    0x00, 0x00, 0xC0,
                ],
            ),
        ];
        for (payload, wire) in cases {
            assert_eq!(
                Packet::new(PacketKind::Command, payload.to_vec()).encode(),
                wire
            );
            assert_eq!(packet(wire).payload, payload);
        }
    }

    #[test]
    fn each_packet_kind_has_its_datasheet_pid_and_no_other_byte_is_one() {
        for (kind, pid) in [
            (PacketKind::Command, 0x01),
            (PacketKind::Data, 0x02),
            (PacketKind::Ack, 0x07),
            (PacketKind::EndData, 0x08),
        ] {
            assert_eq!(kind.pid(), pid);
            assert_eq!(PacketKind::from_pid(pid), Some(kind));
            let p = Packet::new(kind, vec![0x42]);
            assert_eq!(p.encode()[6], pid);
            assert_eq!(packet(&p.encode()), p, "{kind:?} over the wire and back");
        }
        for pid in (0..=255u8).filter(|b| ![0x01, 0x02, 0x07, 0x08].contains(b)) {
            assert_eq!(PacketKind::from_pid(pid), None, "{pid:#04x}");
        }
    }

    #[test]
    fn the_codec_writes_a_packets_bytes() {
        let mut dst = BytesMut::from(&b"before"[..]);
        Ef01Codec
            .encode(Packet::new(PacketKind::Command, vec![0x01]), &mut dst)
            .unwrap();
        assert_eq!(
            &dst[..],
            b"before\xEF\x01\xFF\xFF\xFF\xFF\x01\x00\x03\x01\x00\x05"
        );
    }

    #[test]
    fn rejects_bad_checksum() {
        let bytes = [
            0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x03, 0x00, 0x00, 0x0B,
        ];
        assert_eq!(
            parse(&bytes),
            Err(FrameError::BadChecksum {
                found: 0x000B,
                computed: 0x000A
            })
        );
    }

    #[test]
    fn incomplete_header_asks_for_more() {
        assert_eq!(parse(&[0xEF, 0x01, 0xFF]), Ok(Decoded::NeedMore(6)));
        assert_eq!(parse(&[0xEF]), Ok(Decoded::NeedMore(8)));
        assert_eq!(parse(&[]), Ok(Decoded::NeedMore(9)));
    }

    #[test]
    fn incomplete_payload_asks_for_more() {
        let bytes = [0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x03, 0x00];
        assert_eq!(parse(&bytes), Ok(Decoded::NeedMore(2)));
    }

    /// Runs `test` on another thread and fails if it has not finished within 20 s (it takes
    /// milliseconds): a parser that stops advancing must fail the test, not hang it.
    fn within_20_s(test: impl FnOnce() + Send + 'static) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            test();
            let _ = tx.send(());
        });
        match rx.recv_timeout(std::time::Duration::from_secs(20)) {
            Ok(()) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("not finished in 20 s"),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("failed (above)"),
        }
    }

    #[test]
    fn resyncs_after_garbage() {
        within_20_s(|| {
            let mut codec = Ef01Codec;
            let mut buf = BytesMut::from(
                &[
                    0x55, 0x13, 0xEF, 0x00, // noise, including a false EF
                    0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x03, 0x00, 0x00, 0x0A,
                ][..],
            );
            assert_eq!(
                codec.decode(&mut buf).unwrap(),
                Some(Err(FrameError::Garbage(vec![0x55, 0x13, 0xEF, 0x00])))
            );
            let p = codec.decode(&mut buf).unwrap().unwrap().unwrap();
            assert_eq!(p.payload, vec![0x00]);
            assert!(buf.is_empty());
        });
    }

    #[test]
    fn resyncs_after_half_frame() {
        // A reply cut off after its LEN, then a whole reply: the half frame's LEN swallows
        // part of the next one, so the checksum fails and parsing resumes at the next header.
        let mut buf = BytesMut::from(
            &[
                0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x03, 0xEF, 0x01, 0xFF, 0xFF, 0xFF,
                0xFF, 0x07, 0x00, 0x03, 0x02, 0x00, 0x0C,
            ][..],
        );
        within_20_s(move || {
            let mut codec = Ef01Codec;
            let mut packets = Vec::new();
            let mut items = 0;
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                // Each item takes at least one byte, so 21 bytes give at most 21 items.
                items += 1;
                assert!(items <= 21, "an item that took no byte: {item:?}");
                if let Ok(p) = item {
                    packets.push(p);
                }
            }
            assert_eq!(packets.len(), 1);
            assert_eq!(packets[0].payload, vec![0x02]);
        });
    }

    #[test]
    fn rejects_impossible_length_and_pid() {
        assert_eq!(
            parse(&[0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x07, 0xFF, 0xFF]),
            Err(FrameError::BadLength(0xFFFF))
        );
        assert_eq!(
            parse(&[0xEF, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x05, 0x00, 0x03]),
            Err(FrameError::UnknownPid(0x05))
        );
    }

    #[test]
    fn splits_template_into_packets() {
        let data: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
        let packets = split_data(DEFAULT_ADDRESS, &data, 128);
        let kinds: Vec<_> = packets.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            [PacketKind::Data, PacketKind::Data, PacketKind::EndData]
        );
        assert_eq!(packets[2].payload.len(), 44);
    }
}
