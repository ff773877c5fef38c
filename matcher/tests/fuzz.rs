//! Arbitrary and mutated bytes never panic the parser or the matcher; valid records round-trip.

use proptest::prelude::*;
use rollcall_matcher::record::{FingerView, Format, MinutiaKind, Record, RecordMinutia};
use rollcall_matcher::{Comparer, Template, parse};

const SAMPLE: &[u8] = include_bytes!("data/fvc2002-db1/101_1.iso");

fn prepare_and_compare(bytes: &[u8]) {
    if let Ok(record) = parse(bytes)
        && let Ok(template) = Template::from_record(&record)
    {
        let reference = Template::from_record(&parse(SAMPLE).unwrap()).unwrap();
        let score = Comparer::new().compare(&template, &reference);
        assert!((0.0..=1.0).contains(&score), "{score}");
    }
}

fn minutia(format: Format) -> impl Strategy<Value = RecordMinutia> {
    let angles = match format {
        Format::Iso2005 => (0u16..256)
            .prop_map(|c| f32::from(c) * 360.0 / 256.0)
            .boxed(),
        Format::Ansi2004 => (0u16..180).prop_map(|c| f32::from(c) * 2.0).boxed(),
    };
    (
        prop_oneof![
            Just(MinutiaKind::RidgeEnding),
            Just(MinutiaKind::Bifurcation),
            Just(MinutiaKind::Other)
        ],
        0u16..0x4000,
        0u16..0x4000,
        angles,
        prop::option::of(1u8..=100),
    )
        .prop_map(|(kind, x, y, angle_degrees, quality)| RecordMinutia {
            kind,
            x,
            y,
            angle_degrees,
            quality,
        })
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![Just(Format::Iso2005), Just(Format::Ansi2004)].prop_flat_map(|format| {
        let view = (
            any::<u8>(),
            0u8..16,
            0u8..16,
            any::<u8>(),
            prop::collection::vec(minutia(format), 0..60),
            prop::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(
                |(position, view_number, impression_type, quality, minutiae, ext)| FingerView {
                    position,
                    view_number,
                    impression_type,
                    quality,
                    minutiae,
                    extended_data: ext,
                },
            );
        (
            any::<u32>(),
            any::<[u16; 5]>(),
            prop::collection::vec(view, 0..4),
        )
            .prop_map(move |(product, header, views)| Record {
                format,
                product_id: (format == Format::Ansi2004).then_some(product),
                capture_equipment: header[0],
                width: header[1],
                height: header[2],
                x_resolution: header[3],
                y_resolution: header[4],
                views,
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        prepare_and_compare(&bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_header_never_panic(
        tail in prop::collection::vec(any::<u8>(), 0..400),
        ansi in any::<bool>(),
    ) {
        let mut bytes = b"FMR\0 20\0".to_vec();
        if ansi {
            bytes.extend_from_slice(&((26 + tail.len()) as u16).to_be_bytes());
        } else {
            bytes.extend_from_slice(&((24 + tail.len()) as u32).to_be_bytes());
        }
        bytes.extend_from_slice(&tail);
        prepare_and_compare(&bytes);
    }

    #[test]
    fn mutated_real_records_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = SAMPLE.to_vec();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        prepare_and_compare(&bytes);
    }

    #[test]
    fn written_records_parse_back_unchanged(record in record()) {
        let bytes = record.to_bytes();
        prop_assert_eq!(parse(&bytes), Ok(record));
    }
}
