use proptest::prelude::*;
use proptest::sample::Index;
use rollcall_protocol::v1::{Punch, Subject};

use super::powercut::{PowerCutBackend, PowerSwitch};
use super::*;

/// Punch `n` for the journal to number (student `S{n}`).
fn punch(n: u64) -> Punch {
    Punch {
        seq: 0,
        ..rollcall_tests::fixtures::punch(n)
    }
}

fn punches(range: std::ops::Range<u64>) -> Vec<Punch> {
    range.map(punch).collect()
}

#[test]
fn append_assigns_contiguous_seqs_and_reopen_recovers_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.redb");
    let epoch = {
        let mut j = Journal::open(&path, 100).expect("create");
        let mut batch = punches(0..3);
        assert_eq!(j.append(&mut batch).expect("append"), 3);
        assert_eq!(batch.iter().map(|p| p.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(j.append(&mut punches(3..5)).expect("append"), 2);
        j.epoch()
    };
    let j = Journal::open(&path, 100).expect("reopen");
    assert_eq!(j.epoch(), epoch);
    assert_eq!((j.last_seq(), j.acked(), j.depth()), (5, 0, 5));
    let back = j.read_punches(1, 5).expect("read");
    assert_eq!(
        back.iter().map(|p| p.subject.clone()).collect::<Vec<_>>(),
        (0..5)
            .map(|n| Subject::Student(format!("S{n}")))
            .collect::<Vec<_>>()
    );
    assert_eq!(back[4].seq, 5);
}

#[test]
fn a_new_journal_gets_a_new_epoch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Journal::open(&dir.path().join("a.redb"), 10)
        .expect("a")
        .epoch();
    let b = Journal::open(&dir.path().join("b.redb"), 10)
        .expect("b")
        .epoch();
    assert_ne!(a, b);
    assert_ne!(a, 0);
}

#[test]
fn ack_deletes_only_up_to_the_acked_seq_and_seqs_are_never_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.redb");
    {
        let mut j = Journal::open(&path, 100).expect("create");
        j.append(&mut punches(0..5)).expect("append");
        assert_eq!(j.ack(3).expect("ack"), 3);
        assert_eq!(j.ack(2).expect("stale ack"), 0);
        assert_eq!(j.read(1, 10).expect("read").len(), 2, "4 and 5 remain");
        assert_eq!(
            j.ack(99).expect("ack beyond"),
            2,
            "clamped to what was assigned"
        );
        assert_eq!(j.depth(), 0);
        let mut more = punches(5..6);
        j.append(&mut more).expect("append");
        assert_eq!(more[0].seq, 6);
        j.ack(6).expect("ack");
    }
    let mut j = Journal::open(&path, 100).expect("reopen");
    assert_eq!((j.last_seq(), j.acked(), j.depth()), (6, 6, 0));
    let mut next = punches(6..7);
    j.append(&mut next).expect("append");
    assert_eq!(
        next[0].seq, 7,
        "a seq is never reused, even after everything was acked"
    );
}

#[test]
fn full_journal_refuses_new_punches_and_keeps_the_old_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut j = Journal::open(&dir.path().join("j.redb"), 4).expect("create");
    assert_eq!(j.append(&mut punches(0..3)).expect("append"), 3);
    assert_eq!(
        j.append(&mut punches(3..6)).expect("append"),
        1,
        "only one slot was left"
    );
    assert_eq!(j.append(&mut punches(6..7)).expect("append"), 0);
    assert_eq!(
        j.read_punches(1, 4).expect("read").len(),
        4,
        "nothing unacked was overwritten"
    );
    j.ack(2).expect("ack");
    assert_eq!(
        j.append(&mut punches(7..9)).expect("append"),
        2,
        "room again after an ack"
    );
}

fn open_err(path: &Path) -> String {
    Journal::open(path, 10)
        .expect_err("must refuse")
        .to_string()
}

#[test]
fn garbage_file_is_refused_with_the_path_and_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.redb");
    fs::write(&path, vec![0x5A; 64 * 1024]).expect("write");
    let msg = open_err(&path);
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("move the file aside"), "{msg}");
    assert_eq!(
        fs::read(&path).expect("still there").len(),
        64 * 1024,
        "the file is left untouched"
    );
}

