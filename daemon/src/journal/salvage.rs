//! Reading what a damaged journal still holds (`rollcall journal salvage`).
//!
//! rollcalld refuses a journal it cannot trust ([`super::JournalError::Corrupt`]) and leaves the
//! file as it was. This module gets the unacknowledged punches out of such a file, with their
//! identity (epoch, seq), never writing to the file itself: everything that could write (redb's
//! repair) runs on a copy in a scratch directory.
//!
//! Three ways in, each tried only if the one before did not give the whole run
//! `acked+1 ..= next_seq-1`:
//!
//! 1. redb's read-only view of a copy (a file whose damage redb does not notice on open: a bad
//!    page it never reads, a punch whose bytes no longer decode);
//! 2. redb's repair of a copy (a file not closed cleanly, so the read-only view refuses it);
//! 3. a scan of the raw bytes (redb refuses the file at all: a destroyed header, a truncated
//!    tail). The journal's values are stored whole inside redb's pages, so every CBOR
//!    [`Punch`] still on disk is found by decoding at each offset that starts a CBOR map and
//!    keeping what decodes, passes [`Punch::check`], and re-encodes to exactly the bytes found
//!    (a chance match of random bytes does not survive that). The meta table's leaf holds its
//!    four keys sorted and adjacent (`ackedepochformatnext_seq`) followed by their u64 values;
//!    the scan reads every copy of it. redb never overwrites a page in place, so older copies of
//!    the meta leaf and pages of deleted (acked) punches may still be in the file: the highest
//!    `acked` found wins (an acked value is only ever written after the centre's commit, so any
//!    copy of it is true), and punches at or below it are dropped.
//!
//! What comes out is a [`Salvage`]: the epoch, the acked position, the unacked punches by seq,
//! and the seqs that could not be found (the centre's contiguous ack cannot pass such a gap).

use std::collections::BTreeMap;
use std::path::Path;

use redb::ReadableDatabase;
use rollcall_protocol::v1::Punch;

use super::{FORMAT, META, PUNCHES};

/// What was recovered from a journal file.
#[derive(Debug, Default)]
pub struct Salvage {
    /// The journal's epoch (`None` if no copy of its metadata survived).
    pub epoch: Option<u64>,
    /// Highest seq the centre acknowledged (0 when unknown: nothing is dropped then).
    pub acked: u64,
    /// The next seq the journal would have assigned, if its metadata survived.
    pub next_seq: Option<u64>,
    /// The unacknowledged punches found, by seq.
    pub punches: BTreeMap<u64, Punch>,
    /// How the file was read, step by step, for the summary.
    pub notes: Vec<String>,
}

impl Salvage {
    /// Seqs in `acked+1 ..= last` (the journal's last seq if known, else the highest found)
    /// that were not recovered, as inclusive ranges.
    pub fn missing(&self) -> Vec<(u64, u64)> {
        let last = match (self.next_seq, self.punches.keys().next_back()) {
            (Some(n), Some(&k)) => (n - 1).max(k),
            (Some(n), None) => n - 1,
            (None, Some(&k)) => k,
            (None, None) => return Vec::new(),
        };
        let mut gaps = Vec::new();
        let mut expect = self.acked + 1;
        for &seq in self.punches.keys() {
            if seq > expect {
                gaps.push((expect, seq - 1));
            }
            expect = seq + 1;
        }
        if expect <= last {
            gaps.push((expect, last));
        }
        gaps
    }

    fn complete(&self) -> bool {
        self.epoch.is_some() && self.next_seq.is_some() && self.missing().is_empty()
    }

    fn absorb(&mut self, found: Found) {
        if self.epoch.is_none() {
            self.epoch = found.epoch;
        }
        self.acked = self.acked.max(found.acked.unwrap_or(0));
        self.next_seq = self.next_seq.max(found.next_seq);
        for (seq, p) in found.punches {
            self.punches.entry(seq).or_insert(p);
        }
        let acked = self.acked;
        self.punches.retain(|&seq, _| seq > acked);
    }
}

