//! Record parsing against records written out byte by byte, one test per pitfall and per refusal.

use rollcall_matcher::record::{ExtensionBlock, Format, MinutiaKind, RecordError, RecordMinutia};
use rollcall_matcher::{Minutia, Template, TemplateError, parse};

/// ISO/IEC 19794-2:2005, one view, two minutiae, no extended data: 24 + 4 + 2 x 6 + 2 = 42 bytes.
const ISO: [u8; 42] = [
    0x46, 0x4d, 0x52, 0x00, // "FMR\0"
    0x20, 0x32, 0x30, 0x00, // " 20\0"
    0x00, 0x00, 0x00, 0x2a, // record length 42 (u32)
    0x00, 0x00, // capture equipment: compliance 0, id 0
    0x01, 0x2c, // width 300
    0x01, 0x90, // height 400
    0x00, 0xc5, // x resolution 197 px/cm (500 dpi)
    0x00, 0xc5, // y resolution 197 px/cm
    0x01, // one finger view
    0x00, // reserved
    0x07, // finger position 7 (left index)
    0x00, // view 0 (high nibble), impression type 0 = live-scan plain (low nibble)
    0x3c, // finger quality 60
    0x02, // two minutiae
    0x40, 0x64, // type 01 = ridge ending, x = 0x064 = 100
    0x00, 0xc8, // y = 200
    0x40, // angle 64 x 360/256 = 90 degrees
    0x32, // quality 50
    0x80, 0x96, // type 10 = bifurcation, x = 0x096 = 150
    0x00, 0xfa, // y = 250
    0x00, // angle 0
    0x00, // quality 0 = not reported
    0x00, 0x00, // no extended data
];

/// ANSI INCITS 378-2004 with the same content: 26 + 4 + 12 + 2 = 44 bytes.
const ANSI: [u8; 44] = [
    0x46, 0x4d, 0x52, 0x00, // "FMR\0"
    0x20, 0x32, 0x30, 0x00, // " 20\0"
    0x00, 0x2c, // record length 44 (u16, non-zero: this is how ANSI is told from ISO)
    0x00, 0x33, 0x00, 0x01, // CBEFF product id: owner 0x0033, type 0x0001
    0x00, 0x00, // capture equipment
    0x01, 0x2c, 0x01, 0x90, // 300 x 400
    0x00, 0xc5, 0x00, 0xc5, // 197 x 197 px/cm
    0x01, 0x00, // one view, reserved
    0x07, 0x00, 0x3c, 0x02, // position 7, view 0 / plain, quality 60, two minutiae
    0x40, 0x64, 0x00, 0xc8, 0x2d, 0x32, // ending (100, 200), angle 45 x 2 = 90 degrees, q 50
    0x80, 0x96, 0x00, 0xfa, 0x00, 0x00, // bifurcation (150, 250), angle 0, quality 0
    0x00, 0x00, // no extended data
];

fn expected_minutiae() -> Vec<RecordMinutia> {
    vec![
        RecordMinutia {
            kind: MinutiaKind::RidgeEnding,
            x: 100,
            y: 200,
            angle_degrees: 90.0,
            quality: Some(50),
        },
        RecordMinutia {
            kind: MinutiaKind::Bifurcation,
            x: 150,
            y: 250,
            angle_degrees: 0.0,
            quality: None,
        },
    ]
}

#[test]
fn iso_record_parses_every_field() {
    let r = parse(&ISO).unwrap();
    assert_eq!(r.format, Format::Iso2005);
    assert_eq!(r.product_id, None);
    assert_eq!(
        (r.width, r.height, r.x_resolution, r.y_resolution),
        (300, 400, 197, 197)
    );
    assert_eq!(r.views.len(), 1);
    let v = &r.views[0];
    assert_eq!(
        (v.position, v.view_number, v.impression_type, v.quality),
        (7, 0, 0, 60)
    );
    assert_eq!(v.minutiae, expected_minutiae());
    assert!(v.extended_data.is_empty());
}