#[test]
fn empty_or_truncated_journal_is_refused_not_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.redb");
    {
        let mut j = Journal::open(&path, 100).expect("create");
        j.append(&mut punches(0..50)).expect("append");
    }
    let full = fs::read(&path).expect("read");
    for len in [0, 100, full.len() / 3, full.len() / 2] {
        fs::write(&path, &full[..len]).expect("truncate");
        let result = Journal::open(&path, 100);
        match result {
            Err(JournalError::Corrupt { .. }) => {}
            Err(e) => panic!("truncated to {len}: unexpected error kind: {e}"),
            Ok(j) => panic!(
                "truncated to {len} opened silently with {} punches",
                j.depth()
            ),
        }
    }
}

/// Every file the journal refuses is left exactly as it was: not a byte of its header rewritten.
#[test]
fn a_refused_file_is_left_byte_for_byte_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.redb");
    {
        let mut j = Journal::open(&path, 100).expect("create");
        j.append(&mut punches(0..50)).expect("append");
    }
    let journal = fs::read(&path).expect("read");
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("garbage".into(), vec![0x5A; 64 * 1024]),
        ("empty".into(), Vec::new()),
    ];
    for len in [100, journal.len() / 3, journal.len() / 2, journal.len() - 1] {
        cases.push((format!("truncated to {len}"), journal[..len].to_vec()));
    }
    // Well-formed redb files whose contents are not a journal this rollcalld reads.
    let other = dir.path().join("other.redb");
    let redb_with = |meta: &[(&str, u64)], with_meta: bool| {
        let _ = fs::remove_file(&other);
        let db = Database::create(&other).expect("plain redb");
        let tx = db.begin_write().expect("tx");
        if with_meta {
            let mut t = tx.open_table(META).expect("meta");
            for (k, v) in meta {
                t.insert(*k, *v).expect("insert");
            }
        }
        tx.commit().expect("commit");
        drop(db);
        fs::read(&other).expect("read")
    };
    cases.push(("foreign redb".into(), redb_with(&[], false)));
    cases.push((
        "incomplete metadata".into(),
        redb_with(&[("format", FORMAT), ("epoch", 9)], true),
    ));
    cases.push((
        "a newer format".into(),
        redb_with(
            &[
                ("format", FORMAT + 1),
                ("epoch", 9),
                ("next_seq", 1),
                ("acked", 0),
            ],
            true,
        ),
    ));
    cases.push((
        "acked beyond next seq".into(),
        redb_with(
            &[
                ("format", FORMAT),
                ("epoch", 9),
                ("next_seq", 3),
                ("acked", 7),
            ],
            true,
        ),
    ));
    for (name, bytes) in cases {
        fs::write(&path, &bytes).expect("write");
        let before = blake3::hash(&bytes);
        match Journal::open(&path, 100) {
            Err(JournalError::Corrupt { .. }) => {}
            Err(e) => panic!("{name}: unexpected error kind: {e}"),
            Ok(_) => panic!("{name}: opened"),
        }
        assert_eq!(
            blake3::hash(&fs::read(&path).expect("still there")),
            before,
            "{name}: the refused file was modified"
        );
    }
}

/// A journal left open by a killed rollcalld needs redb's repair, which the read-only check
/// cannot do: it must still open, with every committed punch.
#[test]
fn a_journal_not_closed_cleanly_is_recovered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.redb");
    let crashed = dir.path().join("crashed.redb");
    let mut j = Journal::open(&path, 100).expect("create");
    j.append(&mut punches(0..20)).expect("append");
    // The bytes on disk while it is still open: what kill -9 leaves behind.
    fs::copy(&path, &crashed).expect("copy");
    assert!(matches!(
        builder().open_read_only(&crashed),
        Err(redb::DatabaseError::RepairAborted)
    ));
    let r = Journal::open(&crashed, 100).expect("recovered");
    assert_eq!((r.last_seq(), r.depth(), r.epoch()), (20, 20, j.epoch()));
}

