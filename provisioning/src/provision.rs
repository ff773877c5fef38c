//! `rollcall provision`: writes the whole installation of one gateway, then checks it.
//!
//! ```text
//! <out>/rollcalld.toml   root:rollcall 0640  device id, site, broker, TLS paths, readers
//! <out>/ca.pem           root:rollcall 0640  the CA the broker's certificate is checked against
//! <out>/device.pem       root:rollcall 0640  this gateway's certificate (CN = device id)
//! <out>/device.key       root:rollcall 0640  its private key (the service reads it as group rollcall)
//! <out>/                 root:rollcall 0750
//! <state-dir>/           rollcall:rollcall 0700 (the unit's StateDirectory, /var/lib/rollcall)
//! <state-dir>/template.key  rollcall:rollcall 0600  the device data key: 32 random bytes that
//!                        seal the roster, fingerprint templates and the enrolment outbox
//! ```
//!
//! `<out>` defaults to `/etc/rollcall` (where the unit reads `rollcalld.toml`), the state
//! directory to `/var/lib/rollcall`. For an SD card or an image, `--root DIR` writes both under
//! DIR (`DIR/etc/rollcall/...`, `DIR/var/lib/rollcall/template.key`) while the configuration
//! names the paths as they will be on the gateway; copy DIR's contents onto the card's root file
//! system. Owners are set when running as root on the gateway with the `rollcall` user present
//! (the Debian package creates it); otherwise modes are set and the `chown` commands to run
//! later are printed. An existing data key is never replaced: it seals what the gateway holds.

mod files;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::ca::store::{CaDir, Kind};
use files::{Install, Owner};

const EXAMPLES: &str = "\
Examples:
  # on the gateway, with the three files `rollcall ca issue room-101` made (or the campus PKI's)
  sudo rollcall provision room-101 --site north --room R101 --broker mqtts://broker.campus:8883 \\
      --ca-file ca.pem --cert room-101.pem --key room-101.key \\
      --reader card:rdm6300:/dev/ttyAMA0 --reader finger:r503:/dev/ttyAMA1
  # on the CA's machine, straight onto an SD card's root file system
  rollcall provision room-102 --site north --room R102 --broker mqtts://broker.campus:8883 \\
      --ca-dir /etc/rollcall/ca --reader gate:wiegand:17,27 --root /media/$USER/rootfs

Reader specs: ID:KIND[:PORT], KIND one of rdm6300, pn532, ef01 (alias r503, r307, r305, as608),
iso-template (PORT a UART such as /dev/ttyAMA0), wiegand (PORT the D0,D1 GPIO lines, e.g. 17,27),
simulated-card, simulated-fingerprint (no PORT).";

/// The device data key's file name, as rollcalld reads it from its state directory.
const KEY_FILE: &str = rollcall_daemon::templates::KEY_FILE;

/// `rollcall provision`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The device id: attendance_biometric_device.device_id, the certificate's CN.
    device_id: String,
    /// Campus / site id (an MQTT topic level), e.g. north.
    #[arg(long)]
    site: String,
    /// The room the gateway is in (recorded in the config's header; the centre learns it from
    /// `rollcall device register --room`).
    #[arg(long)]
    room: Option<String>,
    /// The broker, mqtts://HOST[:PORT] (port 8883 by default).
    #[arg(long)]
    broker: String,
    /// The campus CA made by `rollcall ca init`: the device certificate is taken from its
    /// issued/ directory (made by `rollcall ca issue`), or issued now.
    #[arg(long, conflicts_with_all = ["ca_file", "cert", "key"], required_unless_present = "cert")]
    ca_dir: Option<PathBuf>,
    /// A campus PKI's CA certificate (PEM), with --cert and --key.
    #[arg(long, requires_all = ["cert", "key"])]
    ca_file: Option<PathBuf>,
    /// The device's certificate from the campus PKI (PEM, CN = the device id).
    #[arg(long, requires_all = ["ca_file", "key"])]
    cert: Option<PathBuf>,
    /// The device's private key from the campus PKI (PEM).
    #[arg(long, requires_all = ["ca_file", "cert"])]
    key: Option<PathBuf>,
    /// A reader, ID:KIND[:PORT] (repeat for several), e.g. card:rdm6300:/dev/ttyAMA0.
    #[arg(long = "reader", value_name = "ID:KIND[:PORT]", required = true)]
    readers: Vec<String>,
    /// Where the configuration and certificates go (on the gateway).
    #[arg(long, default_value = "/etc/rollcall")]
    out: PathBuf,
    /// The gateway's state directory (the unit's StateDirectory), where the data key goes.
    #[arg(long, default_value = "/var/lib/rollcall")]
    state_dir: PathBuf,
    /// Write everything under this directory (an SD card's root file system, or a folder to
    /// copy onto one); the configuration names the paths as they will be on the gateway.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Prometheus endpoint of the gateway; "" turns it off.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_listen: String,
    /// The rollcalld binary that validates the result (default: rollcalld on PATH or in
    /// /usr/local/bin; without one, rollcalld's own configuration code checks it).
    #[arg(long)]
    rollcalld: Option<PathBuf>,
    /// Replace an existing configuration, certificate and key (the data key is always kept).
    #[arg(long)]
    force: bool,
}

