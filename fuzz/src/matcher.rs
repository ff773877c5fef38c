//! The matcher's ISO/IEC 19794-2 and ANSI INCITS 378 record parser, and what rollcalld does
//! with a record after it (preparing a template and comparing it).

use std::sync::OnceLock;

use rollcall_matcher::{Comparer, Template, parse};

/// A real record (FVC2002 DB1, finger 101, impression 1) to compare fuzzed ones with.
const REFERENCE: &[u8] = include_bytes!("../../matcher/tests/data/fvc2002-db1/101_1.iso");

fn reference() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        Template::from_record(&parse(REFERENCE).expect("reference parses"))
            .expect("reference prepares")
    })
}

/// Record bytes may allocate this much per byte (a 6-byte minutia becomes a 16-byte
/// `RecordMinutia`; a 6-byte view header reserves its declared minutiae) plus a fixed part for
/// the views the header declares (at most 255).
const PER_BYTE: usize = 64;
const FIXED: usize = 64 * 1024;

/// `rollcall_matcher::parse` on any bytes: no panic, bounded allocation; a record it accepts
/// writes back (`to_bytes`) to bytes that parse to the same record; its extension blocks split
/// or are refused; a template prepared from it compares with a real one to a score in [0, 1].
pub fn record(data: &[u8]) {
    let parsed = crate::alloc::bounded("record parse", data.len(), PER_BYTE, FIXED, || parse(data));
    let Ok(record) = parsed else { return };
    let bytes = record.to_bytes();
    assert!(
        bytes.len() <= data.len(),
        "a record writes back no longer than it came"
    );
    assert_eq!(parse(&bytes).expect("a written record parses"), record);
    for view in &record.views {
        if let Ok(blocks) = view.extension_blocks() {
            let total: usize = blocks.iter().map(|b| 4 + b.data.len()).sum();
            assert_eq!(
                total,
                view.extended_data.len(),
                "blocks tile the extended data"
            );
        }
    }
    if let Ok(template) = Template::from_record(&record) {
        let score = Comparer::new().compare(&template, reference());
        assert!((0.0..=1.0).contains(&score), "score {score}");
    }
}