#[test]
fn ansi_record_is_told_apart_by_its_u16_length_and_reads_2_degree_angles() {
    let r = parse(&ANSI).unwrap();
    assert_eq!(r.format, Format::Ansi2004);
    assert_eq!(r.product_id, Some(0x0033_0001));
    assert_eq!((r.width, r.height), (300, 400));
    assert_eq!(r.views[0].minutiae, expected_minutiae());
}

#[test]
fn ansi_long_length_form_is_read() {
    // Length 0x0000 then a u32: 30-byte header + 4 + 12 + 2 = 48.
    let mut long = ANSI[..8].to_vec();
    long.extend_from_slice(&[0x00, 0x00, 0x00, 0x00, 0x00, 0x30]);
    long.extend_from_slice(&ANSI[10..]);
    let r = parse(&long).unwrap();
    assert_eq!(r.format, Format::Ansi2004);
    assert_eq!(r.views[0].minutiae, expected_minutiae());
}

#[test]
fn the_shortest_iso_record_is_iso_not_ansis_long_form() {
    // The header alone, no finger view: ISO length 24 (0x0000 0x0018), which ANSI's long form
    // (0x0000 then a u32) can only be told from by its value: below 24 it is ANSI's.
    let mut bare = ISO[..24].to_vec();
    bare[8..12].copy_from_slice(&24u32.to_be_bytes());
    bare[22] = 0; // no view
    let r = parse(&bare).unwrap();
    assert_eq!(r.format, Format::Iso2005);
    assert!(r.views.is_empty());
    assert_eq!(
        Template::from_record(&r).unwrap_err(),
        TemplateError::NoView
    );
}

#[test]
fn zero_padding_after_the_declared_length_is_ignored() {
    let mut padded = ISO.to_vec();
    padded.extend_from_slice(&[0; 16]);
    assert_eq!(parse(&padded).unwrap(), parse(&ISO).unwrap());
}

#[test]
fn version_written_as_020_is_accepted() {
    let mut odd = ISO;
    odd[4] = b'0'; // "020\0" instead of " 20\0"
    assert_eq!(parse(&odd).unwrap(), parse(&ISO).unwrap());
}

#[test]
fn all_zero_qualities_mean_not_reported() {
    let mut zeros = ISO;
    zeros[26] = 0; // finger quality
    zeros[33] = 0; // first minutia's quality
    let r = parse(&zeros).unwrap();
    assert!(r.views[0].minutiae.iter().all(|m| m.quality.is_none()));
}

/// The ISO record with one 6-byte extension block (type 1, body AA BB) whose length field is
/// `block_len`, followed by a second view with no minutiae, so framing errors would show.
fn with_extension(block_len: u8) -> Vec<u8> {
    let mut r = ISO[..24].to_vec();
    r[22] = 2; // two views
    r.extend_from_slice(&ISO[24..40]); // first view header and minutiae
    r.extend_from_slice(&[0x00, 0x06]); // 6 bytes of extended data
    r.extend_from_slice(&[0x00, 0x01, 0x00, block_len, 0xaa, 0xbb]); // type 1, length, body
    r.extend_from_slice(&[0x08, 0x10, 0x00, 0x00, 0x00, 0x00]); // view 2: position 8, view 1, no minutiae
    let len = r.len() as u32; // 24 + 16 + 2 + 6 + 6 = 54
    r[8..12].copy_from_slice(&len.to_be_bytes());
    r
}