/// One `--reader`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reader {
    id: String,
    kind: String,
    port: Option<String>,
    lines: Option<(u32, u32)>,
}

/// Where the gateway's TLS files come from.
#[derive(Debug)]
struct Credentials {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    source: String,
}

/// Runs `rollcall provision`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !rollcall_protocol::v1::valid_id(&args.device_id) {
        bail!(
            "device id {:?}: use 1 to 64 letters, digits, '-', '_' or '.' (as in \
             attendance_biometric_device.device_id)",
            args.device_id
        );
    }
    if let Some(room) = &args.room
        && (room.is_empty() || room.chars().count() > 64 || room.chars().any(char::is_control))
    {
        bail!(
            "--room {room:?}: give the room as attendance_session.room names it, 1 to 64 \
             characters on one line"
        );
    }
    let (host, port) = broker(&args.broker)?;
    let readers = args
        .readers
        .iter()
        .map(|s| reader(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (flag, p) in [("--out", &args.out), ("--state-dir", &args.state_dir)] {
        if !p.is_absolute() {
            bail!(
                "{flag} {}: give an absolute path as it is on the gateway (with --root for an SD card)",
                p.display()
            );
        }
    }
    let on_device = Paths::new(&args.out, &args.state_dir);
    let (real_out, real_state) = match &args.root {
        None => (args.out.clone(), args.state_dir.clone()),
        Some(root) => (under(root, &args.out), under(root, &args.state_dir)),
    };
    let config_path = real_out.join("rollcalld.toml");
    if config_path.exists() && !args.force {
        bail!(
            "{} exists: this gateway is already provisioned. Add --force to replace its \
             configuration, certificate and key (its data key {KEY_FILE} is kept)",
            config_path.display()
        );
    }
    let creds = credentials(&args)?;
    let settings = Settings {
        device_id: &args.device_id,
        site: &args.site,
        room: args.room.as_deref(),
        host: &host,
        port,
        readers: &readers,
        metrics_listen: &args.metrics_listen,
    };
    // Everything the daemon would refuse is found before a file is written: the same text, with
    // the TLS paths pointing at the files about to be copied.
    let preview = config_text(
        &settings,
        &Paths {
            ca: creds.ca.clone(),
            cert: creds.cert.clone(),
            key: creds.key.clone(),
            state_dir: args.state_dir.clone(),
            config: on_device.config.clone(),
        },
    );
    rollcall_daemon::Config::parse(&preview).map_err(|e| {
        anyhow::anyhow!("the configuration would not be valid, nothing was written:\n{e}")
    })?;

    let owner = match &args.root {
        Some(_) => Owner::Later("the files are for another system".into()),
        None => Owner::detect(),
    };
    let mut install = Install::new(owner);
    install.dir(&real_out, 0o750, files::ROOT_GROUP)?;
    install.copy(
        &creds.ca,
        &real_out.join("ca.pem"),
        0o640,
        files::ROOT_GROUP,
    )?;
    install.copy(
        &creds.cert,
        &real_out.join("device.pem"),
        0o640,
        files::ROOT_GROUP,
    )?;
    install.copy(
        &creds.key,
        &real_out.join("device.key"),
        0o640,
        files::ROOT_GROUP,
    )?;
    let text = config_text(&settings, &on_device);
    install.write(&config_path, text.as_bytes(), 0o640, files::ROOT_GROUP)?;
    install.dir(&real_state, 0o700, files::SERVICE)?;
    let key_path = real_state.join(KEY_FILE);
    let new_key = install.data_key(&key_path)?;

    println!("provisioned {} ({})", args.device_id, creds.source);
    for line in install.report(args.root.as_deref()) {
        println!("  {line}");
    }
    if !new_key {
        println!(
            "  kept the existing data key {}: it seals this gateway's roster and enrolments",
            key_path.display()
        );
    }
    let checked = validate(&args, &settings, &real_out, &config_path)?;
    println!("{checked}");
    if let Some(todo) = install.later(args.root.as_deref()) {
        println!("{todo}");
    }
    println!(
        "next: register it at the centre: rollcall device register {} --room {} \
         --ingest-config /etc/rollcall/ingest.toml\n      then on the gateway: systemctl enable --now rollcalld",
        args.device_id,
        args.room.as_deref().unwrap_or("<room>")
    );
    Ok(ExitCode::SUCCESS)
}

/// `root` + an absolute `path`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Paths as the configuration names them.
#[derive(Debug)]
struct Paths {
    config: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    state_dir: PathBuf,
}

impl Paths {
    fn new(out: &Path, state_dir: &Path) -> Self {
        Self {
            config: out.join("rollcalld.toml"),
            ca: out.join("ca.pem"),
            cert: out.join("device.pem"),
            key: out.join("device.key"),
            state_dir: state_dir.to_owned(),
        }
    }
}

/// What goes into rollcalld.toml besides paths.
#[derive(Debug)]
struct Settings<'a> {
    device_id: &'a str,
    site: &'a str,
    room: Option<&'a str>,
    host: &'a str,
    port: u16,
    readers: &'a [Reader],
    metrics_listen: &'a str,
}

