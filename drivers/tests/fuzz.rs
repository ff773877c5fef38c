//! Every decoder against arbitrary input: no panics, and resynchronisation finds a valid frame
//! however much garbage precedes it or however the bytes are split.

use proptest::prelude::*;
use rollcall_drivers::ef01::codec::{self as ef01, Packet, PacketKind};
use rollcall_drivers::ef01::sim::{Ef01Sim, SimModel};
use rollcall_drivers::ef01::{Instruction, SystemParameters};
use rollcall_drivers::pn532::codec::{self as pn532, Frame};
use rollcall_drivers::pn532::sim::Pn532Sim;
use rollcall_drivers::rdm6300::codec::{self as rdm, Tag};
use rollcall_drivers::wiegand::{Card, Decoder, Edge, Line, Timing, decoder::decode_bits};

/// Drains `buf` through an EF01 parser the way the codec does; returns the packets found.
fn ef01_all(mut buf: &[u8]) -> Vec<Packet> {
    let mut out = Vec::new();
    loop {
        match ef01::parse(buf) {
            Ok(ef01::Decoded::Packet { packet, len }) => {
                assert!(len > 0 && len <= buf.len());
                out.push(packet);
                buf = &buf[len..];
            }
            Ok(ef01::Decoded::NeedMore(n)) => {
                assert!(n > 0);
                return out;
            }
            Err(e) => {
                assert!(
                    e.skip() > 0 && e.skip() <= buf.len(),
                    "{e:?} on {} bytes",
                    buf.len()
                );
                buf = &buf[e.skip()..];
            }
        }
    }
}

fn pn532_all(mut buf: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    loop {
        match pn532::parse(buf) {
            Ok(pn532::Decoded::Frame { frame, len }) => {
                assert!(len > 0 && len <= buf.len());
                out.push(frame);
                buf = &buf[len..];
            }
            Ok(pn532::Decoded::NeedMore(n)) => {
                assert!(n > 0);
                return out;
            }
            Err(e) => {
                assert!(e.skip() > 0 && e.skip() <= buf.len());
                buf = &buf[e.skip()..];
            }
        }
    }
}

fn rdm_all(mut buf: &[u8]) -> Vec<Tag> {
    let mut out = Vec::new();
    loop {
        match rdm::parse(buf) {
            Ok(rdm::Decoded::Tag { tag, len }) => {
                out.push(tag);
                buf = &buf[len..];
            }
            Ok(rdm::Decoded::NeedMore(_)) => return out,
            Err(e) => {
                assert!(e.skip() > 0 && e.skip() <= buf.len());
                buf = &buf[e.skip()..];
            }
        }
    }
}