#[test]
fn a_redb_file_that_is_not_a_journal_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.redb");
    drop(Database::create(&path).expect("plain redb"));
    assert!(open_err(&path).contains("no Rollcall journal metadata"));
}

#[test]
fn disk_full_is_a_distinct_error_and_loses_nothing() {
    let (backend, switch) = PowerCutBackend::new();
    let mut j = Journal::open_backend(backend.clone(), "mem", 1_000_000).expect("create");
    j.append(&mut punches(0..10)).expect("append");
    let used = backend_len(&backend);
    switch.set_max_len(Some(used));
    let mut failed = None;
    for i in 0..200 {
        if let Err(e) = j.append(&mut punches(10 + i * 50..10 + (i + 1) * 50)) {
            failed = Some(e);
            break;
        }
    }
    assert!(
        matches!(failed, Some(JournalError::DiskFull(_))),
        "{failed:?}"
    );
    drop(j);
    switch.set_max_len(None);
    let image = switch.cut(0, false);
    let (backend, _) = PowerCutBackend::from_image(image);
    let j = Journal::open_backend(backend, "mem", 1_000_000).expect("reopen");
    assert!(j.depth() >= 10);
    assert_eq!(j.read_punches(1, 10).expect("first ten survive").len(), 10);
}

/// Appends batches of 50 until the disk is full; returns the error.
fn fill(j: &mut Journal, from: u64) -> JournalError {
    for i in 0..200 {
        if let Err(e) = j.append(&mut punches(from + i * 50..from + (i + 1) * 50)) {
            return e;
        }
    }
    panic!("the disk never filled")
}

#[test]
fn after_disk_full_appends_work_again_once_space_is_freed() {
    let (backend, switch) = PowerCutBackend::new();
    let mut j = Journal::open_backend(backend.clone(), "mem", 1_000_000).expect("create");
    j.append(&mut punches(0..10)).expect("append");
    switch.set_max_len(Some(backend_len(&backend)));
    assert!(matches!(fill(&mut j, 10), JournalError::DiskFull(_)));
    let committed = j.last_seq();

    // Still full: the answer stays "disk full" (a distinct outcome for the person at the
    // door), never a generic failure, both at once and after a reopen attempt.
    assert!(matches!(
        j.append(&mut punches(5000..5001)),
        Err(JournalError::DiskFull(_))
    ));
    std::thread::sleep(RETRY_AFTER_FAILURE);
    let still = j.append(&mut punches(5000..5001)).expect_err("still full");
    assert!(matches!(still, JournalError::DiskFull(_)), "{still}");

    // Space freed: writing works again without a restart, and nothing was lost or reused.
    switch.set_max_len(None);
    std::thread::sleep(RETRY_AFTER_FAILURE);
    let mut next = punches(6000..6003);
    assert_eq!(j.append(&mut next).expect("appends again"), 3);
    assert_eq!(next[0].seq, committed + 1, "seqs go on where they stopped");
    assert_eq!(j.ack(5).expect("acks again"), 5);
    assert_eq!(
        j.read_punches(6, committed + 3).expect("read").len() as u64,
        committed - 2
    );
    drop(j);

    let image = switch.cut(0, false);
    let (backend, _) = PowerCutBackend::from_image(image);
    let j = Journal::open_backend(backend, "mem", 1_000_000).expect("reopen");
    assert_eq!(
        j.last_seq(),
        committed + 3,
        "the appends after recovery are durable"
    );
}