/// A TOML string literal.
fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn qp(p: &Path) -> String {
    q(&p.to_string_lossy())
}

/// rollcalld.toml, in the layout of daemon/rollcalld.example.toml.
fn config_text(s: &Settings<'_>, p: &Paths) -> String {
    let mut t = format!(
        "# {config}: gateway {id}, written by `rollcall provision`.\n\
         # Check it with `rollcalld validate --config {config}` (the unit does before every start).\n",
        config = p.config.display(),
        id = s.device_id,
    );
    if let Some(room) = s.room {
        t += &format!(
            "# Room {room}: the centre knows it from `rollcall device register {} --room {room}`.\n",
            s.device_id
        );
    }
    t += &format!(
        "\n[device]\nid = {}\nsite = {}\nstate_dir = {} # journal, control socket, {KEY_FILE} (the device data key)\n\
         \n[mqtt]\nhost = {}\nport = {}\n\n[mqtt.tls]\nca_file = {}\ncert_file = {} # CN = {}\nkey_file = {}\n\
         \n[roster]\nsource = \"centre\" # the centre publishes the room's roster; kept sealed in state_dir\n\
         \n[metrics]\nlisten = {}\n",
        q(s.device_id),
        q(s.site),
        qp(&p.state_dir),
        q(s.host),
        s.port,
        qp(&p.ca),
        qp(&p.cert),
        s.device_id,
        qp(&p.key),
        q(s.metrics_listen),
    );
    for r in s.readers {
        t += &format!("\n[[reader]]\nid = {}\nkind = {}\n", q(&r.id), q(&r.kind));
        if let Some(port) = &r.port {
            t += &format!("port = {}\n", q(port));
        }
        if let Some((d0, d1)) = r.lines {
            t += &format!("d0_line = {d0}\nd1_line = {d1}\n");
        }
    }
    t += "\n[[indicator]]\nkind = \"log\"\n";
    t
}

/// `mqtts://host[:port]` as (host, port).
fn broker(url: &str) -> anyhow::Result<(String, u16)> {
    let fix = "give the broker as mqtts://HOST[:PORT], e.g. --broker mqtts://broker.campus:8883";
    let Some(rest) = url.strip_prefix("mqtts://") else {
        bail!(
            "--broker {url:?}: punches leave the gateway only over TLS with its certificate: {fix}"
        );
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, tail) = v6
            .split_once(']')
            .ok_or_else(|| anyhow::anyhow!("--broker {url:?}: unclosed '[': {fix}"))?;
        (h.to_owned(), tail.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (rest.to_owned(), None),
        }
    };
    let port = match port {
        None => 8883,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| anyhow::anyhow!("--broker {url:?}: {p:?} is not a port: {fix}"))?,
    };
    if host.is_empty() || host.contains('/') || host.contains('@') {
        bail!("--broker {url:?}: no host name: {fix}");
    }
    Ok((host, port))
}

