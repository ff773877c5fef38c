//! The README's "Deploy on a Raspberry Pi", end to end on a Debian arm64 system booted with
//! systemd under qemu-system-aarch64 (issue 10's "Done means"). Run by `scripts/arm64-image.sh`,
//! which builds the package, the root file system, the kernel and initrd, and passes them here:
//!
//! ```text
//! cargo run -p rollcall-tests --example arm64_image -- --work target/arm64-image \
//!     --rootfs DIR --kernel FILE --initrd FILE --deb rollcall-gateway_..._arm64.deb \
//!     --rollcall target/debug/rollcall --ingest target/debug/rollcall-ingest
//! ```
//!
//! The centre runs on this machine as the README sets it up: PostgreSQL with CampsHub360's real
//! schema (`../shared/reference/campshub360-schema.sql`; the standalone subset when it is
//! missing, and the verdict says so), a campus CA and certificates by `rollcall ca init/issue`, a
//! TLS Mosquitto that requires client certificates and reads the CA's CRL, rollcall-ingest with its
//! certificate and `[credentials]` (it sends the gateway its room's roster; without it `rollcall
//! status` stays degraded), the gateway's row by `rollcall device register`. The guest reaches
//! the broker at 10.0.2.2 (qemu's user-mode network maps it to this machine's 127.0.0.1).
//!
//! The guest boots from an ext4 image of the root file system with the three files from the CA
//! machine and the package in `/root/arm64-image`; `guest.sh` (run by
//! `rollcall-arm64-image.service`) installs, provisions and enables as IT would, then says `tap`
//! on the console. The PL011 UART, `/dev/ttyAMA0` in the guest as on a Pi, is connected to a
//! socket where this program plays an RDM6300 and presents a card. The verdict: each guest
//! command's exit status and time, the punch in `rollcall.ledger`, and the timings. Exits 0 when
//! everything passed, 1 when something failed, 2 when the harness itself could not run.

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rollcall_drivers::rdm6300::{Tag, sim};
use rollcall_tests::postgres::Postgres;

const DEVICE: &str = "room-101";
const MARK: &str = "ARM64-IMAGE: ";
const GUEST_SH: &str = include_str!("guest.sh");
/// The card presented: a made-up EM4100 tag nobody holds, so the centre records it as an
/// unknown credential (the room's roster is empty: students and cards are not what this run
/// proves).
const CARD: Tag = Tag {
    version: 0x12,
    id: 0x3456_789A,
};
/// Guest commands that must succeed for the verdict to pass. `status-before` is only shown: it
/// may run before the link is up or the roster has come.
const REQUIRED: [&str; 8] = [
    "install",
    "provision",
    "enable",
    "active",
    "acked",
    "status",
    "status-json",
    "doctor",
];

struct Args {
    work: PathBuf,
    rootfs: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    deb: PathBuf,
    rollcall: PathBuf,
    ingest: PathBuf,
    schema: PathBuf,
    smp: u32,
    timeout: Duration,
}

fn usage() -> ! {
    eprintln!(
        "usage: arm64_image --work DIR --rootfs DIR --kernel FILE --initrd FILE --deb FILE \
         --rollcall BIN --ingest BIN [--schema FILE] [--smp N] [--timeout-min N]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut get = std::collections::HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else { usage() };
        get.insert(flag.trim_start_matches("--").to_owned(), value);
    }
    let path = |k: &str| get.get(k).map(PathBuf::from).unwrap_or_else(|| usage());
    let schema = get.get("schema").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/campshub360-schema.sql")
    });
    let num = |k: &str, d: u64| {
        get.get(k)
            .map(|v| v.parse().unwrap_or_else(|_| usage()))
            .unwrap_or(d)
    };
    Args {
        work: path("work"),
        rootfs: path("rootfs"),
        kernel: path("kernel"),
        initrd: path("initrd"),
        deb: path("deb"),
        rollcall: path("rollcall"),
        ingest: path("ingest"),
        schema,
        smp: num("smp", 2) as u32,
        timeout: Duration::from_secs(num("timeout-min", 40) * 60),
    }
}