#[test]
fn extension_blocks_end_exactly_at_a_header_or_are_refused() {
    let mut r = parse(&ISO).unwrap();
    // A block of its 4-byte header alone (length 4, header counted): an empty block.
    r.views[0].extended_data = vec![0x00, 0x01, 0x00, 0x04];
    assert_eq!(
        r.views[0].extension_blocks().unwrap(),
        vec![ExtensionBlock {
            type_code: 1,
            data: &[]
        }]
    );
    // Two blocks in a row, the second its header alone.
    r.views[0].extended_data = vec![0x00, 0x01, 0x00, 0x05, 0xaa, 0x00, 0x02, 0x00, 0x04];
    assert_eq!(
        r.views[0].extension_blocks().unwrap(),
        vec![
            ExtensionBlock {
                type_code: 1,
                data: &[0xaa]
            },
            ExtensionBlock {
                type_code: 2,
                data: &[]
            }
        ]
    );
    // A whole block, then 1 to 3 bytes: too few for another block's header, under either
    // length convention.
    for tail in 1..=3 {
        let mut data = vec![0x00, 0x01, 0x00, 0x05, 0xaa];
        data.extend(std::iter::repeat_n(0, tail));
        r.views[0].extended_data = data;
        assert_eq!(
            r.views[0].extension_blocks(),
            Err(RecordError::BadExtensionBlocks { len: 5 + tail }),
            "{tail} bytes after the block"
        );
    }
}

#[test]
fn extension_block_length_counting_its_header_splits() {
    let r = parse(&with_extension(6)).unwrap();
    assert_eq!(r.views.len(), 2);
    assert_eq!((r.views[1].position, r.views[1].view_number), (8, 1));
    let blocks = r.views[0].extension_blocks().unwrap();
    assert_eq!(
        blocks,
        vec![ExtensionBlock {
            type_code: 1,
            data: &[0xaa, 0xbb]
        }]
    );
}

#[test]
fn extension_block_length_without_its_header_splits_the_same() {
    let r = parse(&with_extension(2)).unwrap();
    assert_eq!(r.views.len(), 2);
    let blocks = r.views[0].extension_blocks().unwrap();
    assert_eq!(
        blocks,
        vec![ExtensionBlock {
            type_code: 1,
            data: &[0xaa, 0xbb]
        }]
    );
}

#[test]
fn extension_data_that_splits_under_no_convention_is_refused_when_split() {
    let r = parse(&with_extension(9)).unwrap(); // the record itself is framed by lengths
    assert_eq!(
        r.views[0].extension_blocks(),
        Err(RecordError::BadExtensionBlocks { len: 6 })
    );
}

#[test]
fn short_input_is_refused() {
    assert_eq!(
        parse(&ISO[..10]),
        Err(RecordError::TooShort {
            needed: 24,
            got: 10
        })
    );
}

#[test]
fn ansi_long_form_cut_inside_its_length_is_refused() {
    // 0x0000 where ANSI's u16 length would be announces the u32 form, whose last two bytes
    // (offsets 12 and 13) are needed before anything else can be read.
    let mut long = ANSI[..8].to_vec();
    long.extend_from_slice(&[0x00, 0x00, 0x00, 0x00, 0x00, 0x30]);
    for got in [12, 13] {
        assert_eq!(
            parse(&long[..got]),
            Err(RecordError::TooShort { needed: 30, got }),
            "{got} bytes"
        );
    }
    // With all 14, the length is read: 48 declared, 14 there.
    assert_eq!(
        parse(&long),
        Err(RecordError::Truncated {
            declared: 48,
            available: 14
        })
    );
}

#[test]
fn wrong_magic_is_refused() {
    let mut r = ISO;
    r[2] = b'X';
    assert_eq!(parse(&r), Err(RecordError::BadMagic(*b"FMX\0")));
}

#[test]
fn iso_2011_version_is_refused() {
    let mut r = ISO;
    r[4..8].copy_from_slice(b"030\0");
    assert_eq!(parse(&r), Err(RecordError::UnsupportedVersion(*b"030\0")));
}

#[test]
fn record_cut_short_is_refused() {
    assert_eq!(
        parse(&ISO[..40]),
        Err(RecordError::Truncated {
            declared: 42,
            available: 40
        })
    );
}

