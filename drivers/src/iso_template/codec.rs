//! The template sensor's frames: `F5 1F | length (u16 BE) | payload | sum (u16 BE)`, where the
//! sum is taken over the length bytes and the payload. Pure functions over byte buffers.

/// The two sync bytes that start every frame.
pub const SYNC: [u8; 2] = [0xF5, 0x1F];
/// Largest payload a frame may declare: a record with several views of 255 minutiae fits.
pub const MAX_PAYLOAD: usize = 8192;
const HEADER: usize = 4;
const TRAILER: usize = 2;

/// A parse that made progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A valid frame occupying the first `len` bytes of the buffer.
    Template {
        /// The payload: one finger minutiae record, as the sensor sent it.
        template: Vec<u8>,
        /// Bytes consumed.
        len: usize,
    },
    /// The start of a frame; this many more bytes are needed.
    NeedMore(usize),
}

/// Bytes that are not a valid frame; drop [`FrameError::skip`] bytes and parse again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Bytes before the next sync.
    #[error("{0} byte(s) of garbage before a frame")]
    Garbage(usize),
    /// A declared length of 0 or above [`MAX_PAYLOAD`].
    #[error("frame declares {0} payload bytes (1..=8192 allowed)")]
    BadLength(usize),
    /// The sum does not match.
    #[error("bad checksum: frame says {found:#06x}, bytes sum to {computed:#06x}")]
    BadChecksum {
        /// Checksum in the frame.
        found: u16,
        /// Sum of the length bytes and the payload.
        computed: u16,
    },
}

impl FrameError {
    /// Bytes to drop before parsing again: garbage up to the next sync, otherwise one byte so
    /// the search for a sync starts inside the bad frame (a cut frame may hide a whole one).
    pub fn skip(&self) -> usize {
        match self {
            FrameError::Garbage(n) => *n,
            _ => 1,
        }
    }
}

fn checksum(length_and_payload: &[u8]) -> u16 {
    length_and_payload
        .iter()
        .fold(0u16, |sum, &b| sum.wrapping_add(u16::from(b)))
}

/// The frame a sensor sends for `template`, or `None` if it is empty or longer than
/// [`MAX_PAYLOAD`].
pub fn encode(template: &[u8]) -> Option<Vec<u8>> {
    if template.is_empty() || template.len() > MAX_PAYLOAD {
        return None;
    }
    let len = u16::try_from(template.len()).ok()?;
    let mut out = Vec::with_capacity(HEADER + template.len() + TRAILER);
    out.extend_from_slice(&SYNC);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(template);
    let sum = checksum(&out[2..]);
    out.extend_from_slice(&sum.to_be_bytes());
    Some(out)
}

