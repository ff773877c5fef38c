//! `rollcall provision`'s files have the modes the service needs and nothing more, an existing
//! installation is not overwritten by accident (and its data key never), a campus PKI's files
//! are accepted as they are when they name the device, and every subcommand's help teaches by
//! example.

mod ca_common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ca_common::{Ca, ok, rollcall};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn provision(ca: &Ca, gw: &Path, extra: &[&str]) -> std::process::Output {
    let out = gw.join("etc");
    let state = gw.join("state");
    let mut args = vec![
        "provision",
        "room-101",
        "--site",
        "north",
        "--room",
        "R101",
        "--broker",
        "mqtts://broker.campus:8883",
        "--ca-dir",
        ca.dir(),
        "--reader",
        "card:rdm6300:/dev/ttyAMA0",
        "--reader",
        "finger:r503:/dev/ttyAMA1",
        "--out",
        out.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    rollcall(&args)
}

#[test]
fn provision_writes_each_file_with_the_mode_the_service_needs_and_keeps_the_data_key() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::create(tmp.path());
    let gw = tmp.path().join("gw");
    let out = provision(&ca, &gw, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let etc = gw.join("etc");
    let state = gw.join("state");
    assert_eq!(mode(&etc), 0o750);
    for f in ["rollcalld.toml", "ca.pem", "device.pem", "device.key"] {
        assert_eq!(mode(&etc.join(f)), 0o640, "{f}");
    }
    assert_eq!(mode(&state), 0o700);
    let key = state.join("template.key");
    assert_eq!(mode(&key), 0o600);
    let data_key = std::fs::read(&key).unwrap();
    assert_eq!(data_key.len(), 32);
    // No leftovers of the atomic writes.
    let names: Vec<String> = std::fs::read_dir(&etc)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    // The certificate is the device's, from the CA, and the CA is the campus's.
    assert_eq!(
        std::fs::read(etc.join("ca.pem")).unwrap(),
        std::fs::read(ca.ca_pem()).unwrap()
    );
    assert_eq!(
        std::fs::read(etc.join("device.pem")).unwrap(),
        std::fs::read(ca.issued("room-101").0).unwrap(),
        "issued into the CA's issued/ when it had none"
    );
    // Owners: set as root with a rollcall user, otherwise the chown to run is printed.
    let owners_set = !stdout.contains("(to set)");
    if !owners_set {
        assert!(
            stdout.contains("chown root:rollcall") && stdout.contains("chown rollcall:rollcall"),
            "{stdout}"
        );
    }
    // Validated, saying how.
    assert!(
        stdout.contains("validated with rollcalld's own configuration code")
            || stdout.contains("validate --config: valid"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(etc.join("rollcalld.toml")).unwrap();
    assert!(text.contains("source = \"centre\""), "{text}");
    assert!(
        text.contains(&format!(
            "key_file = \"{}\"",
            etc.join("device.key").display()
        )),
        "{text}"
    );

    // Again: refused without --force; with it, the data key stays as it was.
    let again = provision(&ca, &gw, &[]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("already provisioned") && err.contains("--force"),
        "{err}"
    );
    let forced = provision(&ca, &gw, &["--force"]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert_eq!(
        std::fs::read(&key).unwrap(),
        data_key,
        "the data key is kept"
    );
    assert!(String::from_utf8_lossy(&forced.stdout).contains("kept the existing data key"));
}

#[test]
fn an_sd_card_tree_names_the_gateways_paths_and_says_what_to_chown() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::create(tmp.path());
    let root = tmp.path().join("sd");
    let out = ok(&[
        "provision",
        "room-101",
        "--site",
        "north",
        "--broker",
        "mqtts://broker.campus",
        "--ca-dir",
        ca.dir(),
        "--reader",
        "gate:wiegand:17,27",
        "--root",
        root.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(root.join("etc/rollcall/rollcalld.toml")).unwrap();
    assert!(
        text.contains("cert_file = \"/etc/rollcall/device.pem\""),
        "{text}"
    );
    assert!(text.contains("state_dir = \"/var/lib/rollcall\""), "{text}");
    assert!(text.contains("d0_line = 17"), "{text}");
    assert_eq!(mode(&root.join("var/lib/rollcall/template.key")), 0o600);
    assert!(
        out.contains("chown root:rollcall /etc/rollcall /etc/rollcall/ca.pem"),
        "{out}"
    );
    assert!(
        out.contains("chown rollcall:rollcall /var/lib/rollcall /var/lib/rollcall/template.key"),
        "{out}"
    );
    assert!(
        !root.join("etc/rollcall/.rollcalld.validate.toml").exists(),
        "the validation copy is removed"
    );
}

#[test]
fn campus_pki_files_are_taken_as_they_are_when_they_name_the_device() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::create(tmp.path());
    ok(&["ca", "issue", "room-102", "--dir", ca.dir()]);
    let (cert, key) = ca.issued("room-102");
    let (other_cert, other_key) = ca.issued("rollcall-ingest");
    let run = |id: &str, cert: &Path, key: &Path, out: &Path| {
        rollcall(&[
            "provision",
            id,
            "--site",
            "north",
            "--broker",
            "mqtts://broker.campus",
            "--ca-file",
            ca.ca_pem().to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--reader",
            "door:simulated-card",
            "--out",
            out.join("etc").to_str().unwrap(),
            "--state-dir",
            out.join("state").to_str().unwrap(),
        ])
    };
    let good = run("room-102", &cert, &key, &tmp.path().join("a"));
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert_eq!(
        std::fs::read(tmp.path().join("a/etc/device.pem")).unwrap(),
        std::fs::read(&cert).unwrap()
    );
    let wrong_cn = run("room-102", &other_cert, &other_key, &tmp.path().join("b"));
    assert!(!wrong_cn.status.success());
    let err = String::from_utf8_lossy(&wrong_cn.stderr);
    assert!(err.contains("CN must be the device id"), "{err}");
    assert!(!tmp.path().join("b/etc").exists(), "nothing written");
    let wrong_key = run("room-102", &cert, &other_key, &tmp.path().join("c"));
    let err = String::from_utf8_lossy(&wrong_key.stderr);
    assert!(err.contains("does not belong to"), "{err}");
}

#[test]
fn bad_input_is_refused_with_the_fix_and_nothing_written() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::create(tmp.path());
    let gw = tmp.path().join("gw");
    for (args, want) in [
        (vec!["--reader", "card:rdm6300"], "/dev/ttyAMA0"),
        (
            vec!["--reader", "card:laser:/dev/ttyS0"],
            "unknown kind \"laser\": use one of rdm6300",
        ),
    ] {
        let out = provision(&ca, &gw, &args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!gw.exists(), "{args:?}: nothing written");
    }
    let out = rollcall(&[
        "provision",
        "room-101",
        "--site",
        "north",
        "--broker",
        "mqtt://broker.campus",
        "--ca-dir",
        ca.dir(),
        "--reader",
        "door:simulated-card",
        "--out",
        gw.join("etc").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("only over TLS") && err.contains("mqtts://"),
        "{err}"
    );
    assert!(!gw.exists(), "nothing written");
    let out = rollcall(&["ca", "issue", "room 1", "--dir", ca.dir()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid device name"));
    let out = rollcall(&[
        "ca",
        "list",
        "--dir",
        tmp.path().join("nope").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("rollcall ca init"));
}

#[test]
fn every_help_shows_an_example() {
    for args in [
        vec!["--help"],
        vec!["ca", "--help"],
        vec!["ca", "init", "--help"],
        vec!["ca", "issue", "--help"],
        vec!["ca", "list", "--help"],
        vec!["ca", "renew", "--help"],
        vec!["ca", "revoke", "--help"],
        vec!["ca", "crl", "--help"],
        vec!["provision", "--help"],
        vec!["device", "--help"],
        vec!["device", "register", "--help"],
        vec!["device", "enable", "--help"],
        vec!["device", "disable", "--help"],
        vec!["device", "list", "--help"],
    ] {
        let out = ok(&args);
        assert!(
            out.contains("Example"),
            "rollcall {}: {out}",
            args.join(" ")
        );
    }
}
