//! `rollcall doctor` names each fault injected into a gateway with its fix (a missing serial
//! port, a port without permission, the serial console on a reader's UART, a missing GPIO chip,
//! an expired certificate, a broker nobody listens for, a full disk, no daemon), and finds
//! nothing failing on a healthy gateway: the real rollcalld over TLS to a real Mosquitto that
//! requires its client certificate.
//!
//! The fault test mounts a tmpfs and makes a device node, so it needs root (CI runs as root);
//! elsewhere it fails saying so.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::pki::Pki;
use rollcall_tests::rollcalld::{GatewayOptions, Rollcalld};

const ROLLCALL: &str = env!("CARGO_BIN_EXE_rollcall");

fn doctor(config: &Path, extra: &[&str]) -> anyhow::Result<(Option<i32>, String)> {
    let out: Output = Command::new(ROLLCALL)
        .arg("doctor")
        .arg("-c")
        .arg(config)
        .args(extra)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code(), text))
}

/// The line that starts with `prefix`, or the whole output in the panic.
fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{text}"))
}

/// A tmpfs mounted for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(at)?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "mounting a {size} tmpfs at {} failed ({}): this test needs root (CI runs as root)",
            at.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A certificate and key for `room-101` that expired yesterday.
fn expired_certificate(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    use time::{Duration, OffsetDateTime};
    let mut params = rcgen::CertificateParams::new(vec!["room-101".into()])?;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(366);
    params.not_after = now - Duration::days(1);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let (cert_file, key_file) = (dir.join("expired.pem"), dir.join("expired.key"));
    std::fs::write(&cert_file, cert.pem())?;
    std::fs::write(&key_file, key.serialize_pem())?;
    Ok((cert_file, key_file))
}