/// Parses the frame at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Decoded, FrameError> {
    match buf.iter().position(|&b| b == SYNC[0]) {
        None if buf.is_empty() => return Ok(Decoded::NeedMore(HEADER)),
        None => return Err(FrameError::Garbage(buf.len())),
        Some(0) => {}
        Some(n) => return Err(FrameError::Garbage(n)),
    }
    if buf.len() < 2 {
        return Ok(Decoded::NeedMore(HEADER - buf.len()));
    }
    if buf[1] != SYNC[1] {
        return Err(FrameError::Garbage(1));
    }
    if buf.len() < HEADER {
        return Ok(Decoded::NeedMore(HEADER - buf.len()));
    }
    let n = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if n == 0 || n > MAX_PAYLOAD {
        return Err(FrameError::BadLength(n));
    }
    let total = HEADER + n + TRAILER;
    if buf.len() < total {
        return Ok(Decoded::NeedMore(total - buf.len()));
    }
    let computed = checksum(&buf[2..HEADER + n]);
    let found = u16::from_be_bytes([buf[HEADER + n], buf[HEADER + n + 1]]);
    if computed != found {
        return Err(FrameError::BadChecksum { found, computed });
    }
    Ok(Decoded::Template {
        template: buf[HEADER..HEADER + n].to_vec(),
        len: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3-byte payload AA BB CC: sum = 00 + 03 + AA + BB + CC = 3 + 170 + 187 + 204 = 564 = 0x0234.
    const EXAMPLE: [u8; 9] = [0xF5, 0x1F, 0x00, 0x03, 0xAA, 0xBB, 0xCC, 0x02, 0x34];

    fn template(buf: &[u8]) -> Vec<u8> {
        match parse(buf) {
            Ok(Decoded::Template { template, .. }) => template,
            other => panic!("no template: {other:?}"),
        }
    }

    #[test]
    fn parses_a_worked_example_and_encodes_it_back() {
        assert_eq!(
            parse(&EXAMPLE),
            Ok(Decoded::Template {
                template: vec![0xAA, 0xBB, 0xCC],
                len: 9
            })
        );
        assert_eq!(encode(&[0xAA, 0xBB, 0xCC]).as_deref(), Some(&EXAMPLE[..]));
    }

    #[test]
    fn incomplete_header_asks_for_more() {
        assert_eq!(parse(&[]), Ok(Decoded::NeedMore(4)));
        assert_eq!(parse(&EXAMPLE[..1]), Ok(Decoded::NeedMore(3)));
        assert_eq!(parse(&EXAMPLE[..3]), Ok(Decoded::NeedMore(1)));
        assert_eq!(parse(&EXAMPLE[..6]), Ok(Decoded::NeedMore(3)));
    }

    #[test]
    fn rejects_bad_checksum() {
        let mut bytes = EXAMPLE;
        bytes[8] = 0x35;
        assert_eq!(
            parse(&bytes),
            Err(FrameError::BadChecksum {
                found: 0x0235,
                computed: 0x0234
            })
        );
    }

    #[test]
    fn rejects_lengths_out_of_range_without_waiting_for_them() {
        assert_eq!(
            parse(&[0xF5, 0x1F, 0x00, 0x00]),
            Err(FrameError::BadLength(0))
        );
        assert_eq!(
            parse(&[0xF5, 0x1F, 0x20, 0x01]),
            Err(FrameError::BadLength(8193))
        );
        assert_eq!(encode(&[]), None);
        assert_eq!(encode(&vec![0; MAX_PAYLOAD + 1]), None);
        assert!(encode(&vec![0xFF; MAX_PAYLOAD]).is_some());
    }

    #[test]
    fn resyncs_after_garbage_and_cut_frames() {
        let mut line = vec![0x00, 0x7E, 0xF5, 0x00];
        line.extend_from_slice(&EXAMPLE[..6]); // a frame cut short by a lifted finger
        line.extend_from_slice(&EXAMPLE);
        line.extend_from_slice(&EXAMPLE);
        let mut found = Vec::new();
        let mut at = 0;
        while at < line.len() {
            match parse(&line[at..]) {
                Ok(Decoded::Template { template, len }) => {
                    found.push(template);
                    at += len;
                }
                Ok(Decoded::NeedMore(_)) => break,
                Err(e) => at += e.skip(),
            }
        }
        assert_eq!(found, [vec![0xAA, 0xBB, 0xCC], vec![0xAA, 0xBB, 0xCC]]);
        assert_eq!(template(&EXAMPLE), [0xAA, 0xBB, 0xCC]);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_without_panicking(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            if let Err(e) = parse(&bytes) {
                proptest::prop_assert!(e.skip() >= 1 && e.skip() <= bytes.len().max(1));
            }
        }

        #[test]
        fn encode_then_parse_is_the_identity(payload in proptest::collection::vec(proptest::num::u8::ANY, 1..600)) {
            let frame = encode(&payload).expect("fits");
            proptest::prop_assert_eq!(parse(&frame), Ok(Decoded::Template { template: payload, len: frame.len() }));
        }
    }
}