/// The reopen of a journal file (not a test backend) after a failed write: the file lock is
/// released and taken again.
#[test]
fn a_journal_file_is_reopened_after_a_failed_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut j = Journal::open(&dir.path().join("j.redb"), 100).expect("create");
    j.append(&mut punches(0..3)).expect("append");
    j.broke(false);
    std::thread::sleep(RETRY_AFTER_FAILURE);
    let mut more = punches(3..5);
    assert_eq!(j.append(&mut more).expect("append after reopen"), 2);
    assert_eq!(more[1].seq, 5);
    assert_eq!(j.read_punches(1, 5).expect("read").len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_thread_answers_disk_full_then_stores_again_once_freed() {
    use super::actor::{JournalHandle, StoreError};
    let (backend, switch) = PowerCutBackend::new();
    let mut j = Journal::open_backend(backend.clone(), "mem", 1_000_000).expect("create");
    j.append(&mut punches(0..10)).expect("append");
    switch.set_max_len(Some(backend_len(&backend)));
    let handle = JournalHandle::spawn(j);
    let mut full = None;
    for i in 0..200 {
        if let Err(e) = handle.append(punches(10 + i * 50..10 + (i + 1) * 50)).await {
            full = Some(e);
            break;
        }
    }
    assert!(matches!(full, Some(StoreError::DiskFull(_))), "{full:?}");
    assert!(matches!(
        handle.append(vec![punch(9000)]).await,
        Err(StoreError::DiskFull(_))
    ));
    switch.set_max_len(None);
    tokio::time::sleep(RETRY_AFTER_FAILURE).await;
    let seqs = handle
        .append(vec![punch(9001)])
        .await
        .expect("stored again");
    assert!(seqs[0].is_some());
    assert_eq!(handle.stats().borrow().last_seq, seqs[0].expect("seq"));
}

fn backend_len(b: &PowerCutBackend) -> u64 {
    StorageBackend::len(b).expect("len")
}

/// What a test does to the journal between power cuts.
#[derive(Debug, Clone)]
enum Op {
    /// Append a batch of this many new punches.
    Append(u64),
    /// Ack up to a seq between the acked position (exclusive) and the last seq (inclusive).
    Ack(Index),
    /// Cut power, keeping a prefix of the writes made since the last sync (the last one kept
    /// torn in half, or not), then reopen the journal from what survived.
    Cut { keep: Index, tear: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1u64..20).prop_map(Op::Append),
        2 => any::<Index>().prop_map(Op::Ack),
        1 => (any::<Index>(), any::<bool>()).prop_map(|(keep, tear)| Op::Cut { keep, tear }),
    ]
}

/// The journal on a disk that loses power, and what its answers promised: every punch whose
/// append returned Ok, the acked position, the highest seq handed out.
struct PowerCutModel {
    journal: Journal,
    switch: PowerSwitch,
    epoch: u64,
    committed: Vec<Punch>,
    acked: u64,
    highest_seq_seen: u64,
    next_punch: u64,
}