/// `ID:KIND[:PORT]`.
fn reader(spec: &str) -> anyhow::Result<Reader> {
    let fix = "use ID:KIND[:PORT], e.g. card:rdm6300:/dev/ttyAMA0, finger:r503:/dev/ttyAMA1, \
               gate:wiegand:17,27 or door-card:simulated-card";
    let mut parts = spec.splitn(3, ':');
    let (Some(id), Some(kind)) = (parts.next(), parts.next()) else {
        bail!("--reader {spec:?}: {fix}");
    };
    let port = parts.next().filter(|p| !p.is_empty());
    if id.is_empty() || kind.is_empty() {
        bail!("--reader {spec:?}: {fix}");
    }
    let kind = kind.to_ascii_lowercase();
    // rollcalld's reader kinds (drivers' ReaderKind, with its aliases); rollcalld's own parser
    // checks the result again before anything is written.
    const KINDS: &[&str] = &[
        "rdm6300",
        "pn532",
        "ef01",
        "r503",
        "r307",
        "r305",
        "as608",
        "iso-template",
        "wiegand",
        "simulated-card",
        "simulated-fingerprint",
    ];
    if !KINDS.contains(&kind.as_str()) {
        bail!(
            "--reader {spec:?}: unknown kind {kind:?}: use one of {}",
            KINDS.join(", ")
        );
    }
    let mut r = Reader {
        id: id.to_owned(),
        kind: kind.clone(),
        port: None,
        lines: None,
    };
    match (kind.as_str(), port) {
        ("wiegand", Some(lines)) => {
            let parsed = lines
                .split_once(',')
                .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
            let Some(lines) = parsed else {
                bail!(
                    "--reader {spec:?}: a wiegand reader's PORT is its D0,D1 GPIO lines (BCM \
                     numbers), e.g. gate:wiegand:17,27"
                );
            };
            r.lines = Some(lines);
        }
        ("wiegand", None) => bail!(
            "--reader {spec:?}: give the D0,D1 GPIO lines (BCM numbers), e.g. gate:wiegand:17,27"
        ),
        ("simulated-card" | "simulated-fingerprint", Some(_)) => {
            bail!("--reader {spec:?}: a simulated reader has no port: {id}:{kind}")
        }
        ("simulated-card" | "simulated-fingerprint", None) => {}
        (_, Some(port)) => r.port = Some(port.to_owned()),
        (_, None) => bail!(
            "--reader {spec:?}: give the UART the reader is wired to, e.g. {id}:{kind}:/dev/ttyAMA0"
        ),
    }
    Ok(r)
}

/// The TLS files: from the campus PKI as given, or from the Rollcall CA (issued now if the
/// device has no valid certificate there yet).
fn credentials(args: &Args) -> anyhow::Result<Credentials> {
    if let (Some(ca), Some(cert), Some(key)) = (&args.ca_file, &args.cert, &args.key) {
        files::check_campus_pki(ca, cert, key, &args.device_id)?;
        return Ok(Credentials {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
            source: format!("certificate from the campus PKI: {}", cert.display()),
        });
    }
    let Some(dir) = &args.ca_dir else {
        bail!(
            "give --ca-dir DIR (a CA made by `rollcall ca init`), or --ca-file, --cert and --key from the campus PKI"
        );
    };
    let mut ca = CaDir::open(dir)?;
    let (cert, key) = ca.issued(&args.device_id);
    let now = chrono::Utc::now();
    let usable = ca
        .current(&args.device_id)
        .is_some_and(|e| e.kind == Kind::Device && e.not_after > now && e.renewed_by.is_none())
        && cert.exists()
        && key.exists();
    let source = if usable {
        format!(
            "certificate {} from the CA in {}",
            cert.display(),
            dir.display()
        )
    } else {
        crate::ca::issue(&mut ca, &args.device_id, Kind::Device, &[], 730, None)?;
        format!(
            "certificate issued now by the CA in {} (no valid one in issued/)",
            dir.display()
        )
    };
    Ok(Credentials {
        ca: dir.join(crate::ca::store::CA_CERT),
        cert,
        key,
        source,
    })
}