#[test]
fn declared_length_shorter_than_header_is_refused() {
    // ANSI long form declaring 16 bytes, less than its 30-byte header.
    let mut r = ANSI[..8].to_vec();
    r.extend_from_slice(&[0x00, 0x00, 0x00, 0x00, 0x00, 0x10]);
    r.extend_from_slice(&ANSI[10..]);
    assert_eq!(
        parse(&r),
        Err(RecordError::LengthTooSmall {
            declared: 16,
            header: 30
        })
    );
}

#[test]
fn view_with_more_minutiae_than_bytes_is_refused() {
    let mut r = ISO;
    r[27] = 3; // three minutiae declared, two present
    assert_eq!(
        parse(&r),
        Err(RecordError::ViewOverrun {
            view: 0,
            offset: 28,
            needed: 18,
            declared: 42
        })
    );
}

#[test]
fn bytes_left_inside_the_declared_length_are_refused() {
    let mut r = ISO.to_vec();
    r.extend_from_slice(&[0, 0]);
    r[11] = 44; // declared length covers two stray bytes
    assert_eq!(
        parse(&r),
        Err(RecordError::LeftoverBytes {
            offset: 42,
            count: 2
        })
    );
}

#[test]
fn reserved_minutia_type_is_refused() {
    let mut r = ISO;
    r[34] |= 0xc0; // second minutia: type bits 11
    assert_eq!(
        parse(&r),
        Err(RecordError::ReservedMinutiaType { view: 0, index: 1 })
    );
}

#[test]
fn ansi_angle_over_179_is_refused() {
    let mut r = ANSI;
    r[34] = 180; // first minutia's angle byte
    assert_eq!(
        parse(&r),
        Err(RecordError::AngleOutOfRange {
            view: 0,
            index: 0,
            value: 180
        })
    );
}

#[test]
fn errors_say_what_is_wrong() {
    let e = parse(&ISO[..40]).unwrap_err().to_string();
    assert!(
        e.contains("42") && e.contains("40") && e.contains("cut short"),
        "{e}"
    );
}

#[test]
fn encoding_round_trips_both_formats() {
    for bytes in [&ISO[..], &ANSI[..]] {
        let r = parse(bytes).unwrap();
        assert_eq!(r.to_bytes(), bytes);
    }
}

#[test]
fn an_ansi_record_past_65535_bytes_is_written_in_the_long_form_and_reads_back() {
    let mut r = parse(&ANSI).unwrap();
    r.views[0].extended_data = vec![0; 0xffff];
    let bytes = r.to_bytes();
    // 30-byte long header + view header 4 + 2 minutiae x 6 + 2 + 65,535 extended bytes.
    assert_eq!(bytes.len(), 30 + 4 + 12 + 2 + 0xffff);
    assert_eq!(&bytes[8..10], &[0, 0], "the long form");
    assert_eq!(&bytes[10..14], &(bytes.len() as u32).to_be_bytes());
    assert_eq!(parse(&bytes).unwrap(), r);
}

#[test]
fn minutiae_are_normalised_to_500_dpi_and_a_y_down_frame() {
    // 90 degrees counter-clockwise as viewed points up the image: -y in image coordinates.
    let mut r = parse(&ISO).unwrap();
    let m = Minutia::from_record(&r.views[0].minutiae[0], 197, 197);
    assert_eq!((m.x, m.y), (100.0, 200.0));
    assert!(
        (m.angle - 1.5 * std::f32::consts::PI).abs() < 1e-5,
        "{}",
        m.angle
    );
    // A 1000 dpi record (394 px/cm) has its coordinates halved; resolution 0 is taken as 500 dpi.
    let m = Minutia::from_record(&r.views[0].minutiae[0], 394, 0);
    assert_eq!((m.x, m.y), (50.0, 200.0));
    let m = Minutia::from_record(&r.views[0].minutiae[0], 0, 394);
    assert_eq!((m.x, m.y), (100.0, 100.0));
    r.views.clear();
    assert!(Template::from_record(&r).is_err());
}
