//! rollcalld's own parsers of outside input: the sealed template files and the records a
//! template sensor sends, the roster file, and the control socket's command lines.

use std::sync::OnceLock;

use rollcall_daemon::control;
use rollcall_daemon::roster::Roster;
use rollcall_daemon::templates::{self, DataKey, MAGIC, MAX_RECORD, Templates};
use rollcall_drivers::simulated::Presentation;

const STUDENT: &str = "2024CS001";

fn key() -> DataKey {
    DataKey::from_bytes([7; 32])
}

fn gallery() -> &'static Templates {
    static G: OnceLock<Templates> = OnceLock::new();
    G.get_or_init(|| {
        let record: &[u8] = include_bytes!("../../matcher/tests/data/fvc2002-db1/101_1.iso");
        let template = templates::prepare(record).expect("the reference record prepares");
        Templates::new(
            vec![(STUDENT.to_owned(), vec![template])],
            rollcall_matcher::THRESHOLD,
        )
    })
}

/// A sealed template file and a sensor's record: `templates::open` on the bytes as a file
/// (refused unless sealed under this key for this student, never a panic); the bytes sealed
/// and opened again come back unchanged; and the bytes as a sensor's record go through
/// `Templates::identify` against a one-student gallery, which answers or refuses without
/// panicking and with a score in [0, 1].
pub fn templates(data: &[u8]) {
    let key = key();
    if let Ok(record) = templates::open(&key, STUDENT, data) {
        assert!(data.starts_with(MAGIC) && record.len() <= MAX_RECORD);
    }
    if !data.is_empty() && data.len() <= MAX_RECORD {
        let sealed = templates::seal(&key, STUDENT, data).expect("a record of 1..=64 KiB seals");
        let opened = templates::open(&key, STUDENT, &sealed).expect("it opens for its student");
        assert_eq!(&opened[..], data);
        assert!(
            templates::open(&key, "2024CS002", &sealed).is_err(),
            "and only for them"
        );
    }
    let identified = crate::alloc::bounded("identify", data.len(), 64, 64 * 1024, || {
        gallery().identify(data)
    });
    match identified {
        Ok(found) => assert!((0.0..=1.0).contains(&found.score), "score {}", found.score),
        Err(_) => assert!(
            templates::prepare(data).is_err(),
            "refused a record that prepares"
        ),
    }
}

/// `Roster::parse` on any text (the roster file is written by people and, later, by the
/// centre): no panic, and what it accepts answers lookups.
pub fn roster(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(roster) = Roster::parse(text) else {
        return;
    };
    let (cards, fingers) = roster.len();
    assert!(cards + fingers <= text.len());
    let _ = roster.card(&[0x04, 0xA1, 0xB2, 0xC3], &[1; 32]);
    let _ = roster.finger(12);
    for (student, _) in roster.template_files() {
        assert!(rollcall_protocol::v1::valid_subject(student));
    }
}

/// `control::parse` on one line of the control socket: no panic, and what it accepts is a
/// card of 1..=16 bytes or a finger. Lines that name a template file are left out: parsing them
/// reads that file, and a fuzzer must not read the machine's files.
pub fn control(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    let words: Vec<&str> = line.split_whitespace().collect();
    if let ["finger", _, file] = words.as_slice()
        && file.contains(['/', '.'])
    {
        return;
    }
    if let Ok((reader, what)) = control::parse(&line) {
        assert_eq!(reader, words[1]);
        match what {
            Presentation::Card(uid) => assert!((1..=16).contains(&uid.len())),
            Presentation::Finger(_) => {}
            Presentation::Template(_) => panic!("a template without a file"),
        }
    }
}
