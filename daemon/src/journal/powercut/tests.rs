//! The power-cut disk itself, byte for byte: the journal's power-cut tests are only as good as
//! its model of what a cut keeps.

use std::io;

use redb::StorageBackend;

use super::PowerCutBackend;

fn read_all(b: &PowerCutBackend) -> Vec<u8> {
    let mut out = vec![0; b.len().expect("len") as usize];
    b.read(0, &mut out).expect("read");
    out
}

#[test]
fn a_cut_keeps_the_synced_bytes_and_the_unsynced_writes_asked_for() {
    let (b, switch) = PowerCutBackend::new();
    assert_eq!((switch.unsynced_writes(), switch.syncs()), (0, 0));
    b.write(0, &[1, 2, 3, 4]).expect("write");
    b.sync_data().expect("sync");
    b.write(2, &[9, 9]).expect("write");
    b.write(4, &[7, 7, 7, 7])
        .expect("write past the end grows the disk");
    assert_eq!(read_all(&b), [1, 2, 9, 9, 7, 7, 7, 7]);
    assert_eq!((switch.unsynced_writes(), switch.syncs()), (2, 1));

    assert_eq!(switch.cut(0, false), [1, 2, 3, 4], "only what was synced");
    assert_eq!(switch.cut(1, false), [1, 2, 9, 9]);
    assert_eq!(switch.cut(2, false), [1, 2, 9, 9, 7, 7, 7, 7]);
    assert_eq!(
        switch.cut(9, false),
        [1, 2, 9, 9, 7, 7, 7, 7],
        "at most all"
    );
    // Torn: the last write kept reached the disk only in its first half.
    assert_eq!(switch.cut(1, true), [1, 2, 9, 4]);
    assert_eq!(switch.cut(2, true), [1, 2, 9, 9, 7, 7]);
}

#[test]
fn with_the_power_off_every_operation_fails_until_it_is_restored() {
    let (b, switch) = PowerCutBackend::new();
    b.write(0, &[5; 8]).expect("write");
    let image = switch.cut(1, false);
    assert!(b.len().is_err());
    assert!(b.read(0, &mut [0; 4]).is_err());
    assert!(b.write(0, &[1]).is_err());
    assert!(b.set_len(2).is_err());
    assert!(b.sync_data().is_err());
    switch.restore(image);
    assert_eq!(read_all(&b), [5; 8]);
    assert_eq!(
        switch.unsynced_writes(),
        0,
        "a restored image is all durable"
    );
    assert_eq!(switch.cut(0, false), [5; 8]);
}

#[test]
fn reads_stop_at_the_end_of_the_disk() {
    let (b, switch) = PowerCutBackend::from_image(vec![1, 2, 3, 4, 5, 6]);
    let mut four = [0; 4];
    b.read(2, &mut four).expect("read up to the end");
    assert_eq!(four, [3, 4, 5, 6]);
    let e = b.read(3, &mut four).expect_err("one byte past the end");
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(
        switch.cut(0, false),
        [1, 2, 3, 4, 5, 6],
        "an image it started from is durable"
    );
}

#[test]
fn a_full_disk_refuses_to_grow_past_its_size_and_nothing_else() {
    let (b, switch) = PowerCutBackend::new();
    switch.set_max_len(Some(8));
    let full = |r: io::Result<()>| r.expect_err("full").raw_os_error() == Some(libc::ENOSPC);
    b.write(0, &[1; 8]).expect("up to the size exactly");
    b.write(4, &[2; 4]).expect("within the size");
    assert!(full(b.write(6, &[3; 4])));
    assert!(full(b.write(8, &[3])));
    assert_eq!(
        read_all(&b),
        [1, 1, 1, 1, 2, 2, 2, 2],
        "a refused write changes nothing"
    );
    b.set_len(8).expect("set_len to the size");
    assert!(full(b.set_len(9)));
    b.set_len(3).expect("shrinking is always possible");
    assert_eq!(read_all(&b), [1, 1, 1]);
    b.set_len(6).expect("growing back within the size");
    assert_eq!(read_all(&b), [1, 1, 1, 0, 0, 0]);
    switch.set_max_len(None);
    b.write(8, &[4]).expect("space freed");
    assert_eq!(b.len().expect("len"), 9);
    // A disk that has since filled up still takes writes over bytes it holds, up to its end.
    switch.set_max_len(Some(2));
    b.write(5, &[6; 4]).expect("overwrite in place");
    assert_eq!(read_all(&b), [1, 1, 1, 0, 0, 6, 6, 6, 6]);
}
