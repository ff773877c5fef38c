//! Shared by the `rollcall ca` / `provision` / `device` tests: the `rollcall` binary, a campus CA
//! made by it, and a Mosquitto TLS listener configured as a campus would (client certificate
//! required, CN as user name, the device and centre ACLs, the CA's CRL as `crlfile`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rollcall_protocol::topic;

/// Runs `rollcall <args>`; the output, whatever the exit status.
pub fn rollcall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(args)
        .output()
        .expect("running rollcall")
}

/// Runs `rollcall <args>` and returns its stdout, failing the test with its stderr otherwise.
pub fn ok(args: &[&str]) -> String {
    let out = rollcall(args);
    assert!(
        out.status.success(),
        "rollcall {}: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA made by `rollcall ca init` in `<dir>/ca`, with certificates for the broker (127.0.0.1)
/// and for ingest, issued by `rollcall ca issue`.
pub struct Ca {
    pub dir: PathBuf,
}

impl Ca {
    pub fn create(dir: &Path) -> Ca {
        let ca = dir.join("ca");
        let d = ca.to_str().unwrap();
        ok(&["ca", "init", "--dir", d, "--campus", "Test Campus"]);
        ok(&[
            "ca",
            "issue",
            "localhost",
            "--kind",
            "broker",
            "--san",
            "127.0.0.1",
            "--san",
            "localhost",
            "--dir",
            d,
        ]);
        ok(&[
            "ca",
            "issue",
            "rollcall-ingest",
            "--kind",
            "ingest",
            "--dir",
            d,
        ]);
        Ca { dir: ca }
    }

    pub fn dir(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// `issued/<name>.pem` and `.key`.
    pub fn issued(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join("issued").join(format!("{name}.pem")),
            self.dir.join("issued").join(format!("{name}.key")),
        )
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// Mosquitto with one TLS listener on 127.0.0.1, serving the CA's broker certificate.
pub struct TlsBroker {
    child: Option<Child>,
    pub port: u16,
    conf: PathBuf,
    dir: tempfile::TempDir,
}

impl TlsBroker {
    pub fn start(ca: &Ca) -> TlsBroker {
        let dir = tempfile::tempdir().unwrap();
        let port = rollcall_tests::free_port().unwrap();
        let acl = dir.path().join("acl");
        std::fs::write(
            &acl,
            format!(
                "{}\n{}",
                topic::centre_acl("rollcall-ingest"),
                topic::device_acl()
            ),
        )
        .unwrap();
        let (cert, key) = ca.issued("localhost");
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "{user}listener {port} 127.0.0.1\ncafile {ca}\n\
                 certfile {cert}\nkeyfile {key}\nrequire_certificate true\n\
                 use_identity_as_username true\ncrlfile {crl}\nacl_file {acl}\n\
                 max_inflight_messages 0\nset_tcp_nodelay true\nlog_dest file {log}\n\
                 log_type all\n",
                user = if is_root() { "user root\n" } else { "" },
                ca = ca.ca_pem().display(),
                cert = cert.display(),
                key = key.display(),
                crl = ca.dir.join("crl.pem").display(),
                acl = acl.display(),
                log = dir.path().join("mosquitto.log").display(),
            ),
        )
        .unwrap();
        let mut b = TlsBroker {
            child: None,
            port,
            conf,
            dir,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let child = Command::new(rollcall_tests::mosquitto::binary().unwrap())
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("mosquitto exited at start ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < end,
                "TLS broker did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops and starts the broker on the same port: Mosquitto reads the CRL at start.
    pub fn restart(&mut self) {
        self.kill();
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < end, "old broker still listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.spawn();
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        self.kill();
    }
}
