//! RDM6300 frames: `02 | 10 ASCII hex (version + 4 tag bytes) | 2 ASCII hex XOR | 03`.

use std::time::Duration;

/// Frame length on the wire.
pub const FRAME_LEN: usize = 14;
const STX: u8 = 0x02;
const ETX: u8 = 0x03;

/// One EM4100 read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag {
    /// Version / customer byte.
    pub version: u8,
    /// The 32-bit tag number (what is often printed on the card in decimal).
    pub id: u32,
}

impl Tag {
    /// The five data bytes, version first: the card's UID for punches.
    pub fn uid(&self) -> [u8; 5] {
        let [a, b, c, d] = self.id.to_be_bytes();
        [self.version, a, b, c, d]
    }

    /// The frame the module sends for this tag.
    pub fn encode(&self) -> [u8; FRAME_LEN] {
        let uid = self.uid();
        let sum = uid.iter().fold(0, |x, b| x ^ b);
        let mut out = [0u8; FRAME_LEN];
        out[0] = STX;
        for (i, b) in uid.iter().chain(std::iter::once(&sum)).enumerate() {
            out[1 + 2 * i] = hex_digit(b >> 4);
            out[2 + 2 * i] = hex_digit(b & 0x0F);
        }
        out[13] = ETX;
        out
    }
}

/// A parse that made progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A valid frame occupying the first `len` bytes.
    Tag {
        /// The tag's ID, checksum verified.
        tag: Tag,
        /// Bytes consumed.
        len: usize,
    },
    /// The start of a frame; this many more bytes are needed.
    NeedMore(usize),
}

/// Bytes that are not a valid frame; drop `skip()` bytes and parse again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Bytes before the next STX.
    #[error("{0} byte(s) of garbage before a frame")]
    Garbage(usize),
    /// A non-hex character or a missing ETX.
    #[error("malformed frame")]
    Malformed,
    /// The XOR of the data bytes does not match.
    #[error("bad checksum: frame says {found:#04x}, data XOR to {computed:#04x}")]
    BadChecksum {
        /// Checksum in the frame.
        found: u8,
        /// XOR of the data bytes.
        computed: u8,
    },
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
    match buf.iter().position(|&b| b == STX) {
        None if buf.is_empty() => return Ok(Decoded::NeedMore(FRAME_LEN)),
        None => return Err(FrameError::Garbage(buf.len())),
        Some(0) => {}
        Some(n) => return Err(FrameError::Garbage(n)),
    }
    if buf.len() < FRAME_LEN {
        // Fail early on a non-hex byte, so a half frame followed by a new STX resyncs at once.
        if buf[1..].iter().any(|&b| hex_value(b).is_none()) {
            return Err(FrameError::Malformed);
        }
        return Ok(Decoded::NeedMore(FRAME_LEN - buf.len()));
    }
    if buf[13] != ETX {
        return Err(FrameError::Malformed);
    }
    let mut bytes = [0u8; 6];
    for (i, out) in bytes.iter_mut().enumerate() {
        let hi = hex_value(buf[1 + 2 * i]).ok_or(FrameError::Malformed)?;
        let lo = hex_value(buf[2 + 2 * i]).ok_or(FrameError::Malformed)?;
        *out = hi << 4 | lo;
    }
    let computed = bytes[..5].iter().fold(0, |x, b| x ^ b);
    if computed != bytes[5] {
        return Err(FrameError::BadChecksum {
            found: bytes[5],
            computed,
        });
    }
    Ok(Decoded::Tag {
        tag: Tag {
            version: bytes[0],
            id: u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]),
        },
        len: FRAME_LEN,
    })
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn hex_digit(v: u8) -> u8 {
    b"0123456789ABCDEF"[usize::from(v & 0x0F)]
}