fn kind() -> impl Strategy<Value = PacketKind> {
    prop_oneof![
        Just(PacketKind::Command),
        Just(PacketKind::Data),
        Just(PacketKind::Ack),
        Just(PacketKind::EndData)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn ef01_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        ef01_all(&bytes);
        let _ = Instruction::decode(&bytes);
        let _ = SystemParameters::decode(&bytes);
    }

    #[test]
    fn ef01_finds_packet_after_any_garbage(
        garbage in proptest::collection::vec(any::<u8>(), 0..64),
        kind in kind(),
        address in any::<u32>(),
        payload in proptest::collection::vec(any::<u8>(), 1..256),
    ) {
        let packet = Packet { address, kind, payload };
        let mut stream = garbage;
        stream.extend(packet.encode());
        // Garbage may itself contain a frame or a header prefix swallowing bytes of ours; the
        // real packet must still be the last thing found.
        let found = ef01_all(&stream);
        prop_assert_eq!(found.last(), Some(&packet));
    }

    #[test]
    fn ef01_split_anywhere_same_packets(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 1..5),
        split in any::<prop::sample::Index>(),
    ) {
        use bytes::BytesMut;
        use tokio_util::codec::Decoder as _;
        let packets: Vec<Packet> = payloads.into_iter().map(|p| Packet::new(PacketKind::Ack, p)).collect();
        let stream: Vec<u8> = packets.iter().flat_map(|p| p.encode()).collect();
        let at = split.index(stream.len() + 1);
        let mut codec = ef01::Ef01Codec;
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for part in [&stream[..at], &stream[at..]] {
            buf.extend_from_slice(part);
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                got.push(item.unwrap());
            }
        }
        prop_assert_eq!(got, packets);
    }

    #[test]
    fn ef01_simulator_survives_any_host_bytes(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..8)) {
        let mut sim = Ef01Sim::new(SimModel::R503);
        for chunk in chunks {
            let _ = sim.receive(&chunk);
        }
    }

    #[test]
    fn ef01_simulator_survives_any_framed_command(payload in proptest::collection::vec(any::<u8>(), 0..40)) {
        let mut sim = Ef01Sim::new(SimModel::R307);
        let out = sim.receive(&Packet::new(PacketKind::Command, payload).encode());
        // Whatever it answered parses.
        for p in ef01_all(&out) {
            prop_assert_eq!(p.kind == PacketKind::Ack || p.kind == PacketKind::Data || p.kind == PacketKind::EndData, true);
        }
    }

    #[test]
    fn pn532_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        pn532_all(&bytes);
        let _ = pn532::parse_list_passive_target(&bytes);
        let mut sim = Pn532Sim::new();
        let _ = sim.receive(&bytes);
    }

    #[test]
    fn pn532_finds_frame_after_garbage(
        garbage in proptest::collection::vec(any::<u8>(), 0..40),
        data in proptest::collection::vec(any::<u8>(), 0..60),
    ) {
        let frame = Frame::Info { tfi: pn532::TFI_CHIP, data };
        let mut stream = garbage;
        stream.extend(frame.encode());
        let found = pn532_all(&stream);
        prop_assert_eq!(found.last(), Some(&frame));
    }

    #[test]
    fn rdm6300_parse_never_panics_and_resyncs(
        garbage in proptest::collection::vec(any::<u8>(), 0..60),
        version in any::<u8>(),
        id in any::<u32>(),
    ) {
        rdm_all(&garbage);
        let tag = Tag { version, id };
        let mut stream = garbage;
        stream.extend(tag.encode());
        let found = rdm_all(&stream);
        prop_assert_eq!(found.last(), Some(&tag));
    }

    #[test]
    fn wiegand_decoder_never_panics(
        edges in proptest::collection::vec((any::<bool>(), any::<bool>(), 0u64..50_000_000), 0..200),
        bits in proptest::collection::vec(any::<bool>(), 0..64),
    ) {
        let _ = decode_bits(&bits);
        let mut d = Decoder::new(Timing::default());
        let mut t = 0u64;
        for (d1, falling, dt) in edges {
            t = t.saturating_add(dt);
            let line = if d1 { Line::D1 } else { Line::D0 };
            let _ = d.edge(Edge { line, falling, at_ns: t });
        }
        let _ = d.poll(u64::MAX);
        // Timestamps going backwards (two lines, two clocks) must not panic either.
        let _ = d.edge(Edge { line: Line::D0, falling: false, at_ns: 0 });
    }

    #[test]
    fn wiegand_round_trips(facility in any::<u8>(), card in any::<u16>(), data in any::<u32>()) {
        for c in [Card::W26 { facility, card }, Card::W34 { data }] {
            prop_assert_eq!(decode_bits(&c.bits()), Ok(c));
            let mut d = Decoder::new(Timing::default());
            let mut got = Vec::new();
            for e in rollcall_drivers::wiegand::sim::frame_edges(c, 1_000, Some(rollcall_drivers::wiegand::sim::Fault::Noise)) {
                got.extend(d.edge(e));
            }
            got.extend(d.poll(u64::MAX));
            prop_assert_eq!(got, vec![Ok(c)]);
        }
    }
}