/// A journal file that cannot be salvaged at all.
#[derive(Debug, thiserror::Error)]
pub enum SalvageError {
    /// The file (or the scratch copy) could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the operating system answered.
        #[source]
        source: std::io::Error,
    },
    /// Copies of the metadata disagree on the epoch: not one journal's file.
    #[error(
        "{path}: copies of the journal's metadata name different epochs ({epochs:?}); give the \
         right one with --epoch (the centre's ledger shows the device's epochs)"
    )]
    Epochs {
        /// The file.
        path: String,
        /// The epochs found.
        epochs: Vec<u64>,
    },
}

#[derive(Debug, Default)]
struct Found {
    epoch: Option<u64>,
    acked: Option<u64>,
    next_seq: Option<u64>,
    punches: BTreeMap<u64, Punch>,
}

/// Reads every unacknowledged punch `path` still holds. `scratch` is a directory this may write
/// a copy of the file into (the file itself is only read). Never panics on a damaged file.
pub fn salvage(path: &Path, scratch: &Path) -> Result<Salvage, SalvageError> {
    let label = path.display().to_string();
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| SalvageError::Io { path: p, source }
    };
    let bytes = std::fs::read(path).map_err(io(path))?;
    let mut out = Salvage::default();

    let copy = scratch.join("journal-salvage-copy.redb");
    std::fs::write(&copy, &bytes).map_err(io(&copy))?;
    match open_read_only(&copy) {
        Ok(found) => {
            out.notes.push(format!(
                "read {} punches through redb's read-only view",
                found.punches.len()
            ));
            out.absorb(found);
        }
        Err(why) => {
            out.notes
                .push(format!("redb's read-only view refused it: {why}"));
            // Repair writes: it runs on a fresh copy.
            std::fs::write(&copy, &bytes).map_err(io(&copy))?;
            match open_repaired(&copy) {
                Ok(found) => {
                    out.notes.push(format!(
                        "read {} punches after redb repaired a copy",
                        found.punches.len()
                    ));
                    out.absorb(found);
                }
                Err(why) => out.notes.push(format!("redb's repair failed: {why}")),
            }
        }
    }
    let _ = std::fs::remove_file(&copy);

    if !out.complete() {
        let found = scan(&bytes);
        let epochs = found.1;
        if epochs.len() > 1 {
            return Err(SalvageError::Epochs {
                path: label,
                epochs,
            });
        }
        if let (Some(a), Some(&b)) = (out.epoch, epochs.first())
            && a != b
        {
            return Err(SalvageError::Epochs {
                path: label,
                epochs: vec![a, b],
            });
        }
        out.notes.push(format!(
            "scanned the file's {} bytes: {} punches, {} with a metadata copy",
            bytes.len(),
            found.0.punches.len(),
            if epochs.is_empty() {
                "none"
            } else {
                "epoch found"
            }
        ));
        out.absorb(found.0);
    }
    Ok(out)
}

fn open_read_only(copy: &Path) -> Result<Found, String> {
    let db = match crate::panic::catch(|| redb::Database::builder().open_read_only(copy)) {
        Ok(Ok(db)) => db,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("the storage engine found inconsistent data".into()),
    };
    read_tables(&db)
}

fn open_repaired(copy: &Path) -> Result<Found, String> {
    let db = match crate::panic::catch(|| redb::Database::builder().open(copy)) {
        Ok(Ok(db)) => db,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("the storage engine found inconsistent data".into()),
    };
    read_tables(&db)
}

/// Whatever the tables give, stopping at the first error (a bad page) rather than failing.
fn read_tables(db: &impl ReadableDatabase) -> Result<Found, String> {
    match crate::panic::catch(|| read_tables_inner(db)) {
        Ok(r) => r,
        Err(_) => Err("the storage engine found inconsistent data".into()),
    }
}