/// The default repeat window: one tap per presentation for any repeat period up to 500 ms,
/// even with one frame lost (a 1000 ms gap), with 200 ms to spare for UART and scheduling
/// jitter. Modules and host libraries disagree on the period (readers.md says about 220 ms;
/// libraries wait 300 ms to several seconds), and a card held in the field must not punch twice.
/// The cost: the same card taken away and shown again within 1.2 s is one tap.
pub const DEFAULT_REPEAT_WINDOW: Duration = Duration::from_millis(1200);

/// Collapses the module's repeated frames into one tap per presentation: a frame for the same
/// tag within `window` of the previous frame for it continues the same presentation.
/// Time comes in as an argument (any monotonic clock), so this is testable without a runtime.
#[derive(Debug, Clone)]
pub struct Debouncer {
    window: Duration,
    last: Option<(Tag, Duration)>,
}

impl Debouncer {
    /// A debouncer with this repeat window (see [`DEFAULT_REPEAT_WINDOW`]).
    pub fn new(window: Duration) -> Self {
        Self { window, last: None }
    }

    /// A frame for `tag` arrived at `now`; true if it starts a new presentation.
    pub fn accept(&mut self, tag: Tag, now: Duration) -> bool {
        let repeat =
            matches!(self.last, Some((t, at)) if t == tag && now.saturating_sub(at) <= self.window);
        self.last = Some((tag, now));
        !repeat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: [u8; 14] = [
        0x02, 0x36, 0x32, 0x45, 0x33, 0x30, 0x38, 0x36, 0x43, 0x45, 0x44, 0x30, 0x38, 0x03,
    ];

    #[test]
    fn parses_datasheet_example() {
        let Ok(Decoded::Tag { tag, len }) = parse(&EXAMPLE) else {
            panic!("no tag");
        };
        assert_eq!(len, 14);
        assert_eq!(tag.version, 0x62);
        assert_eq!(tag.id, 3_808_980_205);
        assert_eq!(tag.uid(), [0x62, 0xE3, 0x08, 0x6C, 0xED]);
        assert_eq!(tag.encode(), EXAMPLE);
    }

    #[test]
    fn rejects_bad_checksum() {
        let mut bytes = EXAMPLE;
        bytes[12] = b'9';
        assert_eq!(
            parse(&bytes),
            Err(FrameError::BadChecksum {
                found: 0x09,
                computed: 0x08
            })
        );
    }

    #[test]
    fn incomplete_frame_asks_for_more() {
        assert_eq!(parse(&EXAMPLE[..5]), Ok(Decoded::NeedMore(9)));
        assert_eq!(parse(&[]), Ok(Decoded::NeedMore(14)));
    }

    #[test]
    fn resyncs_after_garbage_and_half_frames() {
        let mut stream = vec![0xFF, 0x00];
        stream.extend_from_slice(&EXAMPLE[..6]); // half a frame
        stream.extend_from_slice(&EXAMPLE);
        let mut tags = Vec::new();
        let mut buf = &stream[..];
        while !buf.is_empty() {
            match parse(buf) {
                Ok(Decoded::Tag { tag, len }) => {
                    tags.push(tag);
                    buf = &buf[len..];
                }
                Ok(Decoded::NeedMore(_)) => break,
                Err(e) => {
                    // Every error drops at least one byte, so parsing always moves on.
                    assert!(e.skip() > 0, "{e:?} drops nothing");
                    buf = &buf[e.skip()..];
                }
            }
        }
        assert_eq!(tags.len(), 1);
        assert_eq!(tags[0].id, 0xE308_6CED);
    }

    #[test]
    fn repeated_frames_are_one_presentation() {
        let tag = Tag { version: 1, id: 2 };
        let other = Tag { version: 1, id: 3 };
        let ms = Duration::from_millis;
        let mut d = Debouncer::new(ms(220));
        assert!(d.accept(tag, ms(0)));
        assert!(!d.accept(tag, ms(65)));
        assert!(!d.accept(tag, ms(130)));
        for t in (195..2_000).step_by(65) {
            assert!(
                !d.accept(tag, ms(t)),
                "held in the field: still one tap at {t} ms"
            );
        }
        assert!(d.accept(tag, ms(5_000)), "taken away and shown again");
        assert!(d.accept(other, ms(5_050)), "another card is another tap");
        assert!(d.accept(tag, ms(5_100)), "switching back is a new tap");
    }

    /// Taps from a card held for `hold_ms`, its frame repeated every `period_ms`, with the frames
    /// at the indexes in `lost` never arriving.
    fn taps(window: Duration, period_ms: u64, hold_ms: u64, lost: &[u64]) -> usize {
        let tag = Tag {
            version: 0x62,
            id: 0xE308_6CED,
        };
        let mut d = Debouncer::new(window);
        (0..=hold_ms / period_ms)
            .filter(|i| !lost.contains(i))
            .filter(|i| d.accept(tag, Duration::from_millis(i * period_ms)))
            .count()
    }

    #[test]
    fn default_window_is_one_tap_for_periods_up_to_500_ms_and_one_lost_frame() {
        for period in [65, 100, 220, 250, 400, 500] {
            assert_eq!(
                taps(DEFAULT_REPEAT_WINDOW, period, 2_000, &[]),
                1,
                "{period} ms"
            );
            assert_eq!(
                taps(DEFAULT_REPEAT_WINDOW, period, 2_000, &[2]),
                1,
                "{period} ms, one lost"
            );
        }
        // The 220 ms window this replaces: every frame of a two-second hold at 250 ms was a tap.
        assert_eq!(taps(Duration::from_millis(220), 250, 2_000, &[]), 9);
        assert_eq!(taps(Duration::from_millis(220), 150, 2_000, &[4]), 2);
    }

    #[test]
    fn presentations_further_apart_than_the_window_are_two_taps() {
        let tag = Tag { version: 1, id: 2 };
        let ms = Duration::from_millis;
        let mut d = Debouncer::new(ms(600));
        assert!(d.accept(tag, ms(0)));
        assert!(!d.accept(tag, ms(500)));
        assert!(d.accept(tag, ms(1_101)), "601 ms after the last frame");
        assert!(
            !d.accept(tag, ms(1_701)),
            "exactly the window is still the same presentation"
        );
    }

    #[test]
    fn bytes_without_a_start_of_frame_are_dropped_at_once() {
        // Line noise with no STX in it cannot become a frame: drop it all rather than wait.
        assert_eq!(parse(&[0xFF, 0x00, b'6']), Err(FrameError::Garbage(3)));
        assert_eq!(parse(&[0x03]), Err(FrameError::Garbage(1)));
    }

    #[test]
    fn lowercase_hex_reads_the_same_tag() {
        // EXAMPLE with its hex digits in lowercase: 62e3086ced, XOR 08.
        let mut lower = *b"\x0262e3086ced08\x03";
        assert_eq!(parse(&lower[..5]), Ok(Decoded::NeedMore(9)));
        let Ok(Decoded::Tag { tag, len }) = parse(&lower) else {
            panic!("no tag");
        };
        assert_eq!((tag.version, tag.id, len), (0x62, 0xE308_6CED, 14));
        // Mixed case is the same number too.
        lower[3..5].copy_from_slice(b"E3");
        assert!(matches!(parse(&lower), Ok(Decoded::Tag { tag: t, .. }) if t == tag));
        // Letters past f are not hex.
        lower[4] = b'g';
        assert_eq!(parse(&lower), Err(FrameError::Malformed));
    }

    #[test]
    fn one_resync_step_drops_all_the_noise_before_a_frame() {
        let mut noisy = vec![0xFF, 0x00, b'6'];
        noisy.extend_from_slice(&EXAMPLE);
        let e = parse(&noisy).expect_err("noise first");
        assert_eq!(e, FrameError::Garbage(3));
        assert!(matches!(
            parse(&noisy[e.skip()..]),
            Ok(Decoded::Tag { len: 14, .. })
        ));
    }
}
