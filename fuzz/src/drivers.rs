//! The readers' byte codecs and the Wiegand decoder, on what a UART or a GPIO line can deliver.
//!
//! Each serial codec is checked twice over the same bytes: by its pure `parse`, draining the
//! whole buffer (every step makes progress, never claims more bytes than it has, and asks for a
//! bounded amount more), and by its tokio-util codec fed in small pieces the way a UART
//! delivers them. The frames found must be the same both ways (a frame is never lost or made
//! up by where the reads split), and each must re-encode to itself.

use bytes::BytesMut;
use rollcall_drivers::ef01::codec::{self as ef01, Ef01Codec, Packet, PacketKind};
use rollcall_drivers::ef01::{Instruction, SystemParameters};
use rollcall_drivers::iso_template::{self, IsoTemplateCodec};
use rollcall_drivers::pn532::codec::{self as pn532, Frame};
use rollcall_drivers::pn532::{Pn532Codec, Presence};
use rollcall_drivers::rdm6300::codec::{self as rdm6300, Tag};
use rollcall_drivers::rdm6300::{Debouncer, Rdm6300Codec};
use rollcall_drivers::wiegand::decoder::decode_bits;
use rollcall_drivers::wiegand::{Card, Decoder, Edge, Line, Timing};
use std::time::Duration;

/// Sizes of the reads a chunked decode uses, from the input's first byte: 1 to 16 bytes,
/// varying from read to read.
fn chunks(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let seed = data.first().copied().unwrap_or(0);
    let mut rest = data;
    let mut i = 0usize;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = 1 + (usize::from(seed).wrapping_add(i * 7) % 16);
        i += 1;
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        Some(chunk)
    })
}

/// Feeds `data` to a tokio-util decoder in small reads; returns the good items.
fn stream<D, T, E>(mut codec: D, data: &[u8]) -> Vec<T>
where
    D: tokio_util::codec::Decoder<Item = Result<T, E>, Error = std::io::Error>,
{
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks(data) {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match codec
                .decode(&mut buf)
                .expect("codecs report bad frames as items")
            {
                Some(Ok(item)) => out.push(item),
                Some(Err(_)) => {}
                None => break,
            }
            assert!(buf.len() < before, "an item consumed no bytes");
        }
    }
    out
}

/// One step of a pure parser, in the shape all four share.
enum Step<T> {
    Item(T, usize),
    NeedMore(usize),
    Skip(usize),
}

/// Drains `data` through a pure parser, checking each step; returns the items.
fn drain<T>(data: &[u8], max_frame: usize, mut parse: impl FnMut(&[u8]) -> Step<T>) -> Vec<T> {
    let mut buf = data;
    let mut out = Vec::new();
    while !buf.is_empty() {
        match parse(buf) {
            Step::Item(item, len) => {
                assert!(
                    len > 0 && len <= buf.len(),
                    "frame of {len} bytes in {}",
                    buf.len()
                );
                out.push(item);
                buf = &buf[len..];
            }
            Step::NeedMore(n) => {
                assert!(n > 0, "asked for no more bytes");
                assert!(
                    buf.len() + n <= max_frame,
                    "asked for {n} more after {} bytes",
                    buf.len()
                );
                break;
            }
            Step::Skip(n) => {
                assert!(n > 0 && n <= buf.len(), "skip {n} of {}", buf.len());
                buf = &buf[n..];
            }
        }
    }
    out
}