fn read_tables_inner(db: &impl ReadableDatabase) -> Result<Found, String> {
    let tx = db.begin_read().map_err(|e| e.to_string())?;
    let mut found = Found::default();
    if let Ok(meta) = tx.open_table(META) {
        let get = |k: &str| meta.get(k).ok().flatten().map(|v| v.value());
        if get("format") == Some(FORMAT) {
            found.epoch = get("epoch");
            found.acked = get("acked");
            found.next_seq = get("next_seq");
        }
    }
    let table = tx.open_table(PUNCHES).map_err(|e| e.to_string())?;
    let from = found.acked.unwrap_or(0) + 1;
    let iter = table.range(from..).map_err(|e| e.to_string())?;
    for entry in iter {
        let Ok((k, v)) = entry else { break };
        if let Some(p) = valid_punch(v.value()).filter(|p| p.seq == k.value()) {
            found.punches.insert(k.value(), p);
        }
    }
    Ok(found)
}

/// A punch exactly as the journal stores it: it decodes, passes the contract's checks, has a
/// seq, and re-encodes to the same bytes.
fn valid_punch(bytes: &[u8]) -> Option<Punch> {
    let mut d = minicbor::Decoder::new(bytes);
    let p: Punch = d.decode().ok()?;
    let len = d.position();
    if p.seq == 0 || p.check().is_err() || len != bytes.len() {
        return None;
    }
    (minicbor::to_vec(&p).ok()?.as_slice() == bytes).then_some(p)
}

/// The meta leaf's keys, sorted as redb stores them.
const META_KEYS: &[u8] = b"ackedepochformatnext_seq";

