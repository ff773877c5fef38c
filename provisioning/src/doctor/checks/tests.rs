use super::*;
use crate::doctor::net;

fn config(readers: &str) -> Config {
    let text = format!(
        r#"
        [device]
        id = "room-101"
        site = "north"
        state_dir = "/var/lib/rollcall"
        [mqtt]
        host = "127.0.0.1"
        allow_plaintext = true
        {readers}
        "#
    );
    Config::parse(&text).expect("valid config")
}

fn user(uid: Option<u32>, gids: &[u32]) -> ServiceUser {
    ServiceUser {
        name: "rollcall".into(),
        uid,
        gids: gids.to_vec(),
    }
}

const RDM_ON_AMA0: &str =
    "[[reader]]\nid = \"door-em\"\nkind = \"rdm6300\"\nport = \"/dev/ttyAMA0\"\n";

#[test]
fn the_service_user_and_its_groups_come_from_the_account_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (passwd, group) = (dir.path().join("passwd"), dir.path().join("group"));
    std::fs::write(
        &passwd,
        "root:x:0:0::/root:/bin/sh\nrollcall:x:990:990::/var/lib/rollcall:/usr/sbin/nologin\n",
    )
    .expect("write");
    std::fs::write(
        &group,
        "dialout:x:20:pi,rollcall\ngpio:x:997:rollcall\ntty:x:5:\nrollcall:x:990:\n",
    )
    .expect("write");
    let u = ServiceUser::lookup("rollcall", &passwd, &group);
    assert_eq!(u.uid, Some(990));
    assert_eq!(u.gids, [20, 997, 990]);
    assert_eq!(service_user(&u).level, Level::Ok);

    // No account: the failure says how to create it, and device files are judged as for a
    // member of the package's groups.
    let ghost = ServiceUser::lookup("ghost", &passwd, &group);
    assert_eq!(ghost.uid, None);
    assert_eq!(ghost.gids, [20, 997]);
    let f = service_user(&ghost);
    assert_eq!(f.level, Level::Fail);
    assert!(
        f.fix.as_deref().unwrap_or_default().contains("useradd"),
        "{f:?}"
    );
}

#[test]
fn a_missing_serial_port_fails_naming_the_reader_and_the_fix() {
    let c = config(&RDM_ON_AMA0.replace("/dev/ttyAMA0", "/dev/ttyNOPE9"));
    let found = serial_ports(&c, &user(Some(990), &[]));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].level, Level::Fail);
    assert_eq!(
        found[0].what,
        "serial port /dev/ttyNOPE9 (reader door-em): missing"
    );
    assert!(
        found[0]
            .fix
            .as_deref()
            .unwrap_or_default()
            .contains("enable_uart=1"),
        "{found:?}"
    );
}

#[test]
fn a_plain_file_at_the_port_is_not_a_device_and_dev_null_is_permitted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ttyFAKE");
    std::fs::write(&file, b"").expect("write");
    let c = config(&RDM_ON_AMA0.replace("/dev/ttyAMA0", &file.display().to_string()));
    let f = &serial_ports(&c, &user(Some(990), &[]))[0];
    assert!(
        f.level == Level::Fail
            && f.what
                .ends_with("not a device (a plain file or directory is in its place)"),
        "{f:?}"
    );
    // /dev/null: a character device every user may read and write.
    let c = config(&RDM_ON_AMA0.replace("/dev/ttyAMA0", "/dev/null"));
    let f = &serial_ports(&c, &user(Some(990), &[]))[0];
    assert_eq!(f.level, Level::Ok, "{f:?}");
}

#[test]
fn simulated_readers_need_no_device_files() {
    let c = config("[[reader]]\nid = \"door-card\"\nkind = \"simulated-card\"\n");
    assert!(!needs_devices(&c));
    let c = config(&format!("{RDM_ON_AMA0}simulate = true\n"));
    assert!(!needs_devices(&c));
    assert!(serial_ports(&c, &user(None, &[])).is_empty());
}

#[test]
fn a_serial_console_on_a_readers_uart_fails_with_the_cmdline_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cmdline = dir.path().join("cmdline");
    let c = config(RDM_ON_AMA0);
    for (line, level) in [
        (
            "console=serial0,115200 console=tty1 root=PARTUUID=1 rootwait",
            Level::Fail,
        ),
        ("console=ttyAMA0,115200 root=/dev/mmcblk0p2", Level::Fail),
        ("console=ttyS0,115200", Level::Fail),
        ("console=tty1 root=PARTUUID=1 rootwait quiet", Level::Ok),
    ] {
        std::fs::write(&cmdline, line).expect("write");
        let f = uart_console(&c, &cmdline);
        assert_eq!(f.level, level, "{line}: {f:?}");
        if level == Level::Fail {
            assert!(f.what.contains("the UART of reader door-em"), "{f:?}");
            assert!(
                f.fix
                    .as_deref()
                    .unwrap_or_default()
                    .contains("/boot/firmware/cmdline.txt"),
                "{f:?}"
            );
        }
    }
    // A console on the UART bothers nobody when no reader uses it.
    std::fs::write(&cmdline, "console=serial0,115200").expect("write");
    let sim = config("[[reader]]\nid = \"door-card\"\nkind = \"simulated-card\"\n");
    assert_eq!(uart_console(&sim, &cmdline).level, Level::Ok);
}

