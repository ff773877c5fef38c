//! The Wiegand decoder: edges with kernel timestamps in, card numbers out. No I/O, no clock.
//!
//! D0 and D1 idle high. A low pulse on D0 is a 0 bit, on D1 a 1 bit, most significant first.
//! A pulse counts when it lasts between `min_pulse` and `max_pulse` (so noise spikes and a line
//! stuck low are ignored). Bits of one frame come at most `max_bit_interval` apart (SIA's Wiegand
//! timing allows 200 us to 20 ms; the default 25 ms covers it); silence for twice that
//! ([`Timing::frame_gap`], 50 ms by default) ends the frame. A fixed 5 ms gap split a slow
//! reader's frame into one-bit frames.

use std::time::Duration;

/// Which data line an edge is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Line {
    /// D0 (a pulse is a 0 bit).
    D0,
    /// D1 (a pulse is a 1 bit).
    D1,
}

/// One edge, as the GPIO character device reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// D0 (a 0 bit) or D1 (a 1 bit).
    pub line: Line,
    /// True for high-to-low (a pulse starts), false for low-to-high (it ends).
    pub falling: bool,
    /// Kernel timestamp (CLOCK_MONOTONIC), nanoseconds.
    pub at_ns: u64,
}

/// A decoded card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Card {
    /// 26-bit: 8-bit facility code, 16-bit card number.
    W26 {
        /// Facility code.
        facility: u8,
        /// Card number.
        card: u16,
    },
    /// 34-bit: 32 data bits (commonly 16-bit facility, 16-bit card).
    W34 {
        /// The 32 data bits.
        data: u32,
    },
}

impl Card {
    /// The data bits packed big-endian, parity bits removed: 3 bytes for W26, 4 for W34.
    pub fn uid(&self) -> Vec<u8> {
        match *self {
            Card::W26 { facility, card } => {
                let [hi, lo] = card.to_be_bytes();
                vec![facility, hi, lo]
            }
            Card::W34 { data } => data.to_be_bytes().to_vec(),
        }
    }

    /// The frame's bits on the wire, parity included, most significant first.
    pub fn bits(&self) -> Vec<bool> {
        let (data, n) = match *self {
            Card::W26 { facility, card } => ((u64::from(facility) << 16) | u64::from(card), 24),
            Card::W34 { data } => (u64::from(data), 32),
        };
        let data_bits: Vec<bool> = (0..n).rev().map(|i| data >> i & 1 == 1).collect();
        let half = n / 2;
        let even = data_bits[..half].iter().filter(|b| **b).count() % 2 == 1;
        let odd = data_bits[half..].iter().filter(|b| **b).count() % 2 == 0;
        let mut bits = vec![even];
        bits.extend(data_bits);
        bits.push(odd);
        bits
    }
}

/// A frame that could not be decoded. Ordinary line trouble, reported and forgotten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WiegandError {
    /// The frame length is neither 26 nor 34 bits.
    #[error(
        "{0}-bit frame: only Wiegand 26 and 34 are supported (check the reader's output format)"
    )]
    Length(usize),
    /// A parity bit is wrong.
    #[error("{bits}-bit frame with a bad {which} parity bit")]
    Parity {
        /// Bits in the frame, parity bits included.
        bits: usize,
        /// "leading even" or "trailing odd".
        which: &'static str,
    },
}

/// Decodes a complete frame of bits.
pub fn decode_bits(bits: &[bool]) -> Result<Card, WiegandError> {
    let n = bits.len();
    if n != 26 && n != 34 {
        return Err(WiegandError::Length(n));
    }
    let data = &bits[1..n - 1];
    let half = data.len() / 2;
    let ones = |b: &[bool]| b.iter().filter(|x| **x).count();
    if (ones(&data[..half]) + usize::from(bits[0])) % 2 != 0 {
        return Err(WiegandError::Parity {
            bits: n,
            which: "leading even",
        });
    }
    if (ones(&data[half..]) + usize::from(bits[n - 1])) % 2 != 1 {
        return Err(WiegandError::Parity {
            bits: n,
            which: "trailing odd",
        });
    }
    let value = data.iter().fold(0u64, |v, b| v << 1 | u64::from(*b));
    Ok(if n == 26 {
        Card::W26 {
            facility: (value >> 16) as u8,
            card: value as u16,
        }
    } else {
        Card::W34 { data: value as u32 }
    })
}