/// Runs `rollcalld validate` on the written configuration when a rollcalld is at hand, else
/// checks it with rollcalld's own configuration code; says which.
fn validate(
    args: &Args,
    settings: &Settings<'_>,
    real_out: &Path,
    config_path: &Path,
) -> anyhow::Result<String> {
    // Under --root the configuration names paths of the gateway; check a copy naming the files
    // where they are now.
    let (path, temporary) = match &args.root {
        None => (config_path.to_owned(), false),
        Some(root) => {
            let mut p = Paths::new(&args.out, &args.state_dir);
            for f in [&mut p.ca, &mut p.cert, &mut p.key, &mut p.state_dir] {
                *f = under(root, f);
            }
            let copy = real_out.join(".rollcalld.validate.toml");
            crate::ca::store::write_file(&copy, config_text(settings, &p).as_bytes(), 0o600)?;
            (copy, true)
        }
    };
    let result = check(args.rollcalld.clone().or_else(rollcalld_on_path), &path);
    if temporary {
        let _ = std::fs::remove_file(&path);
    }
    result
}

fn check(bin: Option<PathBuf>, path: &Path) -> anyhow::Result<String> {
    match bin {
        Some(bin) => {
            let out = std::process::Command::new(&bin)
                .arg("validate")
                .arg("--config")
                .arg(path)
                .output()
                .with_context(|| {
                    format!(
                        "running {} validate: give the rollcalld binary with --rollcalld",
                        bin.display()
                    )
                })?;
            if !out.status.success() {
                bail!(
                    "{} validate refused the configuration written to {}:\n{}{}",
                    bin.display(),
                    path.display(),
                    String::from_utf8_lossy(&out.stderr),
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            Ok(format!(
                "validated: {} validate --config: valid",
                bin.display()
            ))
        }
        None => {
            rollcall_daemon::Config::load(path)
                .map_err(|e| anyhow::anyhow!("the configuration written is not valid:\n{e}"))?;
            Ok(
                "validated with rollcalld's own configuration code (no rollcalld on PATH or in \
                /usr/local/bin; give --rollcalld to run the binary itself)"
                    .into(),
            )
        }
    }
}

fn rollcalld_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/local/bin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("rollcalld"))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_give_host_and_port() {
        assert_eq!(
            broker("mqtts://b.campus:8884").unwrap(),
            ("b.campus".into(), 8884)
        );
        assert_eq!(
            broker("mqtts://b.campus").unwrap(),
            ("b.campus".into(), 8883)
        );
        assert_eq!(broker("mqtts://[::1]:8883").unwrap(), ("::1".into(), 8883));
        for bad in [
            "mqtt://b:1883",
            "b.campus:8883",
            "mqtts://",
            "mqtts://b:x",
            "mqtts://b:0",
        ] {
            let e = broker(bad).unwrap_err().to_string();
            assert!(e.contains("mqtts://HOST"), "{bad}: {e}");
        }
    }

    #[test]
    fn reader_specs_become_reader_tables() {
        assert_eq!(
            reader("card:rdm6300:/dev/ttyAMA0").unwrap(),
            Reader {
                id: "card".into(),
                kind: "rdm6300".into(),
                port: Some("/dev/ttyAMA0".into()),
                lines: None
            }
        );
        assert_eq!(reader("gate:wiegand:17,27").unwrap().lines, Some((17, 27)));
        assert_eq!(reader("door:simulated-card").unwrap().port, None);
        for (bad, want) in [
            ("card", "ID:KIND"),
            ("card:rdm6300", "/dev/ttyAMA0"),
            ("gate:wiegand", "D0,D1"),
            ("gate:wiegand:17", "D0,D1"),
            ("door:simulated-card:/dev/x", "no port"),
        ] {
            let e = reader(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn the_written_config_is_what_rollcalld_accepts() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["ca.pem", "device.pem", "device.key"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let readers = [
            reader("card:rdm6300:/dev/ttyAMA0").unwrap(),
            reader("finger:r503:/dev/ttyAMA1").unwrap(),
            reader("gate:wiegand:17,27").unwrap(),
        ];
        let s = Settings {
            device_id: "room-101",
            site: "north",
            room: Some("R101"),
            host: "broker.campus",
            port: 8883,
            readers: &readers,
            metrics_listen: "",
        };
        let text = config_text(&s, &Paths::new(dir.path(), Path::new("/var/lib/rollcall")));
        let c = rollcall_daemon::Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(c.device.id, "room-101");
        assert_eq!(c.readers.len(), 3);
        assert_eq!(
            c.roster.source,
            rollcall_daemon::config::RosterSource::Centre
        );
        assert!(text.contains("Room R101"), "{text}");
    }
}