impl PowerCutModel {
    fn new() -> Self {
        let (backend, switch) = PowerCutBackend::new();
        let journal = Journal::open_backend(backend, "mem", 1_000_000).expect("create");
        Self {
            epoch: journal.epoch(),
            journal,
            switch,
            committed: Vec::new(),
            acked: 0,
            highest_seq_seen: 0,
            next_punch: 0,
        }
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Append(n) => {
                let mut batch = punches(self.next_punch..self.next_punch + n);
                self.next_punch += n;
                let ok = self.journal.append(&mut batch).expect("append");
                self.committed.extend(batch.into_iter().take(ok));
                self.highest_seq_seen = self.journal.last_seq();
            }
            Op::Ack(i) => {
                let last = self.journal.last_seq();
                if last > self.acked {
                    let to = self.acked + 1 + i.index((last - self.acked) as usize) as u64;
                    self.journal.ack(to).expect("ack");
                    self.acked = to;
                }
            }
            Op::Cut { keep, tear } => {
                // Writes redb made after its last sync are what a cut can partially keep.
                let keep = keep.index(self.switch.unsynced_writes() + 1);
                let image = self.switch.cut(keep, tear);
                self.reopen(image)?;
            }
        }
        Ok(())
    }

    /// Reopens from `image` and checks that it kept every promise.
    fn reopen(&mut self, image: Vec<u8>) -> Result<(), TestCaseError> {
        let (backend, switch) = PowerCutBackend::from_image(image);
        let journal = Journal::open_backend(backend, "mem", 1_000_000)
            .map_err(|e| TestCaseError::fail(format!("reopen failed: {e}")))?;
        prop_assert_eq!(journal.epoch(), self.epoch, "epoch survives");
        prop_assert!(
            journal.acked() <= self.acked,
            "acked can only go back (a lost deletion), never forward"
        );
        prop_assert!(
            journal.last_seq() >= self.highest_seq_seen,
            "a committed punch vanished, or a seq would be reused"
        );
        self.acked = journal.acked();
        let expect: Vec<&Punch> = self
            .committed
            .iter()
            .filter(|p| p.seq > self.acked)
            .collect();
        let got = journal
            .read_punches(self.acked + 1, self.highest_seq_seen)
            .expect("read");
        prop_assert_eq!(got.len(), expect.len(), "punches after the acked position");
        for (g, e) in got.iter().zip(expect) {
            prop_assert_eq!(g, e);
        }
        (self.journal, self.switch) = (journal, switch);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Power is cut at any moment while appending and acking; after each cut the journal is
    /// reopened from what reached the disk. Every punch whose append returned Ok must be there,
    /// byte for byte, and new seqs must not reuse any seq handed out before.
    #[test]
    fn power_cut_keeps_every_committed_punch(ops in proptest::collection::vec(op(), 0..60)) {
        let mut model = PowerCutModel::new();
        for op in ops {
            model.apply(op)?;
        }
        // The last cut, keeping nothing unsynced, and the last check.
        let image = model.switch.cut(0, false);
        model.reopen(image)?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_group_committed_with_distinct_seqs() {
    use super::actor::JournalHandle;
    let (backend, switch) = PowerCutBackend::new();
    let handle =
        JournalHandle::spawn(Journal::open_backend(backend, "mem", 1_000_000).expect("create"));
    let syncs_before = switch.syncs();
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let h = handle.clone();
            tokio::spawn(async move { h.append(vec![punch(i)]).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        let got = t.await.expect("task").expect("append");
        seqs.push(got[0].expect("accepted"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    let syncs = switch.syncs() - syncs_before;
    assert!(
        syncs < 200,
        "200 concurrent appends took {syncs} syncs: no group commit happened"
    );
    assert_eq!(handle.stats().borrow().last_seq, 200);
}

#[test]
fn a_range_of_one_reads_one_punch_and_the_oldest_unacked_is_the_one_after_the_ack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut j = Journal::open(&dir.path().join("j.redb"), 100).expect("create");
    assert_eq!(j.oldest_captured_at_ms().expect("empty"), None);
    let mut batch = punches(10..14);
    j.append(&mut batch).expect("append");
    let one = j.read_punches(2, 2).expect("read");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].subject, Subject::Student("S11".into()));
    assert!(j.read(3, 2).expect("empty range").is_empty());
    assert_eq!(j.read(4, 99).expect("clamped").len(), 1);
    assert_eq!(
        j.oldest_captured_at_ms().expect("oldest"),
        Some(batch[0].captured_at_ms)
    );
    j.ack(2).expect("ack");
    assert_eq!(
        j.oldest_captured_at_ms().expect("oldest"),
        Some(batch[2].captured_at_ms)
    );
    assert_eq!(j.read(1, 3).expect("acked ones are gone").len(), 1);
}

/// Deletes `seq` behind the journal's back, as a damaged file would lose it.
fn lose(j: &Journal, seq: u64) {
    let tx = j.db().expect("open").begin_write().expect("tx");
    tx.open_table(PUNCHES)
        .expect("table")
        .remove(seq)
        .expect("remove");
    tx.commit().expect("commit");
}

#[test]
fn a_punch_missing_from_the_journal_is_reported_by_its_seq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut j = Journal::open(&dir.path().join("j.redb"), 100).expect("create");
    j.append(&mut punches(0..5)).expect("append");
    lose(&j, 5);
    assert!(
        matches!(j.read(1, 5), Err(JournalError::Damaged { seq: 5, .. })),
        "the last one"
    );
    lose(&j, 3);
    assert!(
        matches!(j.read(1, 5), Err(JournalError::Damaged { seq: 3, .. })),
        "one in the middle"
    );
    assert_eq!(j.read(1, 2).expect("before the hole").len(), 2);
    assert!(matches!(
        j.read_punches(2, 4),
        Err(JournalError::Damaged { seq: 3, .. })
    ));
}

#[test]
fn a_stored_punch_that_does_not_decode_is_reported_by_its_seq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut j = Journal::open(&dir.path().join("j.redb"), 100).expect("create");
    j.append(&mut punches(0..5)).expect("append");
    j.ack(1).expect("ack");
    let tx = j.db().expect("open").begin_write().expect("tx");
    tx.open_table(PUNCHES)
        .expect("table")
        .insert(3, [0xFFu8, 0x00].as_slice())
        .expect("insert");
    tx.commit().expect("commit");
    assert_eq!(j.read(1, 5).expect("the bytes are there").len(), 4);
    assert!(matches!(
        j.read_punches(1, 5),
        Err(JournalError::Damaged { seq: 3, .. })
    ));
}

#[test]
fn every_eighth_ack_is_durable_so_a_long_drain_survives_a_power_cut() {
    let reopen = |image: Vec<u8>| {
        let (backend, _) = PowerCutBackend::from_image(image);
        Journal::open_backend(backend, "mem", 100).expect("reopen")
    };
    let (backend, switch) = PowerCutBackend::new();
    let mut j = Journal::open_backend(backend, "mem", 100).expect("create");
    j.append(&mut punches(0..10)).expect("append");
    for seq in 1..=7 {
        j.ack(seq).expect("ack");
    }
    // Seven deletions without their own fsync: lost in a cut, so 1..=7 are sent again.
    let after_seven = reopen(switch.cut(0, false));
    assert_eq!((after_seven.acked(), after_seven.last_seq()), (0, 10));

    let (backend, switch) = PowerCutBackend::new();
    let mut j = Journal::open_backend(backend, "mem", 100).expect("create");
    j.append(&mut punches(0..10)).expect("append");
    for seq in 1..=8 {
        j.ack(seq).expect("ack");
    }
    let after_eight = reopen(switch.cut(0, false));
    assert_eq!((after_eight.acked(), after_eight.last_seq()), (8, 10));
    assert_eq!(after_eight.read(1, 10).expect("read").len(), 2);
}

#[test]
fn for_a_second_after_a_failed_write_writes_are_refused_at_once_even_with_space_freed() {
    let (backend, switch) = PowerCutBackend::new();
    let mut j = Journal::open_backend(backend.clone(), "mem", 1_000_000).expect("create");
    j.append(&mut punches(0..10)).expect("append");
    switch.set_max_len(Some(backend_len(&backend)));
    assert!(matches!(fill(&mut j, 10), JournalError::DiskFull(_)));
    let failed_at = Instant::now();
    switch.set_max_len(None);
    let syncs = switch.syncs();
    assert!(matches!(
        j.append(&mut punches(5000..5001)),
        Err(JournalError::DiskFull(_))
    ));
    assert!(
        failed_at.elapsed() < RETRY_AFTER_FAILURE,
        "answered at once"
    );
    assert_eq!(switch.syncs(), syncs, "nothing was tried on the disk");
    std::thread::sleep(RETRY_AFTER_FAILURE);
    assert_eq!(j.append(&mut punches(5000..5001)).expect("space again"), 1);
}

/// The power fails under an open journal and comes back with `back(what survived)` on the disk:
/// the journal's next write fails, and once [`RETRY_AFTER_FAILURE`] has passed it reopens the
/// disk as it now is.
fn outage(j: &mut Journal, switch: &PowerSwitch, back: impl FnOnce(Vec<u8>) -> Vec<u8>) {
    let survived = switch.cut(0, false);
    assert!(
        j.append(&mut punches(900..901)).is_err(),
        "a write with the power off fails"
    );
    switch.restore(back(survived));
    std::thread::sleep(RETRY_AFTER_FAILURE);
}

fn reopen_image(image: Vec<u8>) -> Journal {
    let (backend, _) = PowerCutBackend::from_image(image);
    Journal::open_backend(backend, "mem", 100).expect("reopen")
}

#[test]
fn acks_the_power_cut_took_back_are_redone_when_the_journal_reopens() {
    let (backend, switch) = PowerCutBackend::new();
    let mut j = Journal::open_backend(backend, "mem", 100).expect("create");
    j.append(&mut punches(0..10)).expect("append");
    assert_eq!(j.ack(3).expect("ack"), 3);
    // The deletion had no fsync of its own: the disk comes back still holding 1..=3.
    outage(&mut j, &switch, |survived| survived);
    let mut next = punches(10..11);
    assert_eq!(j.append(&mut next).expect("appends after the reopen"), 1);
    assert_eq!(next[0].seq, 11);
    assert_eq!(
        (j.acked(), j.depth()),
        (3, 8),
        "the centre acked 1..=3: they are not held (or sent) again"
    );
    assert_eq!(j.read(1, 11).expect("read").len(), 8);
    // The append's fsync made the redone deletion durable too.
    let after = reopen_image(switch.cut(0, false));
    assert_eq!((after.acked(), after.last_seq()), (3, 11));
}

#[test]
fn a_journal_that_comes_back_without_its_last_committed_punch_refuses_to_write() {
    let (backend, switch) = PowerCutBackend::new();
    let mut j = Journal::open_backend(backend, "mem", 100).expect("create");
    j.append(&mut punches(0..3)).expect("append");
    // The power blinks: the disk as it was with three punches.
    let three = switch.cut(0, false);
    switch.restore(three.clone());
    let mut fourth = punches(3..4);
    j.append(&mut fourth).expect("append");
    assert_eq!(fourth[0].seq, 4);
    // The disk comes back without punch 4 (its cache lied about the sync): writing on would
    // hand seq 4 out a second time, for another punch.
    outage(&mut j, &switch, |_| three);
    let refused = j
        .append(&mut punches(4..5))
        .expect_err("a committed punch is missing");
    assert!(
        matches!(&refused, JournalError::Corrupt { detail, .. } if detail.contains("last seq 4")),
        "{refused}"
    );
    std::thread::sleep(RETRY_AFTER_FAILURE);
    assert!(
        j.append(&mut punches(4..5)).is_err(),
        "still refused on the next try"
    );
    assert_eq!(j.last_seq(), 4, "the seqs handed out are not taken back");
    assert_eq!(
        reopen_image(switch.cut(0, false)).last_seq(),
        3,
        "nothing was written over the disk"
    );
}

#[test]
fn a_journal_that_comes_back_as_another_journal_refuses_to_write() {
    // Another device's journal (a swapped card), with more punches than this one ever had.
    let (other_backend, other_switch) = PowerCutBackend::new();
    let mut other = Journal::open_backend(other_backend, "other", 100).expect("create");
    other.append(&mut punches(0..10)).expect("append");
    let other_epoch = other.epoch();
    drop(other);
    let other_image = other_switch.cut(0, false);

    let (backend, switch) = PowerCutBackend::new();
    let mut j = Journal::open_backend(backend, "mem", 100).expect("create");
    j.append(&mut punches(0..3)).expect("append");
    let epoch = j.epoch();
    outage(&mut j, &switch, |_| other_image);
    let refused = j
        .append(&mut punches(3..4))
        .expect_err("another journal's seqs are not this one's");
    assert!(
        matches!(&refused, JournalError::Corrupt { detail, .. } if detail.contains(&format!("epoch {other_epoch}"))),
        "{refused}"
    );
    assert_eq!((j.epoch(), j.last_seq()), (epoch, 3));
    let back = reopen_image(switch.cut(0, false));
    assert_eq!(
        (back.epoch(), back.last_seq()),
        (other_epoch, 10),
        "the other journal is left as it was"
    );
}

#[test]
fn a_journal_in_a_directory_not_made_yet_is_created_private_with_its_directories() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state/rollcall/journal.redb");
    let j = Journal::open(&path, 100).expect("create");
    assert_eq!(
        j.label(),
        path.display().to_string(),
        "messages name the file"
    );
    assert_eq!(j.capacity(), 100);
    let mode = fs::metadata(&path).expect("created").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

/// What opening answers for each cause a storage error can have: the person reading it must
/// be told the right thing to do (fix ownership, free space, check the disk, move a damaged
/// file aside, stop the other rollcalld).
#[test]
fn an_open_that_fails_says_what_to_do_for_its_cause() {
    let io = |e: io::Error| move || Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)));
    let opened = |open: Box<dyn FnOnce() -> Result<Database, redb::DatabaseError>>| {
        guarded("/var/lib/rollcall/journal.redb", open).expect_err("must fail")
    };
    for kind in [
        io::ErrorKind::PermissionDenied,
        io::ErrorKind::ReadOnlyFilesystem,
    ] {
        let e = opened(Box::new(io(kind.into())));
        assert!(matches!(e, JournalError::Access { .. }), "{kind:?}: {e}");
        assert!(e.to_string().contains("belong to the user"), "{e}");
    }
    let e = opened(Box::new(io(io::Error::from_raw_os_error(libc::EIO))));
    assert!(
        matches!(e, JournalError::Storage { .. }),
        "an I/O error is not a damaged file: {e}"
    );
    let e = opened(Box::new(io(io::Error::from_raw_os_error(libc::ENOSPC))));
    assert!(matches!(e, JournalError::DiskFull(_)), "{e}");
    // redb reports what it finds in the file (bad magic, too short) as I/O errors without an
    // OS error code.
    let e = opened(Box::new(io(io::Error::new(
        io::ErrorKind::InvalidData,
        "invalid magic number",
    ))));
    assert!(matches!(e, JournalError::Corrupt { .. }), "{e}");
    let e = opened(Box::new(|| Err(redb::DatabaseError::DatabaseAlreadyOpen)));
    assert!(matches!(e, JournalError::Locked(_)), "{e}");
    assert!(e.to_string().contains("another rollcalld"), "{e}");
}