/// Which low pulses count as bits, and how far apart the bits of one frame may be (a longer
/// quiet ends the frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Shorter low pulses are noise (default 10 us).
    pub min_pulse: Duration,
    /// Longer low pulses are not data (default 2 ms; SIA pulses are 20-100 us).
    pub max_pulse: Duration,
    /// The longest time from one bit's pulse to the next within a frame (default 25 ms).
    pub max_bit_interval: Duration,
}

impl Timing {
    /// Covers SIA's Wiegand timing (bit intervals up to 20 ms) with a margin.
    pub const DEFAULT_MAX_BIT_INTERVAL: Duration = Duration::from_millis(25);

    /// The default pulse limits with this maximum bit interval.
    pub fn with_max_bit_interval(max_bit_interval: Duration) -> Self {
        Self {
            max_bit_interval,
            ..Self::default()
        }
    }

    /// Silence after a bit that ends the frame: twice the maximum bit interval, so a slow
    /// reader's late bit is never taken for the next frame.
    pub fn frame_gap(&self) -> Duration {
        self.max_bit_interval.saturating_mul(2)
    }
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            min_pulse: Duration::from_micros(10),
            max_pulse: Duration::from_millis(2),
            max_bit_interval: Self::DEFAULT_MAX_BIT_INTERVAL,
        }
    }
}

/// Bits of one frame the decoder keeps: more than any Wiegand format in use (26 to 37 bits,
/// a few 48 or 56). Past it the frame is only counted, so a line that never goes quiet (a
/// failing reader, interference on a long cable) cannot grow the decoder's memory.
const MAX_FRAME_BITS: usize = 64;

/// The decoder's state: bits of the frame in progress and pulses in flight.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    timing: Timing,
    bits: Vec<bool>,
    /// Bits of the frame in progress beyond [`MAX_FRAME_BITS`], counted, not kept.
    bits_beyond: usize,
    last_bit_ns: Option<u64>,
    low_since: [Option<u64>; 2],
    noise: u64,
}