#[test]
fn a_missing_gpio_chip_fails_with_the_fix() {
    let c = config(
        "[[reader]]\nid = \"gate\"\nkind = \"wiegand\"\nchip = \"/dev/gpiochip-missing\"\n\
         d0_line = 17\nd1_line = 27\n",
    );
    let found = gpio(&c, &user(Some(990), &[]));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].level, Level::Fail);
    assert_eq!(
        found[0].what,
        "GPIO chip /dev/gpiochip-missing (reader gate): missing"
    );
    assert!(
        found[0]
            .fix
            .as_deref()
            .unwrap_or_default()
            .contains("gpiodetect"),
        "{found:?}"
    );
}

#[test]
fn disk_space_thresholds_and_a_failing_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mb = 1024 * 1024;
    assert_eq!(disk(dir.path(), Some(5 * mb)).level, Level::Fail);
    assert_eq!(disk(dir.path(), Some(50 * mb)).level, Level::Warn);
    assert_eq!(disk(dir.path(), Some(5000 * mb)).level, Level::Ok);
    let gone = dir.path().join("gone");
    let f = disk(&gone, Some(5000 * mb));
    assert!(
        f.level == Level::Fail && f.what.contains("writing in") && f.what.contains("fails"),
        "{f:?}"
    );
    assert_eq!(disk(&gone, None).level, Level::Fail);
}

#[test]
fn an_unsynchronised_clock_warns_with_the_fix() {
    assert_eq!(clock(true, Some(4)).level, Level::Ok);
    let f = clock(false, None);
    assert_eq!(f.level, Level::Warn);
    assert!(f.fix.as_deref().unwrap_or_default().contains("timedatectl"));
}

#[test]
fn no_roster_from_the_centre_warns_and_a_missing_roster_file_fails() {
    let c = config("[[reader]]\nid = \"door-card\"\nkind = \"simulated-card\"\n");
    let f = roster(&c, None, SystemTime::now());
    assert_eq!(f.level, Level::Warn);
    assert!(f.what.starts_with("roster: none from the centre"), "{f:?}");
    let file = config(
        "[roster]\nsource = \"file\"\npath = \"/nonexistent/roster.toml\"\n\
         [[reader]]\nid = \"door-card\"\nkind = \"simulated-card\"\n",
    );
    assert_eq!(roster(&file, None, SystemTime::now()).level, Level::Fail);
}

#[test]
fn certificate_dates_expired_not_yet_valid_near_the_end_and_fine() {
    use time::{Duration as D, OffsetDateTime};
    let dir = tempfile::tempdir().expect("tempdir");
    let now = OffsetDateTime::now_utc();
    let cases = [
        (
            "expired",
            now - D::days(400),
            now - D::days(1),
            Level::Fail,
            "expired on",
        ),
        (
            "future",
            now + D::days(2),
            now + D::days(400),
            Level::Fail,
            "not valid before",
        ),
        (
            "ending",
            now - D::days(300),
            now + D::days(10),
            Level::Warn,
            "expires on",
        ),
        (
            "fine",
            now - D::days(1),
            now + D::days(365),
            Level::Ok,
            "valid until",
        ),
    ];
    for (name, from, until, level, want) in cases {
        let mut params = rcgen::CertificateParams::new(vec!["room-101".into()]).expect("params");
        params.not_before = from;
        params.not_after = until;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("sign");
        let path = dir.path().join(format!("{name}.pem"));
        std::fs::write(&path, cert.pem()).expect("write");
        let f = net::certificate("device certificate", &path, SystemTime::now());
        assert_eq!(f.level, level, "{name}: {f:?}");
        assert!(f.what.contains(want), "{name}: {f:?}");
    }
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("write");
    assert_eq!(
        net::certificate("device certificate", &junk, SystemTime::now()).level,
        Level::Fail
    );
}

#[tokio::test]
async fn without_the_daemon_the_journal_is_judged_by_opening_a_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Config::parse(&format!(
        "[device]\nid = \"room-101\"\nsite = \"north\"\nstate_dir = \"{}\"\n\
         [mqtt]\nhost = \"127.0.0.1\"\nallow_plaintext = true\n\
         [[reader]]\nid = \"door-card\"\nkind = \"simulated-card\"\n",
        dir.path().display()
    ))
    .expect("valid config");
    let f = journal(&c, None).await;
    assert!(
        f.level == Level::Ok && f.what.contains("not created yet"),
        "{f:?}"
    );

    drop(rollcall_daemon::journal::Journal::open(&c.journal_path(), 100).expect("create"));
    let before = std::fs::read(c.journal_path()).expect("read");
    let f = journal(&c, None).await;
    assert!(
        f.level == Level::Ok && f.what.contains("opens (a copy), 0 unacked"),
        "{f:?}"
    );
    assert_eq!(
        std::fs::read(c.journal_path()).expect("read"),
        before,
        "the original untouched"
    );

    std::fs::write(c.journal_path(), vec![0x5a; 8192]).expect("damage");
    let f = journal(&c, None).await;
    assert_eq!(f.level, Level::Fail, "{f:?}");
    assert!(
        f.fix.as_deref().unwrap_or_default().contains("salvage"),
        "{f:?}"
    );
}