/// EF01 fingerprint module packets (R305/R307/R503/AS608), plus the command and
/// system-parameter payloads found in them.
pub fn ef01(data: &[u8]) {
    let max = ef01::PREFIX_LEN + usize::from(ef01::MAX_LEN);
    let packets = drain(data, max, |buf| match ef01::parse(buf) {
        Ok(ef01::Decoded::Packet { packet, len }) => {
            assert_eq!(
                packet.encode(),
                buf[..len],
                "a packet re-encodes to its bytes"
            );
            Step::Item(packet, len)
        }
        Ok(ef01::Decoded::NeedMore(n)) => Step::NeedMore(n),
        Err(e) => Step::Skip(e.skip()),
    });
    assert_eq!(
        stream(Ef01Codec, data),
        packets,
        "packets depend on how reads split"
    );
    for Packet { kind, payload, .. } in &packets {
        if *kind == PacketKind::Command
            && let Some(i) = Instruction::decode(payload)
        {
            assert_eq!(Instruction::decode(&i.encode()), Some(i.clone()));
            let _ = i.name();
        }
        if let Some(p) = payload.get(1..).and_then(SystemParameters::decode) {
            assert_eq!(p.encode(), payload[1..17]);
            let _ = (p.packet_size(), p.baud());
        }
    }
}

/// PN532 frames (normal, extended, ACK, NACK) and the InListPassiveTarget replies in them.
pub fn pn532(data: &[u8]) {
    let frames = drain(data, usize::MAX, |buf| match pn532::parse(buf) {
        Ok(pn532::Decoded::Frame { frame, len }) => Step::Item(frame, len),
        Ok(pn532::Decoded::NeedMore(n)) => Step::NeedMore(n),
        Err(e) => Step::Skip(e.skip()),
    });
    // Not compared with the frames read at once, unlike the other codecs: the preamble and
    // postamble are optional (`00 FF ... DCS` is a frame), so a `00` right after a checksum is
    // either that frame's postamble or the first byte of the next start code, and the codec
    // takes it as the second only when a read ended between the two. On malformed bytes (a
    // real chip sends `00 00 FF` before every frame) split reads then find frames that reading
    // at once does not, or miss some it finds: the two `regression-postamble-*` inputs. Each
    // frame found either way is still a checksum-valid frame.
    let streamed = stream(Pn532Codec, data);
    assert!(
        streamed.len() <= data.len() / 4,
        "a frame takes at least 4 bytes"
    );
    for frame in &streamed {
        match pn532::parse(&frame.encode()) {
            Ok(pn532::Decoded::Frame { frame: again, .. }) => assert_eq!(&again, frame),
            other => panic!("{frame:?} re-encoded parses as {other:?}"),
        }
    }
    let mut presence = Presence::new(2);
    for frame in &frames {
        match pn532::parse(&frame.encode()) {
            Ok(pn532::Decoded::Frame { frame: again, .. }) => assert_eq!(&again, frame),
            other => panic!("{frame:?} re-encoded parses as {other:?}"),
        }
        if let Frame::Info { data, .. } = frame {
            let target = pn532::parse_list_passive_target(data);
            if let Ok(Some(t)) = &target {
                assert!(matches!(t.uid.len(), 4 | 7 | 10));
            }
            let _ = presence.observe(target.ok().flatten().as_ref().map(|t| t.uid.as_slice()));
        }
    }
}

/// RDM6300 frames (125 kHz EM4100 cards) and the repeat debouncer over their arrival times.
pub fn rdm6300(data: &[u8]) {
    let tags = drain(data, rdm6300::FRAME_LEN, |buf| match rdm6300::parse(buf) {
        Ok(rdm6300::Decoded::Tag { tag, len }) => {
            assert_eq!(len, rdm6300::FRAME_LEN);
            assert!(
                buf[..len].eq_ignore_ascii_case(&tag.encode()),
                "a tag re-encodes to its frame"
            );
            Step::Item(tag, len)
        }
        Ok(rdm6300::Decoded::NeedMore(n)) => Step::NeedMore(n),
        Err(e) => Step::Skip(e.skip()),
    });
    assert_eq!(
        stream(Rdm6300Codec, data),
        tags,
        "tags depend on how reads split"
    );
    let mut debouncer = Debouncer::new(rdm6300::DEFAULT_REPEAT_WINDOW);
    let mut now = Duration::ZERO;
    for (i, tag) in tags.iter().enumerate() {
        now += Duration::from_millis(u64::from(data[i % data.len()]) * 10);
        let _ = debouncer.accept(*tag, now);
        let Tag { version, id } = *tag;
        assert_eq!(
            tag.uid(),
            [
                version,
                (id >> 24) as u8,
                (id >> 16) as u8,
                (id >> 8) as u8,
                id as u8
            ]
        );
    }
}