/// Scans raw bytes for punches and copies of the metadata; returns them and the epochs seen.
fn scan(bytes: &[u8]) -> (Found, Vec<u64>) {
    let mut found = Found::default();
    let mut epochs = Vec::new();
    for i in 0..bytes.len() {
        let b = bytes[i];
        // A CBOR map of up to 10 entries (the Punch's fields by index, absent options left
        // out): the Punch's first byte. Arrays too, should the encoding ever change.
        if !(0xa1..=0xaa).contains(&b) && !(0x81..=0x8a).contains(&b) {
            continue;
        }
        let window = &bytes[i..bytes.len().min(i + 4096)];
        let mut d = minicbor::Decoder::new(window);
        if d.decode::<Punch>().is_err() {
            continue;
        }
        let len = d.position();
        if let Some(p) = valid_punch(&window[..len]) {
            found.punches.entry(p.seq).or_insert(p);
        }
    }
    let mut at = 0;
    while let Some(pos) = find(&bytes[at..], META_KEYS) {
        let start = at + pos + META_KEYS.len();
        // The values follow the keys, possibly after padding to their alignment.
        for pad in 0..8 {
            let Some(v) = bytes.get(start + pad..start + pad + 32) else {
                break;
            };
            let u = |n: usize| u64::from_le_bytes(v[n * 8..n * 8 + 8].try_into().unwrap_or([0; 8]));
            let (acked, epoch, format, next_seq) = (u(0), u(1), u(2), u(3));
            if format == FORMAT && epoch != 0 && acked < next_seq {
                if !epochs.contains(&epoch) {
                    epochs.push(epoch);
                }
                found.epoch = Some(epoch);
                found.acked = found.acked.max(Some(acked));
                found.next_seq = found.next_seq.max(Some(next_seq));
                break;
            }
        }
        at = start;
    }
    (found, epochs)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Journal;
    use rollcall_protocol::v1::{ClockState, CredentialKind, Subject};
    use uuid::Uuid;

    fn punch(i: u64) -> Punch {
        Punch {
            seq: 0,
            event_id: Uuid::from_u128(i as u128 + 1),
            captured_at_ms: 1_700_000_000_000 + i as i64,
            clock: ClockState {
                ntp_synced: true,
                offset_ms: None,
                boot_id: Uuid::from_u128(7),
                monotonic_ms: i,
            },
            reader_id: "door-card".into(),
            reader_kind: "rdm6300".into(),
            credential: CredentialKind::Card,
            subject: Subject::Student(format!("S{i:03}")),
            score: None,
            flags: 0,
        }
    }

    /// A journal with 1..=20 appended and 1..=5 acked; returns (epoch, file bytes).
    fn journal(dir: &Path) -> (u64, std::path::PathBuf) {
        let path = dir.join("journal.redb");
        let mut j = Journal::open(&path, 1000).expect("open");
        for i in 0..4 {
            let mut batch: Vec<Punch> = (0..5).map(|k| punch(i * 5 + k)).collect();
            j.append(&mut batch).expect("append");
        }
        j.ack(5).expect("ack");
        let epoch = j.epoch();
        drop(j);
        (epoch, path)
    }

    fn check(s: &Salvage, epoch: u64) {
        assert_eq!(s.epoch, Some(epoch), "{:?}", s.notes);
        assert_eq!(s.acked, 5, "{:?}", s.notes);
        assert_eq!(
            s.punches.keys().copied().collect::<Vec<_>>(),
            (6..=20).collect::<Vec<_>>(),
            "{:?}",
            s.notes
        );
        assert_eq!(s.punches[&6].subject, Subject::Student("S005".into()));
        assert!(s.missing().is_empty());
    }

    /// [`salvage`] on another thread, failing the test if it has not answered within 20 s (it
    /// takes well under a second here): a scan that stops advancing must fail, not hang.
    fn salvage_within_20_s(path: &Path, scratch: &Path) -> Result<Salvage, SalvageError> {
        let (path, scratch) = (path.to_owned(), scratch.to_owned());
        within_20_s(move || salvage(&path, &scratch))
    }

    fn within_20_s<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(work()));
        match rx.recv_timeout(std::time::Duration::from_secs(20)) {
            Ok(answer) => answer,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("no answer within 20 s"),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("it panicked (above)"),
        }
    }

    fn numbered(seq: u64) -> Punch {
        Punch { seq, ..punch(seq) }
    }

    /// A salvage that found `seqs`, with the given acked position and next seq.
    fn found(seqs: &[u64], acked: u64, next_seq: Option<u64>) -> Salvage {
        Salvage {
            epoch: Some(9),
            acked,
            next_seq,
            punches: seqs.iter().map(|&s| (s, numbered(s))).collect(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn missing_names_each_gap_up_to_the_journals_last_seq() {
        // Gaps between the punches found, and after them up to next_seq - 1.
        assert_eq!(
            found(&[6, 7, 9, 12], 5, Some(16)).missing(),
            [(8, 8), (10, 11), (13, 15)]
        );
        // The first unacked seq itself missing.
        assert_eq!(found(&[8], 5, Some(9)).missing(), [(6, 7)]);
        // Without the metadata: up to the highest seq found.
        assert_eq!(found(&[6, 9], 5, None).missing(), [(7, 8)]);
        // A punch beyond the metadata's next seq (an older copy of it): up to that punch.
        assert_eq!(found(&[6, 7, 12], 5, Some(8)).missing(), [(8, 11)]);
        // No punch found: everything unacked is missing; nothing when everything is acked.
        assert_eq!(found(&[], 17, Some(21)).missing(), [(18, 20)]);
        assert_eq!(found(&[], 20, Some(21)).missing(), []);
        assert_eq!(found(&[], 0, Some(1)).missing(), []);
        assert_eq!(found(&[], 5, None).missing(), []);
        // The whole run.
        assert_eq!(found(&[6, 7, 8], 5, Some(9)).missing(), []);
        assert_eq!(found(&[6, 7, 8], 5, None).missing(), []);
    }

    #[test]
    fn a_salvage_is_complete_with_its_epoch_its_last_seq_and_no_gap() {
        assert!(found(&[6, 7], 5, Some(8)).complete());
        let no_epoch = Salvage {
            epoch: None,
            ..found(&[6, 7], 5, Some(8))
        };
        assert!(!no_epoch.complete());
        assert!(!found(&[6, 7], 5, None).complete(), "the last seq unknown");
        assert!(!found(&[6, 8], 5, Some(9)).complete(), "7 missing");
    }

    #[test]
    fn a_later_source_adds_punches_and_its_higher_ack_drops_those_it_covers() {
        let mut s = Salvage::default();
        s.absorb(Found {
            epoch: Some(3),
            acked: Some(5),
            next_seq: Some(11),
            punches: (6..=10).map(|q| (q, numbered(q))).collect(),
        });
        let mut other = numbered(9);
        other.subject = Subject::Student("another copy".into());
        s.absorb(Found {
            epoch: Some(3),
            acked: Some(7),
            next_seq: Some(15),
            punches: [(7, numbered(7)), (9, other), (13, numbered(13))].into(),
        });
        assert_eq!((s.epoch, s.acked, s.next_seq), (Some(3), 7, Some(15)));
        assert_eq!(
            s.punches.keys().copied().collect::<Vec<_>>(),
            [8, 9, 10, 13]
        );
        assert_eq!(s.punches[&9].subject, Subject::Student("S009".into()));
        // A source with no metadata lowers nothing.
        s.absorb(Found {
            punches: [(14, numbered(14))].into(),
            ..Found::default()
        });
        assert_eq!((s.epoch, s.acked, s.next_seq), (Some(3), 7, Some(15)));
        assert_eq!(s.missing(), [(11, 12)]);
    }

    #[test]
    fn a_healthy_file_gives_its_unacked_punches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (epoch, path) = journal(dir.path());
        let before = std::fs::read(&path).expect("read");
        let s = salvage_within_20_s(&path, dir.path()).expect("salvage");
        check(&s, epoch);
        assert_eq!(s.next_seq, Some(21));
        // redb gave the whole run: neither a repair nor a scan was needed.
        assert_eq!(
            s.notes,
            ["read 15 punches through redb's read-only view"],
            "{:?}",
            s.notes
        );
        assert_eq!(
            std::fs::read(&path).expect("read"),
            before,
            "file untouched"
        );
    }

    #[test]
    fn a_journal_with_nothing_acked_gives_every_punch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.redb");
        let mut j = Journal::open(&path, 1000).expect("open");
        let mut batch: Vec<Punch> = (0..7).map(punch).collect();
        j.append(&mut batch).expect("append");
        let epoch = j.epoch();
        drop(j);
        let s = salvage_within_20_s(&path, dir.path()).expect("salvage");
        assert_eq!(
            (s.epoch, s.acked, s.next_seq),
            (Some(epoch), 0, Some(8)),
            "{:?}",
            s.notes
        );
        assert_eq!(
            s.punches.keys().copied().collect::<Vec<_>>(),
            (1..=7).collect::<Vec<_>>()
        );
        assert!(s.missing().is_empty());
        assert_eq!(s.notes, ["read 7 punches through redb's read-only view"]);
    }

    #[test]
    fn a_file_left_open_by_a_killed_daemon_is_repaired_on_a_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.redb");
        let mut j = Journal::open(&path, 1000).expect("open");
        let mut batch: Vec<Punch> = (0..20).map(punch).collect();
        j.append(&mut batch).expect("append");
        j.ack(5).expect("ack");
        let epoch = j.epoch();
        // Never closed, as after kill -9: the file still says it needs recovery.
        std::mem::forget(j);
        let before = std::fs::read(&path).expect("read");
        let s = salvage_within_20_s(&path, dir.path()).expect("salvage");
        assert!(
            s.notes.iter().any(|n| n.contains("repaired a copy")),
            "{:?}",
            s.notes
        );
        assert!(
            !s.notes.iter().any(|n| n.contains("scanned")),
            "the repaired copy gave the whole run: {:?}",
            s.notes
        );
        assert_eq!((s.epoch, s.next_seq), (Some(epoch), Some(21)));
        // The un-synced ack may or may not have survived: either way nothing acked comes back
        // unless its deletion was lost, and every unacked punch does.
        assert!(s.acked <= 5);
        assert_eq!(
            s.punches.keys().copied().collect::<Vec<_>>(),
            (s.acked + 1..=20).collect::<Vec<_>>()
        );
        assert_eq!(
            std::fs::read(&path).expect("read"),
            before,
            "file untouched"
        );
    }

    #[test]
    fn a_destroyed_header_is_scanned_for_punches_and_metadata() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (epoch, path) = journal(dir.path());
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[..64].fill(0xAA);
        std::fs::write(&path, &bytes).expect("write");
        assert!(Journal::open(&path, 1000).is_err(), "rollcalld refuses it");
        let s = salvage_within_20_s(&path, dir.path()).expect("salvage");
        check(&s, epoch);
        assert_eq!(s.next_seq, Some(21));
    }

    #[test]
    fn a_punch_whose_bytes_no_longer_decode_is_reported_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (epoch, path) = journal(dir.path());
        let mut bytes = std::fs::read(&path).expect("read");
        // Seq 10's student id made invalid UTF-8 in every copy redb left of it (pages are
        // copied on write, so older copies may still be in the file).
        let stored = minicbor::to_vec(Punch {
            seq: 10,
            ..punch(9)
        })
        .expect("encode");
        let id_at = find(&stored, b"S009").expect("student id in the encoding");
        let mut copies = 0;
        let mut at = 0;
        while let Some(pos) = find(&bytes[at..], &stored) {
            bytes[at + pos + id_at] = 0xff;
            at += pos + stored.len();
            copies += 1;
        }
        assert!(copies >= 1);
        std::fs::write(&path, &bytes).expect("write");
        let s = salvage_within_20_s(&path, dir.path()).expect("salvage");
        assert_eq!(
            (s.epoch, s.acked, s.next_seq),
            (Some(epoch), 5, Some(21)),
            "{:?}",
            s.notes
        );
        assert_eq!(
            s.punches.keys().copied().collect::<Vec<_>>(),
            [6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
        );
        assert_eq!(s.missing(), [(10, 10)]);
        // The scan was tried for it, and found the same journal.
        assert!(
            s.notes.iter().any(|n| n.contains("scanned")),
            "{:?}",
            s.notes
        );
    }

    #[test]
    fn metadata_of_two_journals_is_refused_naming_both_epochs() {
        let (one, two) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let (epoch_one, path_one) = journal(one.path());
        let (epoch_two, path_two) = journal(two.path());
        let mut bytes = std::fs::read(&path_one).expect("read");
        bytes.extend(std::fs::read(&path_two).expect("read"));
        bytes[..64].fill(0xAA);
        let path = one.path().join("two.redb");
        std::fs::write(&path, &bytes).expect("write");
        match salvage_within_20_s(&path, one.path()) {
            Err(SalvageError::Epochs { mut epochs, .. }) => {
                epochs.sort_unstable();
                let mut both = vec![epoch_one, epoch_two];
                both.sort_unstable();
                assert_eq!(epochs, both);
            }
            other => panic!("not refused for its two epochs: {other:?}"),
        }
    }

    #[test]
    fn the_scan_keeps_only_punches_a_journal_could_have_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk: Vec<u8> = (0..300u32).map(|i| (i * 7 % 64) as u8).collect();
        // A stored punch at the very start of the file, then punches no journal stores.
        let mut bytes = minicbor::to_vec(numbered(3)).expect("encode");
        let no_seq = Punch { seq: 0, ..punch(4) };
        let no_reader = Punch {
            reader_id: String::new(),
            ..numbered(5)
        };
        let before_1970 = Punch {
            captured_at_ms: -1,
            ..numbered(6)
        };
        for p in [&no_seq, &no_reader, &before_1970] {
            bytes.extend(&junk);
            bytes.extend(minicbor::to_vec(p).expect("encode"));
        }
        bytes.extend(&junk);
        let path = dir.path().join("junk");
        std::fs::write(&path, &bytes).expect("write");
        let s = salvage_within_20_s(&path, dir.path()).expect("salvage");
        assert_eq!(s.punches.keys().copied().collect::<Vec<_>>(), [3]);
        assert_eq!(s.punches[&3], numbered(3));
        assert_eq!((s.epoch, s.next_seq), (None, None));
    }

    /// The meta leaf's keys followed, after `pad` bytes, by the values of acked, epoch, format
    /// and next_seq, between other bytes.
    fn meta_copy(pad: usize, acked: u64, epoch: u64, format: u64, next_seq: u64) -> Vec<u8> {
        let mut b = vec![0x55; 100];
        b.extend(META_KEYS);
        b.extend(std::iter::repeat_n(0, pad));
        for v in [acked, epoch, format, next_seq] {
            b.extend(v.to_le_bytes());
        }
        b.extend([0x55; 100]);
        b
    }

    fn scan_within_20_s(bytes: Vec<u8>) -> (Option<u64>, Option<u64>, Option<u64>, Vec<u64>) {
        let (found, epochs) = within_20_s(move || scan(&bytes));
        (found.epoch, found.acked, found.next_seq, epochs)
    }

    #[test]
    fn the_scan_reads_metadata_copies_with_or_without_padding() {
        for pad in [0, 3, 7] {
            assert_eq!(
                scan_within_20_s(meta_copy(pad, 4, 77, FORMAT, 9)),
                (Some(77), Some(4), Some(9), vec![77]),
                "padding {pad}"
            );
        }
        // Nothing acked yet, and everything acked.
        assert_eq!(
            scan_within_20_s(meta_copy(0, 0, 77, FORMAT, 1)),
            (Some(77), Some(0), Some(1), vec![77])
        );
        assert_eq!(
            scan_within_20_s(meta_copy(0, 8, 77, FORMAT, 9)),
            (Some(77), Some(8), Some(9), vec![77])
        );
        // Two copies of one journal's metadata: the highest acked and next seq win.
        let mut two = meta_copy(0, 6, 77, FORMAT, 12);
        two.extend(meta_copy(0, 4, 77, FORMAT, 9));
        assert_eq!(
            scan_within_20_s(two),
            (Some(77), Some(6), Some(12), vec![77])
        );
    }

    #[test]
    fn the_scan_ignores_metadata_no_journal_writes() {
        for (acked, epoch, format, next_seq, what) in [
            (4, 77, FORMAT + 1, 9, "another format"),
            (4, 0, FORMAT, 9, "epoch 0"),
            (9, 77, FORMAT, 9, "acked at next_seq"),
            (10, 77, FORMAT, 9, "acked past next_seq"),
        ] {
            assert_eq!(
                scan_within_20_s(meta_copy(0, acked, epoch, format, next_seq)),
                (None, None, None, vec![]),
                "{what}"
            );
        }
    }

    #[test]
    fn a_truncated_file_gives_what_it_still_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (epoch, path) = journal(dir.path());
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write");
        let s = salvage_within_20_s(&path, dir.path()).expect("no panic, no error");
        // Whatever survives is correct: the right epoch if found, and only unacked punches.
        if let Some(e) = s.epoch {
            assert_eq!(e, epoch);
        }
        assert!(s.punches.keys().all(|&k| (6..=20).contains(&k)));
    }

    #[test]
    fn garbage_is_no_journal_and_no_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("junk");
        let junk: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(&path, &junk).expect("write");
        let s = salvage_within_20_s(&path, dir.path()).expect("salvage");
        assert!(s.punches.is_empty());
        assert_eq!(s.epoch, None);
    }
}
