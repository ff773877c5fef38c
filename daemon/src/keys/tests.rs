use super::*;
use crate::credentials::outbox::Outbox;
use crate::credentials::store::{RosterStore, StoredRoster};
use rollcall_protocol::v1::credentials::FORMAT_CARD;
use rollcall_protocol::v1::{CredentialKind, Enrolment, Secret};
use std::sync::Arc;

const DEVICE: &str = "room-1";

/// A state directory with a key, a sealed roster, two enrolments and two templates listed in a
/// roster file.
struct Installation {
    _dir: tempfile::TempDir,
    protected: Protected,
}

fn enrolment(n: u8) -> Enrolment {
    Enrolment {
        device_id: DEVICE.into(),
        enrolment_id: uuid::Uuid::from_bytes([n; 16]),
        student: format!("S{n}"),
        kind: CredentialKind::Card,
        format: FORMAT_CARD.into(),
        sensor: String::new(),
        data: Secret::new(vec![n; 4]),
        quality: None,
        captured_at_ms: i64::from(n),
        reader_id: "door".into(),
        operator: "it".into(),
    }
}

fn roster() -> StoredRoster {
    StoredRoster {
        version: 3,
        ..Default::default()
    }
}

fn install() -> Installation {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    let roster_file = state.join("roster.toml");
    let protected = Protected {
        state_dir: state.clone(),
        device_id: DEVICE.into(),
        roster_file: Some(roster_file.clone()),
    };
    let keyring = Arc::new(Keyring::open(&protected).expect("key"));
    RosterStore::with_keyring(&state, DEVICE, keyring.clone())
        .save(&roster())
        .expect("save");
    let outbox = Outbox::open(&state, DEVICE).expect("outbox");
    for n in [1, 2] {
        outbox.put(&keyring.keys(), &enrolment(n)).expect("put");
    }
    std::fs::create_dir(state.join("templates")).expect("mkdir");
    let mut text = String::new();
    for (student, name) in [("S1", "a"), ("S2", "b")] {
        let sealed =
            templates::seal(keyring.keys().sealing(), student, name.as_bytes()).expect("seal");
        std::fs::write(state.join(format!("templates/{name}.rct")), sealed).expect("write");
        text.push_str(&format!(
            "[[template]]\nstudent = \"{student}\"\nfile = \"templates/{name}.rct\"\n"
        ));
    }
    std::fs::write(&roster_file, text).expect("roster");
    Installation {
        _dir: dir,
        protected,
    }
}

fn key_in(state: &Path) -> DataKey {
    read_key(&state.join(KEY_FILE)).expect("key")
}

/// How many of the installation's 5 files open with `key`, and whether they hold what was
/// sealed.
fn opened_by(p: &Protected, key: &DataKey) -> usize {
    let keys = Keys::single(DataKey::from_bytes(*key.bytes()));
    let state = &p.state_dir;
    let mut n = 0;
    let bytes = std::fs::read(state.join(ROSTER_FILE)).expect("roster");
    if let Some(plain) = store::open(key, ROSTER_MAGIC, DEVICE, &bytes) {
        let r: StoredRoster = minicbor::decode(&plain).expect("decodes");
        assert_eq!(r, roster());
        n += 1;
    }
    let outbox = Outbox::open(state, DEVICE).expect("outbox");
    let all = outbox.all(&keys);
    for e in &all {
        assert_eq!(*e, enrolment(e.captured_at_ms as u8));
    }
    n += all.len();
    for (student, name) in [("S1", "a"), ("S2", "b")] {
        let bytes = std::fs::read(state.join(format!("templates/{name}.rct"))).expect("tpl");
        if let Ok(record) = templates::open(key, student, &bytes) {
            assert_eq!(record.as_slice(), name.as_bytes());
            n += 1;
        }
    }
    n
}