/// Frames of a sensor that sends ISO/IEC 19794-2 templates; each template found then goes to
/// the matcher's record parser, as rollcalld does.
pub fn iso_template(data: &[u8]) {
    let max = 4 + iso_template::MAX_PAYLOAD + 2;
    let templates = drain(data, max, |buf| match iso_template::parse(buf) {
        Ok(iso_template::Decoded::Template { template, len }) => {
            assert_eq!(
                iso_template::encode(&template).as_deref(),
                Some(&buf[..len])
            );
            Step::Item(template, len)
        }
        Ok(iso_template::Decoded::NeedMore(n)) => Step::NeedMore(n),
        Err(e) => Step::Skip(e.skip()),
    });
    assert_eq!(
        stream(IsoTemplateCodec, data),
        templates,
        "templates depend on how reads split"
    );
    for t in &templates {
        crate::matcher::record(t);
    }
}

/// Most bytes the Wiegand decoder may hold however many edges it is fed: a frame longer than
/// 34 bits is refused anyway, so a noisy or oscillating line must not grow its state.
const WIEGAND_STATE: isize = 256;

/// The Wiegand decoder on edges made from the input (3 bytes each: line and direction, then the
/// time since the previous edge), with a poll after each: no panic, every card it reports
/// re-encodes to bits that decode to it, and its state stays bounded however long the stream.
pub fn wiegand(data: &[u8]) {
    // Bits as given, first: `decode_bits` accepts exactly the frames `Card::bits` writes.
    let bits: Vec<bool> = data.iter().map(|b| b & 1 == 1).collect();
    if let Ok(card) = decode_bits(&bits) {
        assert_eq!(card.bits(), bits);
    }

    let timing = Timing::with_max_bit_interval(Duration::from_micros(
        u64::from(data.first().copied().unwrap_or(25)) * 1000,
    ));
    let mut decoder = Decoder::new(timing);
    let before = crate::alloc::live();
    let mut at_ns = 0u64;
    let check = |card: Result<Card, _>| {
        if let Ok(card) = card {
            assert_eq!(decode_bits(&card.bits()), Ok(card));
            assert!(matches!(card.uid().len(), 3 | 4));
        }
    };
    for e in data.get(1..).unwrap_or_default().chunks_exact(3) {
        // Two bytes of delta in units chosen by the top bits: 1 ns, 1 us, 1 ms or 64 ms.
        let unit = [1u64, 1_000, 1_000_000, 64_000_000][usize::from(e[0] >> 6)];
        at_ns = at_ns.saturating_add(u64::from(u16::from_be_bytes([e[1], e[2]])) * unit);
        let edge = Edge {
            line: if e[0] & 1 == 0 { Line::D0 } else { Line::D1 },
            falling: e[0] & 2 != 0,
            at_ns,
        };
        if let Some(card) = decoder.edge(edge) {
            check(card);
        }
        if e[0] & 4 != 0
            && let Some(card) = decoder.poll(at_ns)
        {
            check(card);
        }
        let held = crate::alloc::live() - before;
        assert!(
            held <= WIEGAND_STATE,
            "the Wiegand decoder holds {held} bytes"
        );
    }
    if let Some(deadline) = decoder.deadline_ns() {
        if let Some(card) = decoder.poll(deadline) {
            check(card);
        }
        assert_eq!(
            decoder.deadline_ns(),
            None,
            "a frame is finished at its deadline"
        );
    }
    let _ = decoder.noise_pulses();
}
