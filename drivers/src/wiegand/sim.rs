//! A simulated Wiegand reader: the edges a card read produces, with faults.

use super::decoder::{Card, Edge, Line};

/// A fault in one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The trailing parity bit is flipped.
    Parity,
    /// A 2 us spike on D1 in the middle of the frame (must be ignored).
    Noise,
    /// The frame stops after this many bits.
    Truncated(usize),
}

/// Pulse width and spacing of a typical reader: 80 us pulses every 2 ms.
pub const PULSE_NS: u64 = 80_000;
/// Time between bits.
pub const BIT_INTERVAL_NS: u64 = 2_000_000;

/// The edges of one frame starting at `start_ns`, bits [`BIT_INTERVAL_NS`] apart.
pub fn frame_edges(card: Card, start_ns: u64, fault: Option<Fault>) -> Vec<Edge> {
    frame_edges_every(card, start_ns, BIT_INTERVAL_NS, fault)
}

/// The edges of one frame starting at `start_ns`, bits `interval_ns` apart (SIA allows up to
/// 20 ms).
pub fn frame_edges_every(
    card: Card,
    start_ns: u64,
    interval_ns: u64,
    fault: Option<Fault>,
) -> Vec<Edge> {
    let mut bits = card.bits();
    match fault {
        Some(Fault::Parity) => {
            if let Some(last) = bits.last_mut() {
                *last = !*last;
            }
        }
        Some(Fault::Truncated(n)) => bits.truncate(n),
        _ => {}
    }
    let mut edges = Vec::with_capacity(bits.len() * 2 + 2);
    for (i, bit) in bits.iter().enumerate() {
        let line = if *bit { Line::D1 } else { Line::D0 };
        let t = start_ns + i as u64 * interval_ns;
        edges.push(Edge {
            line,
            falling: true,
            at_ns: t,
        });
        edges.push(Edge {
            line,
            falling: false,
            at_ns: t + PULSE_NS,
        });
        if fault == Some(Fault::Noise) && i == bits.len() / 2 {
            let spike = t + interval_ns / 2;
            edges.push(Edge {
                line: Line::D1,
                falling: true,
                at_ns: spike,
            });
            edges.push(Edge {
                line: Line::D1,
                falling: false,
                at_ns: spike + 2_000,
            });
        }
    }
    edges
}

/// The card a UID stands for: 3 bytes are W26 (facility, card), 4 bytes W34.
pub fn card_for_uid(uid: &[u8]) -> Option<Card> {
    match *uid {
        [f, hi, lo] => Some(Card::W26 {
            facility: f,
            card: u16::from_be_bytes([hi, lo]),
        }),
        [a, b, c, d] => Some(Card::W34 {
            data: u32::from_be_bytes([a, b, c, d]),
        }),
        _ => None,
    }
}