#[tokio::test]
async fn the_journal_threads_answers_and_counters_follow_appends_and_acks() {
    use super::actor::{JournalHandle, JournalStats};
    let (backend, _switch) = PowerCutBackend::new();
    let j = Journal::open_backend(backend, "mem", 5).expect("create");
    let epoch = j.epoch();
    let handle = JournalHandle::spawn(j);
    assert_eq!(handle.oldest_captured_at_ms().await.expect("oldest"), None);
    let seqs = handle.append(punches(0..7)).await.expect("append");
    assert_eq!(
        seqs,
        [Some(1), Some(2), Some(3), Some(4), Some(5), None, None],
        "a capacity of 5: the last two are refused"
    );
    let stats = |last_seq, acked, depth| JournalStats {
        epoch,
        last_seq,
        acked,
        depth,
        capacity: 5,
    };
    assert_eq!(*handle.stats().borrow(), stats(5, 0, 5));
    assert_eq!(handle.ack(2).await.expect("ack"), 2);
    // An ack's counters follow its reply (an append's come before it).
    let after_ack = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        handle.stats().wait_for(|s| s.acked == 2),
    )
    .await
    .expect("the counters follow the ack")
    .map(|s| *s)
    .expect("journal thread");
    assert_eq!(after_ack, stats(5, 2, 3));
    let held = handle.read(1, 5).await.expect("read");
    let held: Vec<Punch> = held
        .iter()
        .map(|b| minicbor::decode(b).expect("decode"))
        .collect();
    assert_eq!(held.iter().map(|p| p.seq).collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(
        handle.oldest_captured_at_ms().await.expect("oldest"),
        Some(punch(2).captured_at_ms)
    );
}

/// A failed read or write is told by its cause: a full disk by its error kind or its errno,
/// damage redb found as a damaged file (move it aside), anything else as a storage error.
#[test]
fn a_storage_error_is_told_by_its_cause() {
    let io = |e: io::Error| storage("j.redb", redb::Error::Io(e));
    assert!(matches!(
        io(io::ErrorKind::StorageFull.into()),
        JournalError::DiskFull(_)
    ));
    assert!(matches!(
        io(io::Error::from_raw_os_error(libc::ENOSPC)),
        JournalError::DiskFull(_)
    ));
    for other in [
        io::Error::other("power is off"),
        io::Error::from_raw_os_error(libc::EIO),
    ] {
        let e = io(other);
        assert!(matches!(e, JournalError::Storage { .. }), "{e}");
    }
    let e = storage("j.redb", redb::Error::Corrupted("bad page checksum".into()));
    assert!(
        matches!(&e, JournalError::Corrupt { detail, .. } if detail == "bad page checksum"),
        "{e}"
    );
    assert!(e.to_string().contains("move the file aside"), "{e}");
}