#[test]
fn a_rotation_reseals_every_file_and_the_old_key_opens_none() {
    let inst = install();
    let p = &inst.protected;
    let old = key_in(&p.state_dir);
    assert_eq!(opened_by(p, &old), 5);
    let keyring = Keyring::open(p).expect("open");
    let before = keyring.fingerprint();
    let done = keyring.rotate(p).expect("rotate");
    assert_eq!((done.templates, done.roster, done.outbox), (2, 1, 2));
    assert!(done.unreadable.is_empty());
    let new = key_in(&p.state_dir);
    assert_ne!(new.bytes(), old.bytes());
    assert_eq!(done.fingerprint, fingerprint(&new));
    assert_eq!(keyring.fingerprint(), done.fingerprint);
    assert_ne!(before, done.fingerprint);
    assert_eq!(opened_by(p, &new), 5, "the new key opens every file");
    assert_eq!(opened_by(p, &old), 0, "the old key opens none");
    assert!(!p.state_dir.join(NEXT_FILE).exists());
    assert!(!p.state_dir.join(OLD_FILE).exists());
    let leftovers: Vec<_> = walk(&p.state_dir)
        .into_iter()
        .filter(|f| f.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(
        line(&done),
        format!(
            "rotated fingerprint={} templates=2 roster=1 outbox=2 unreadable=0",
            done.fingerprint
        )
    );
}

fn line(r: &Resealed) -> String {
    r.to_line()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn an_interrupted_rotation_is_finished_when_the_key_is_next_opened() {
    let inst = install();
    let p = &inst.protected;
    let old = key_in(&p.state_dir);
    // The state a crash leaves half-way: the new key durable, some files under it, a partial
    // temporary copy and a partial new key file of a second, never-started write.
    let new = DataKey::from_bytes([42; 32]);
    std::fs::write(p.state_dir.join(NEXT_FILE), new.bytes()).expect("next");
    let tpl = p.state_dir.join("templates/a.rct");
    std::fs::write(&tpl, templates::seal(&new, "S1", b"a").expect("seal")).expect("write");
    std::fs::write(p.state_dir.join("roster.sealed.tmp"), b"RCS1partial").expect("tmp");
    std::fs::write(p.state_dir.join(format!("{NEXT_FILE}.tmp")), [1; 5]).expect("tmp");
    assert_eq!(opened_by(p, &old) + opened_by(p, &new), 5);

    let keyring = Keyring::open(p).expect("finished");
    assert_eq!(keyring.fingerprint(), fingerprint(&new));
    assert_eq!(key_in(&p.state_dir).bytes(), new.bytes());
    assert_eq!(opened_by(p, &new), 5);
    assert_eq!(opened_by(p, &old), 0);
    for gone in [
        NEXT_FILE.to_owned(),
        format!("{NEXT_FILE}.tmp"),
        "roster.sealed.tmp".to_owned(),
    ] {
        assert!(!p.state_dir.join(&gone).exists(), "{gone}");
    }
}

#[test]
fn a_file_no_key_opens_is_left_as_it_is_and_reported() {
    let inst = install();
    let p = &inst.protected;
    let foreign = templates::seal(&DataKey::from_bytes([9; 32]), "S2", b"b").expect("seal");
    let tpl = p.state_dir.join("templates/b.rct");
    std::fs::write(&tpl, &foreign).expect("write");
    let keyring = Keyring::open(p).expect("open");
    let done = keyring.rotate(p).expect("rotate");
    assert_eq!(done.unreadable, std::slice::from_ref(&tpl));
    assert_eq!(done.templates, 1);
    assert_eq!(std::fs::read(&tpl).expect("read"), foreign, "untouched");
}

#[test]
fn a_roster_file_that_does_not_parse_refuses_the_rotation_before_any_change() {
    let inst = install();
    let p = &inst.protected;
    let old = key_in(&p.state_dir);
    std::fs::write(p.roster_file.as_ref().expect("file"), "[[template]\n").expect("write");
    let keyring = Keyring::open(p).expect("open");
    let e = keyring.rotate(p).expect_err("refused").to_string();
    assert!(e.contains("correct the roster file"), "{e}");
    assert_eq!(key_in(&p.state_dir).bytes(), old.bytes());
    assert!(!p.state_dir.join(NEXT_FILE).exists());
    assert_eq!(keyring.fingerprint(), fingerprint(&old));
}

#[test]
fn a_crash_around_the_key_files_rename_leaves_nothing_of_the_old_key() {
    let inst = install();
    let p = &inst.protected;
    let old = key_in(&p.state_dir);
    // Killed after the old key was linked as .old, before the rename: both names hold the old
    // key, the new key is still .next, every file already under it.
    let keyring = Keyring::open(p).expect("open");
    keyring.rotate(p).expect("rotate");
    let new = key_in(&p.state_dir);
    std::fs::write(p.state_dir.join(NEXT_FILE), new.bytes()).expect("next");
    std::fs::write(p.state_dir.join(KEY_FILE), old.bytes()).expect("key");
    std::fs::hard_link(p.state_dir.join(KEY_FILE), p.state_dir.join(OLD_FILE)).expect("link");
    let keyring = Keyring::open(p).expect("finished");
    assert_eq!(keyring.fingerprint(), fingerprint(&new));
    assert_eq!(key_in(&p.state_dir).bytes(), new.bytes());
    assert!(!p.state_dir.join(OLD_FILE).exists());
    assert!(!p.state_dir.join(NEXT_FILE).exists());
    assert_eq!(opened_by(p, &new), 5);

    // Killed after the rename, before the old key's file was overwritten: it is at start.
    std::fs::write(p.state_dir.join(OLD_FILE), old.bytes()).expect("old");
    let keyring = Keyring::open(p).expect("open");
    assert_eq!(keyring.fingerprint(), fingerprint(&new));
    assert!(
        !p.state_dir.join(OLD_FILE).exists(),
        "the old key's file is gone"
    );
    assert_eq!(opened_by(p, &new), 5);
}