fn main() {
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(verdict) => {
            println!("{verdict}");
            std::process::exit(if verdict.passed() { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("arm64-image: the harness failed: {e:#}");
            std::process::exit(2);
        }
    }
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a command to completion; its stdout, or an error with its stderr.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Killed> {
    let file = std::fs::File::create(log)?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    Ok(Killed(child))
}

fn wait_for_port(port: u16, child: &mut Killed, what: &str, log: &Path) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.0.try_wait()? {
            bail!(
                "{what} exited at start ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if Instant::now() > end {
            bail!("{what} is not listening on {port} after 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// One guest command as `guest.sh` reported it.
struct Step {
    name: String,
    rc: i32,
    secs: f64,
}

struct Verdict {
    schema: String,
    steps: Vec<Step>,
    ledger: Vec<(i64, String)>,
    devices: String,
    image_secs: f64,
    boot_secs: Option<f64>,
    tap_to_ledger_secs: Option<f64>,
    total_secs: f64,
    guest_done: bool,
    problems: Vec<String>,
    run_dir: PathBuf,
}

impl Verdict {
    fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    fn judge(&mut self) {
        for name in REQUIRED {
            match self.steps.iter().find(|s| s.name == name) {
                Some(s) if s.rc == 0 => {}
                Some(s) => self.problems.push(format!("guest: {name} exited {}", s.rc)),
                None => self.problems.push(format!("guest: {name} never ran")),
            }
        }
        if self.ledger != [(1, "unknown_credential".to_owned())] {
            self.problems.push(format!(
                "rollcall.ledger for {DEVICE}: expected the one tap as seq 1, unknown_credential; got {:?}",
                self.ledger
            ));
        }
        if !self.guest_done {
            self.problems
                .push("guest: never reached `done` (see console.log)".to_owned());
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |s: Option<f64>| s.map_or("-".to_owned(), |s| format!("{s:.1} s"));
        writeln!(f, "arm64 image verdict")?;
        writeln!(f, "  centre database: {}", self.schema)?;
        writeln!(f, "  image (mkfs.ext4 -d): {:.1} s", self.image_secs)?;
        writeln!(f, "  qemu start to guest.sh: {}", secs(self.boot_secs))?;
        for s in &self.steps {
            writeln!(
                f,
                "  guest {:<14} exit {:>3}  {:>6.1} s",
                s.name, s.rc, s.secs
            )?;
        }
        writeln!(
            f,
            "  tap to ledger row (host clock): {}",
            secs(self.tap_to_ledger_secs)
        )?;
        writeln!(f, "  rollcall.ledger: {:?}", self.ledger)?;
        for line in self.devices.lines() {
            writeln!(f, "  device list | {line}")?;
        }
        writeln!(
            f,
            "  total: {:.1} s; logs in {}",
            self.total_secs,
            self.run_dir.display()
        )?;
        if self.passed() {
            write!(
                f,
                "PASS: package installed, provisioned and enabled on Debian arm64 under systemd; the tap on ttyAMA0 reached PostgreSQL"
            )
        } else {
            writeln!(f, "FAIL:")?;
            for p in &self.problems {
                writeln!(f, "  - {p}")?;
            }
            Ok(())
        }
    }
}

async fn run(args: Args) -> Result<Verdict> {
    let started = Instant::now();
    let run_dir = std::path::absolute(args.work.join("run"))?;
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)?;
    }
    std::fs::create_dir_all(&run_dir)?;
    let rollcall = |a: &[&str]| output(Command::new(&args.rollcall).args(a));

    // The database: CampsHub360's own schema when at hand.
    let pg = Postgres::start().context("starting PostgreSQL")?;
    let db_url = pg.create_database("campus")?;
    let (schema_mode, schema) = if args.schema.exists() {
        pg.psql_file("campus", &args.schema)?;
        (
            "existing",
            format!("CampsHub360's schema ({})", args.schema.display()),
        )
    } else {
        (
            "standalone",
            format!(
                "{} missing: ingest's standalone subset of CampsHub360's tables",
                args.schema.display()
            ),
        )
    };

    // The campus CA and certificates, as the README's central-server commands make them.
    let ca = run_dir.join("ca");
    let cad = ca.to_str().context("a UTF-8 path")?;
    rollcall(&["ca", "init", "--dir", cad, "--campus", "North Campus"])?;
    rollcall(&[
        "ca",
        "issue",
        "broker.campus",
        "--kind",
        "broker",
        "--san",
        "broker.campus",
        "--san",
        "10.0.2.2",
        "--san",
        "127.0.0.1",
        "--dir",
        cad,
    ])?;
    rollcall(&[
        "ca",
        "issue",
        "rollcall-ingest",
        "--kind",
        "ingest",
        "--dir",
        cad,
    ])?;
    rollcall(&["ca", "issue", DEVICE, "--dir", cad])?;
    let issued = |name: &str, ext: &str| ca.join("issued").join(format!("{name}.{ext}"));

    // The broker: the README's settings (cafile, certfile/keyfile, crlfile), client certificates
    // required, the CN as user name, the protocol's ACLs.
    let port = rollcall_tests::free_port()?;
    let acl = run_dir.join("mosquitto.acl");
    std::fs::write(
        &acl,
        format!(
            "{}\n{}",
            rollcall_protocol::topic::centre_acl("rollcall-ingest"),
            rollcall_protocol::topic::device_acl()
        ),
    )?;
    let conf = run_dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "user root\nlistener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
             require_certificate true\nuse_identity_as_username true\ncrlfile {crl}\n\
             acl_file {acl}\nmessage_size_limit 1048576\nlog_dest stderr\nlog_type all\n",
            ca = ca.join("ca.pem").display(),
            cert = issued("broker.campus", "pem").display(),
            key = issued("broker.campus", "key").display(),
            crl = ca.join("crl.pem").display(),
            acl = acl.display(),
        ),
    )?;
    let broker_log = run_dir.join("mosquitto.log");
    let mut broker = spawn_logged(
        Command::new(rollcall_tests::mosquitto::binary()?)
            .arg("-c")
            .arg(&conf),
        &broker_log,
    )?;
    wait_for_port(port, &mut broker, "mosquitto", &broker_log)?;

    // rollcall-ingest with its certificate and the credentials service (it publishes each
    // device's roster; without it a gateway waits for one forever); its tables first, so
    // registration finds them.
    let keys = run_dir.join("credential-keys");
    output(
        Command::new(&args.ingest)
            .args(["credentials", "init-key"])
            .arg(&keys),
    )?;
    let ingest_toml = run_dir.join("ingest.toml");
    std::fs::write(
        &ingest_toml,
        format!(
            "node_name = \"arm64-image\"\n[database]\nurl = \"{db_url}\"\npool_size = 2\n\
             schema_mode = \"{schema_mode}\"\n[mqtt]\nurl = \"mqtts://127.0.0.1:{port}\"\n\
             ca_file = \"{ca}\"\nclient_cert = \"{cert}\"\nclient_key = \"{key}\"\n\
             [campus]\ntimezone = \"UTC\"\n[jobs]\nenabled = false\n\
             [credentials]\nkey_file = \"{keys}\"\n",
            keys = keys.display(),
            ca = ca.join("ca.pem").display(),
            cert = issued("rollcall-ingest", "pem").display(),
            key = issued("rollcall-ingest", "key").display(),
        ),
    )?;
    let cfg = ingest_toml.to_str().context("a UTF-8 path")?;
    output(Command::new(&args.ingest).args(["-c", cfg, "validate"]))?;
    output(Command::new(&args.ingest).args(["-c", cfg, "migrate"]))?;
    let ingest_log = run_dir.join("ingest.log");
    let _ingest = spawn_logged(
        Command::new(&args.ingest)
            .args(["-c", cfg, "run"])
            .env("RUST_LOG", "info"),
        &ingest_log,
    )?;
    rollcall(&[
        "device",
        "register",
        DEVICE,
        "--room",
        "R101",
        "--name",
        "Room 101 door",
        "--ingest-config",
        cfg,
    ])?;

    // What IT carries to the Pi: the package and the three files from the CA machine.
    let guest_dir = args.rootfs.join("root/arm64-image");
    if guest_dir.exists() {
        std::fs::remove_dir_all(&guest_dir)?;
    }
    std::fs::create_dir_all(&guest_dir)?;
    let deb_name = args
        .deb
        .file_name()
        .and_then(|n| n.to_str())
        .context("the package's file name")?;
    std::fs::copy(&args.deb, guest_dir.join(deb_name))
        .with_context(|| format!("copying {}", args.deb.display()))?;
    std::fs::copy(ca.join("ca.pem"), guest_dir.join("ca.pem"))?;
    std::fs::copy(
        issued(DEVICE, "pem"),
        guest_dir.join(format!("{DEVICE}.pem")),
    )?;
    std::fs::copy(
        issued(DEVICE, "key"),
        guest_dir.join(format!("{DEVICE}.key")),
    )?;
    std::fs::write(guest_dir.join("guest.sh"), GUEST_SH)?;
    std::fs::write(
        guest_dir.join("env"),
        format!("DEB={deb_name}\nBROKER=mqtts://10.0.2.2:{port}\nDEVICE={DEVICE}\n"),
    )?;

    let image_started = Instant::now();
    let disk = run_dir.join("disk.img");
    std::fs::File::create(&disk)?.set_len(3 << 30)?;
    output(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "rollcall-root", "-d"])
            .arg(&args.rootfs)
            .arg(&disk),
    )?;
    let image_secs = image_started.elapsed().as_secs_f64();

    let console = run_dir.join("console.log");
    let reader_sock = run_dir.join("reader.sock");
    let qemu_started = Instant::now();
    let mut qemu = spawn_logged(
        Command::new("nice")
            .args(["-n", "10", "qemu-system-aarch64"])
            .args([
                "-M",
                "virt",
                "-cpu",
                "cortex-a72",
                "-smp",
                &args.smp.to_string(),
                "-m",
                "1024",
                "-nodefaults",
                "-display",
                "none",
                "-monitor",
                "none",
                "-rtc",
                "base=utc",
                "-kernel",
                args.kernel.to_str().context("a UTF-8 path")?,
                "-initrd",
                args.initrd.to_str().context("a UTF-8 path")?,
                "-append",
                "root=/dev/vda rw console=hvc0 net.ifnames=0",
                "-drive",
                &format!("file={},format=raw,if=none,id=root", disk.display()),
                "-device",
                "virtio-blk-pci,drive=root",
                "-netdev",
                "user,id=net",
                "-device",
                "virtio-net-pci,netdev=net",
                "-device",
                "virtio-rng-pci",
                "-chardev",
                &format!("file,id=console,path={}", console.display()),
                "-device",
                "virtio-serial-pci",
                "-device",
                "virtconsole,chardev=console",
                "-chardev",
                &format!(
                    "socket,id=reader,path={},server=on,wait=off",
                    reader_sock.display()
                ),
                "-serial",
                "chardev:reader",
            ]),
        &run_dir.join("qemu.log"),
    )?;

    // The RDM6300 on the guest's ttyAMA0.
    let mut reader = loop {
        match tokio::net::UnixStream::connect(&reader_sock).await {
            Ok(s) => break s,
            Err(_) if qemu_started.elapsed() < Duration::from_secs(30) => {
                if let Some(status) = qemu.0.try_wait()? {
                    bail!(
                        "qemu-system-aarch64 exited ({status}): {}",
                        std::fs::read_to_string(run_dir.join("qemu.log")).unwrap_or_default()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => bail!("the reader's socket {}: {e}", reader_sock.display()),
        }
    };

    let mut steps = Vec::new();
    let mut boot_secs = None;
    let mut tapped_at = None;
    let mut tap_to_ledger_secs = None;
    let mut guest_done = false;
    let mut done_at = None;
    let mut offset = 0u64;
    let mut partial = String::new();
    let deadline = Instant::now() + args.timeout;
    let ledger_query = format!(
        "SELECT seq || '|' || outcome FROM rollcall.ledger WHERE device_id = '{DEVICE}' ORDER BY seq"
    );
    loop {
        // New console output, line by line.
        if let Ok(mut f) = std::fs::File::open(&console) {
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            offset += buf.len() as u64;
            partial.push_str(&String::from_utf8_lossy(&buf));
        }
        while let Some(nl) = partial.find('\n') {
            let line: String = partial.drain(..=nl).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            println!("guest| {line}");
            let Some(said) = line.find(MARK).map(|i| &line[i + MARK.len()..]) else {
                continue;
            };
            if said.starts_with("booted") {
                boot_secs = Some(qemu_started.elapsed().as_secs_f64());
            } else if said == "tap" {
                sim::present(&mut reader, CARD, 3, None).await?;
                tapped_at = Some(Instant::now());
            } else if said == "done" {
                guest_done = true;
                done_at = Some(Instant::now());
            } else if let Some(step) = parse_step(said) {
                steps.push(step);
            }
        }
        if let (Some(t), None) = (tapped_at, tap_to_ledger_secs)
            && !pg.psql("campus", &ledger_query)?.trim().is_empty()
        {
            tap_to_ledger_secs = Some(t.elapsed().as_secs_f64());
        }
        if qemu.0.try_wait()?.is_some() {
            break;
        }
        if done_at.is_some_and(|t| t.elapsed() > Duration::from_secs(120)) {
            println!(
                "arm64-image: the guest did not power off within 120 s of `done`; stopping qemu"
            );
            break;
        }
        if Instant::now() > deadline {
            println!(
                "arm64-image: timed out after {} min; stopping qemu",
                args.timeout.as_secs() / 60
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(qemu);

    let ledger = pg
        .psql("campus", &ledger_query)?
        .lines()
        .filter_map(|l| {
            let (seq, outcome) = l.split_once('|')?;
            Some((seq.trim().parse().ok()?, outcome.trim().to_owned()))
        })
        .collect();
    let devices = rollcall(&["device", "list", "--ingest-config", cfg])?;
    let mut verdict = Verdict {
        schema,
        steps,
        ledger,
        devices,
        image_secs,
        boot_secs,
        tap_to_ledger_secs,
        total_secs: started.elapsed().as_secs_f64(),
        guest_done,
        problems: Vec::new(),
        run_dir,
    };
    verdict.judge();
    Ok(verdict)
}

/// `step NAME rc=N SECONDSs` from guest.sh (the announcing `step NAME: command` line is not one).
fn parse_step(said: &str) -> Option<Step> {
    let mut words = said.strip_prefix("step ")?.split_whitespace();
    let name = words.next()?.to_owned();
    let rc = words.next()?.strip_prefix("rc=")?.parse().ok()?;
    let secs = words.next()?.strip_suffix('s')?.parse().ok()?;
    Some(Step { name, rc, secs })
}