#[test]
fn doctor_names_each_injected_fault_with_its_fix() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let _fs = Tmpfs::mount(&state, "1m")?;
    // Fill the state directory's file system to the last byte.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(state.join("filler"))?;
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        while f.write_all(&[0]).is_ok() {}
    }
    // A serial port nobody but root may open: a character device of mode 000.
    let locked = dir.path().join("ttyLOCKED");
    let made = Command::new("mknod")
        .arg(&locked)
        .args(["c", "1", "3"])
        .status()?;
    anyhow::ensure!(made.success(), "mknod needs root (CI runs as root)");
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000))?;
    let cmdline = dir.path().join("cmdline");
    std::fs::write(
        &cmdline,
        "console=serial0,115200 console=tty1 root=PARTUUID=deadbeef-02 rootfstype=ext4 rootwait\n",
    )?;
    let (cert, key) = expired_certificate(dir.path())?;
    let dead_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = dir.path().join("rollcalld.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[device]
id = "room-101"
site = "north"
state_dir = "{state}"
[mqtt]
host = "127.0.0.1"
port = {dead_port}
tls = {{ ca_file = "{cert}", cert_file = "{cert}", key_file = "{key}" }}
[roster]
source = "file"
path = "{state}/roster.toml"
[[reader]]
id = "door-em"
kind = "rdm6300"
port = "/dev/ttyNOPE9"
[[reader]]
id = "door-nfc"
kind = "pn532"
port = "{locked}"
[[reader]]
id = "door-iso"
kind = "iso-template"
port = "/dev/serial0"
[[reader]]
id = "gate"
kind = "wiegand"
chip = "/dev/gpiochip-missing"
d0_line = 17
d1_line = 27
"#,
            state = state.display(),
            cert = cert.display(),
            key = key.display(),
            locked = locked.display(),
        ),
    )?;

    let (code, text) = doctor(&config, &["--cmdline", &cmdline.display().to_string()])?;
    assert_eq!(code, Some(1), "{text}");
    let expect = [
        (
            "FAIL  rollcalld: not answering",
            "systemctl start rollcalld",
        ),
        ("FAIL  service user rollcall: no such account", "useradd"),
        (
            "FAIL  serial port /dev/ttyNOPE9 (reader door-em): missing",
            "enable_uart=1",
        ),
        (
            &format!(
                "FAIL  serial port {} (reader door-nfc): permission denied for rollcall (mode 0000,",
                locked.display()
            ),
            "chmod 660",
        ),
        (
            "FAIL  serial console on serial0, the UART of reader door-iso",
            "/boot/firmware/cmdline.txt",
        ),
        (
            "FAIL  GPIO chip /dev/gpiochip-missing (reader gate): missing",
            "gpiodetect",
        ),
        (
            &format!("FAIL  broker 127.0.0.1:{dead_port}: unreachable"),
            "nothing listens there",
        ),
        ("FAIL  device certificate", "rollcall ca renew"),
        (
            &format!("FAIL  disk: writing in {} fails", state.display()),
            "free space",
        ),
    ];
    for (prefix, fix) in expect {
        let l = line(&text, prefix);
        assert!(
            l.contains(" -> fix: ") && l.contains(fix),
            "{fix:?} not in: {l}"
        );
    }
    assert!(
        line(&text, "FAIL  device certificate").contains("expired on"),
        "{text}"
    );
    // Every line is one check: ok, warn or FAIL.
    for l in text.lines() {
        assert!(
            l.starts_with("ok  ") || l.starts_with("warn  ") || l.starts_with("FAIL  "),
            "{l}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_gateway_over_tls_has_no_failure() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(&dir.path().join("pki"))?;
    let broker = Mosquitto::start_tls(&pki)?;
    let (cert, key) = pki.client("room-101")?;
    let mut opts = GatewayOptions::new(broker.tls_port().expect("tls listener"));
    opts.tls = Some((pki.ca(), cert, key));
    let config = opts.write(dir.path())?;
    let gw = Rollcalld::start(&rollcall_tests::binaries::rollcalld(), &config).await?;

    let config2 = config.clone();
    let (code, text) = tokio::task::spawn_blocking(move || doctor(&config2, &[])).await??;
    assert_eq!(code, Some(0), "{text}\nlog:\n{}", gw.log());
    assert!(!text.contains("FAIL"), "{text}");
    for prefix in [
        "ok    config",
        "ok    rollcalld: running",
        "ok    serial console",
        "ok    broker 127.0.0.1:",
        "ok    TLS to 127.0.0.1 with",
        "ok    disk:",
        "ok    journal: open in rollcalld",
    ] {
        line(&text, prefix);
    }
    // The harness's certificates live two days: ok, or the 30-day renewal warning.
    for what in ["device certificate", "CA certificate"] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("ok    {what}"))
                || (l.starts_with(&format!("warn  {what}")) && l.contains("expires on"))),
            "{text}"
        );
    }
    // The clock depends on the machine (a container's is often not synchronised): ok or warn.
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok    clock") || l.starts_with("warn  clock")),
        "{text}"
    );
    Ok(())
}

#[test]
fn a_client_certificate_the_broker_does_not_trust_is_refused_by_name() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::create(&dir.path().join("pki"))?;
    let broker = Mosquitto::start_tls(&pki)?;
    // Valid dates, but signed by nobody the broker knows.
    let (cert, key) = {
        let mut params = rcgen::CertificateParams::new(vec!["room-101".into()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "room-101");
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let (c, k) = (
            dir.path().join("stranger.pem"),
            dir.path().join("stranger.key"),
        );
        std::fs::write(&c, cert.pem())?;
        std::fs::write(&k, key.serialize_pem())?;
        (c, k)
    };
    let mut opts = GatewayOptions::new(broker.tls_port().expect("tls listener"));
    opts.tls = Some((pki.ca(), cert, key));
    let config = opts.write(dir.path())?;
    let (code, text) = doctor(&config, &[])?;
    assert_eq!(code, Some(1), "{text}");
    let l = line(&text, "FAIL  TLS to 127.0.0.1 with");
    assert!(
        l.contains("the broker refused the device certificate"),
        "{l}"
    );
    Ok(())
}

#[test]
fn help_shows_an_example() -> anyhow::Result<()> {
    let out = Command::new(ROLLCALL).args(["doctor", "--help"]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rollcall doctor -c /etc/rollcall/rollcalld.toml"),
        "{text}"
    );
    assert!(text.contains("Exit status: 0"), "{text}");
    Ok(())
}