impl Decoder {
    /// A decoder with the given timing.
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            ..Self::default()
        }
    }

    /// Pulses rejected as noise so far.
    pub fn noise_pulses(&self) -> u64 {
        self.noise
    }

    /// When the frame in progress ends if no further pulse comes (ns), for the caller's timer.
    pub fn deadline_ns(&self) -> Option<u64> {
        self.last_bit_ns
            .map(|t| t.saturating_add(self.timing.frame_gap().as_nanos() as u64))
    }

    /// Feeds one edge. Returns a finished frame when this edge comes after the previous frame's
    /// gap (the previous frame is then complete).
    pub fn edge(&mut self, edge: Edge) -> Option<Result<Card, WiegandError>> {
        let done = self.poll(edge.at_ns);
        let i = match edge.line {
            Line::D0 => 0,
            Line::D1 => 1,
        };
        if edge.falling {
            self.low_since[i] = Some(edge.at_ns);
        } else if let Some(start) = self.low_since[i].take() {
            let width = Duration::from_nanos(edge.at_ns.saturating_sub(start));
            if width < self.timing.min_pulse || width > self.timing.max_pulse {
                self.noise += 1;
            } else {
                if self.bits.len() < MAX_FRAME_BITS {
                    self.bits.push(edge.line == Line::D1);
                } else {
                    self.bits_beyond += 1;
                }
                self.last_bit_ns = Some(edge.at_ns);
            }
        }
        done
    }

    /// Tells the decoder the time is `now_ns`; returns the frame if its gap has passed.
    pub fn poll(&mut self, now_ns: u64) -> Option<Result<Card, WiegandError>> {
        let deadline = self.deadline_ns()?;
        if now_ns < deadline {
            return None;
        }
        self.last_bit_ns = None;
        let bits = std::mem::take(&mut self.bits);
        match std::mem::take(&mut self.bits_beyond) {
            0 => Some(decode_bits(&bits)),
            beyond => Some(Err(WiegandError::Length(bits.len() + beyond))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// facility 212, card 7041 -> `1 11010100 00011011 10000001 0` (readers.md).
    const EXAMPLE: &str = "1 11010100 00011011 10000001 0";

    fn bits(s: &str) -> Vec<bool> {
        s.chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c == '1')
            .collect()
    }

    fn edges(bits: &[bool], start_ns: u64) -> Vec<Edge> {
        edges_every(bits, start_ns, 2_000_000)
    }

    /// A frame's edges: 80 us pulses, one every `interval_ns`.
    fn edges_every(bits: &[bool], start_ns: u64, interval_ns: u64) -> Vec<Edge> {
        let mut out = Vec::new();
        for (i, b) in bits.iter().enumerate() {
            let line = if *b { Line::D1 } else { Line::D0 };
            let t = start_ns + i as u64 * interval_ns;
            out.push(Edge {
                line,
                falling: true,
                at_ns: t,
            });
            out.push(Edge {
                line,
                falling: false,
                at_ns: t + 80_000,
            });
        }
        out
    }

    #[test]
    fn a_line_that_never_goes_quiet_is_one_long_frame_of_bounded_state() {
        let mut d = Decoder::default();
        let noise = vec![true; 100_000];
        for e in edges_every(&noise, 0, 200_000) {
            assert_eq!(d.edge(e), None);
        }
        assert!(
            d.bits.capacity() <= MAX_FRAME_BITS,
            "{} bits held",
            d.bits.capacity()
        );
        let end = d.deadline_ns().unwrap();
        assert_eq!(d.poll(end), Some(Err(WiegandError::Length(100_000))));
        // The next frame starts clean.
        for e in edges(&bits(EXAMPLE), end + 1_000_000) {
            assert_eq!(d.edge(e), None);
        }
        let card = d.poll(d.deadline_ns().unwrap()).unwrap();
        assert_eq!(
            card,
            Ok(Card::W26 {
                facility: 212,
                card: 7041
            })
        );
    }

    #[test]
    fn decodes_datasheet_w26() {
        let card = decode_bits(&bits(EXAMPLE)).unwrap();
        assert_eq!(
            card,
            Card::W26 {
                facility: 212,
                card: 7041
            }
        );
        assert_eq!(card.uid(), [212, 0x1B, 0x81]);
        assert_eq!(card.bits(), bits(EXAMPLE));
    }

    #[test]
    fn w34_round_trip_and_parity() {
        let card = Card::W34 { data: 0xDEAD_BEEF };
        assert_eq!(decode_bits(&card.bits()), Ok(card));
        assert_eq!(card.uid(), [0xDE, 0xAD, 0xBE, 0xEF]);
        let mut bad = card.bits();
        bad[33] = !bad[33];
        assert_eq!(
            decode_bits(&bad),
            Err(WiegandError::Parity {
                bits: 34,
                which: "trailing odd"
            })
        );
    }

    #[test]
    fn rejects_parity_error_and_odd_lengths() {
        let mut b = bits(EXAMPLE);
        b[0] = false;
        assert_eq!(
            decode_bits(&b),
            Err(WiegandError::Parity {
                bits: 26,
                which: "leading even"
            })
        );
        assert_eq!(decode_bits(&b[..25]), Err(WiegandError::Length(25)));
    }

    #[test]
    fn edges_to_card_with_gap() {
        // A fast reader configured as such: 2.5 ms maximum interval, 5 ms gap.
        let mut d = Decoder::new(Timing::with_max_bit_interval(Duration::from_micros(2_500)));
        let mut out = Vec::new();
        for e in edges(&bits(EXAMPLE), 1_000_000_000) {
            out.extend(d.edge(e));
        }
        assert!(out.is_empty(), "no card before the gap");
        let last = 1_000_000_000 + 25 * 2_000_000 + 80_000;
        assert_eq!(d.poll(last + 4_000_000), None, "4 ms is not yet a gap");
        assert_eq!(
            d.poll(last + 5_000_000),
            Some(Ok(Card::W26 {
                facility: 212,
                card: 7041
            }))
        );
        assert_eq!(d.poll(last + 50_000_000), None);
    }

    #[test]
    fn next_frame_ends_previous_one() {
        let mut d = Decoder::new(Timing::default());
        let mut out = Vec::new();
        for e in edges(&bits(EXAMPLE), 0)
            .into_iter()
            .chain(edges(&bits(EXAMPLE), 100_000_000))
        {
            out.extend(d.edge(e));
        }
        assert_eq!(
            out,
            vec![Ok(Card::W26 {
                facility: 212,
                card: 7041
            })]
        );
    }

    #[test]
    fn noise_pulses_are_ignored() {
        let mut d = Decoder::new(Timing::default());
        let mut all = edges(&bits(EXAMPLE), 0);
        // A 2 us spike on D1 between two bits.
        all.insert(
            4,
            Edge {
                line: Line::D1,
                falling: true,
                at_ns: 3_000_000,
            },
        );
        all.insert(
            5,
            Edge {
                line: Line::D1,
                falling: false,
                at_ns: 3_002_000,
            },
        );
        for e in all {
            assert_eq!(d.edge(e), None);
        }
        assert_eq!(
            d.poll(u64::MAX),
            Some(Ok(Card::W26 {
                facility: 212,
                card: 7041
            }))
        );
        assert_eq!(d.noise_pulses(), 1);
    }

    /// Feeds `edges` and then the clock up to `until_ns` in 1 ms steps (as the async shell's
    /// timer would), collecting every frame.
    fn decode_all(
        timing: Timing,
        edges: &[Edge],
        until_ns: u64,
    ) -> Vec<Result<Card, WiegandError>> {
        let mut d = Decoder::new(timing);
        let mut out = Vec::new();
        let mut clock = 0;
        for e in edges {
            while clock + 1_000_000 < e.at_ns {
                clock += 1_000_000;
                out.extend(d.poll(clock));
            }
            out.extend(d.edge(*e));
        }
        while clock < until_ns {
            clock += 1_000_000;
            out.extend(d.poll(clock));
        }
        out
    }

    const W26: Card = Card::W26 {
        facility: 212,
        card: 7041,
    };

    #[test]
    fn slow_reader_with_20_ms_bit_intervals_is_one_frame() {
        let w34 = Card::W34 { data: 0xDEAD_BEEF };
        let mut all = edges_every(&bits(EXAMPLE), 1_000_000_000, 20_000_000);
        // 26 bits at 20 ms end near 1.5 s; the next card a second later.
        all.extend(edges_every(&w34.bits(), 2_500_000_000, 20_000_000));
        assert_eq!(
            decode_all(Timing::default(), &all, 4_000_000_000),
            vec![Ok(W26), Ok(w34)]
        );
        // What the old fixed 5 ms gap made of it: one-bit frames.
        let five_ms = Timing::with_max_bit_interval(Duration::from_micros(2_500));
        let split = decode_all(five_ms, &all, 4_000_000_000);
        assert_eq!(split.len(), 26 + 34);
        assert!(split.iter().all(|f| *f == Err(WiegandError::Length(1))));
    }

    #[test]
    fn fast_readers_with_1_and_2_ms_bit_intervals() {
        for interval_ns in [1_000_000, 2_000_000] {
            let mut all = edges_every(&bits(EXAMPLE), 1_000_000_000, interval_ns);
            // Two cards 200 ms apart: well past the 50 ms gap.
            all.extend(edges_every(&bits(EXAMPLE), 1_200_000_000, interval_ns));
            assert_eq!(
                decode_all(Timing::default(), &all, 2_000_000_000),
                vec![Ok(W26), Ok(W26)],
                "{interval_ns} ns"
            );
        }
    }

    #[test]
    fn frame_ends_two_bit_intervals_after_the_last_bit() {
        let timing = Timing::default();
        assert_eq!(timing.frame_gap(), Duration::from_millis(50));
        let mut d = Decoder::new(timing);
        let all = edges_every(&bits(EXAMPLE), 0, 20_000_000);
        let last_bit = all.last().unwrap().at_ns;
        for e in all {
            assert_eq!(d.edge(e), None);
        }
        assert_eq!(d.deadline_ns(), Some(last_bit + 50_000_000));
        assert_eq!(
            d.poll(last_bit + 49_999_999),
            None,
            "a 20 ms reader may still send a bit"
        );
        assert_eq!(d.poll(last_bit + 50_000_000), Some(Ok(W26)));
    }

    #[test]
    fn pulses_at_the_width_limits_are_bits_and_beyond_them_noise() {
        let timing = Timing::default();
        let ns = |d: Duration| d.as_nanos() as u64;
        let (min, max) = (ns(timing.min_pulse), ns(timing.max_pulse));
        let mut d = Decoder::new(timing);
        let mut out = Vec::new();
        // The frame's bits alternate between the shortest (10 us) and the longest (2 ms) pulse
        // that counts; between two bits, a pulse 1 ns shorter or longer than those on the other
        // line, which would flip the bit if it counted.
        for (i, bit) in bits(EXAMPLE).into_iter().enumerate() {
            let (line, other) = if bit {
                (Line::D1, Line::D0)
            } else {
                (Line::D0, Line::D1)
            };
            let at = i as u64 * 5_000_000;
            let (width, noise) = if i % 2 == 0 {
                (min, min - 1)
            } else {
                (max, max + 1)
            };
            for (line, start, width) in [(line, at, width), (other, at + 2_500_000, noise)] {
                for (falling, at_ns) in [(true, start), (false, start + width)] {
                    out.extend(d.edge(Edge {
                        line,
                        falling,
                        at_ns,
                    }));
                }
            }
        }
        out.extend(d.poll(u64::MAX));
        assert_eq!(out, [Ok(W26)]);
        assert_eq!(d.noise_pulses(), 26);
    }

    #[test]
    fn the_parity_bits_make_the_first_half_even_and_the_second_half_odd() {
        // The leading bit is even parity over the first half of the data bits, the trailing one
        // odd parity over the second half: with its parity bit, each half of the frame holds an
        // even, respectively odd, number of ones, however many the data has (0, 1, 2, 3, ...).
        let ones = |bits: &[bool]| bits.iter().filter(|b| **b).count();
        for facility in [0u8, 1, 3, 7, 0x0f, 0x80, 0xff] {
            for card in [
                0u16, 1, 3, 7, 0x0f, 0x00ff, 0x0fff, 0x1000, 0x3000, 0xa5a5, 0xffff,
            ] {
                let bits = Card::W26 { facility, card }.bits();
                assert_eq!(bits.len(), 26);
                assert_eq!(ones(&bits[..13]) % 2, 0, "{facility} {card}: first half");
                assert_eq!(ones(&bits[13..]) % 2, 1, "{facility} {card}: second half");
            }
        }
        for data in [
            0u32,
            1,
            3,
            7,
            0xffff,
            0x1_0000,
            0x3_0000,
            0x1234_5678,
            u32::MAX,
        ] {
            let bits = Card::W34 { data }.bits();
            assert_eq!(bits.len(), 34);
            assert_eq!(ones(&bits[..17]) % 2, 0, "{data:#x}: first half");
            assert_eq!(ones(&bits[17..]) % 2, 1, "{data:#x}: second half");
        }
    }

    #[test]
    fn all_zero_halves_and_their_parity_bits() {
        // Facility 0, card 0: no ones in either half, so the leading even parity bit is 0 and
        // the trailing odd one is 1.
        let zero = Card::W26 {
            facility: 0,
            card: 0,
        };
        let frame = bits("0 00000000 00000000 00000000 1");
        assert_eq!(zero.bits(), frame);
        assert_eq!(decode_bits(&frame), Ok(zero));
        let mut leading = frame.clone();
        leading[0] = true;
        assert_eq!(
            decode_bits(&leading),
            Err(WiegandError::Parity {
                bits: 26,
                which: "leading even"
            })
        );
        let mut trailing = frame;
        trailing[25] = false;
        assert_eq!(
            decode_bits(&trailing),
            Err(WiegandError::Parity {
                bits: 26,
                which: "trailing odd"
            })
        );
        let zero34 = Card::W34 { data: 0 };
        assert_eq!(decode_bits(&zero34.bits()), Ok(zero34));
    }
}
