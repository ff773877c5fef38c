//! `rollcall doctor`: every check that tells why a gateway is not working, each failure with
//! its fix. One line per check: `ok`, `warn` or `FAIL`, what was found, and the fix.
//!
//! The checks read rollcalld's configuration, ask the daemon (its control socket), and look at
//! the machine: device files, the kernel command line, the network, the certificate, the clock,
//! the disk. Each is a function over what it looks at (`checks`, `net`), so tests point it at a
//! fault; the hidden options below do the same for the whole command.

mod checks;
mod net;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use rollcall_daemon::Config;

use crate::status::DEFAULT_CONFIG;

const EXAMPLES: &str = "\
Examples:
  rollcall doctor
  rollcall doctor -c /etc/rollcall/rollcalld.toml
  rollcall doctor | grep -v '^ok'          only what needs a look

Checks: the config; the daemon answering; serial ports present and read/write for the service
user; the serial console off the readers' UART; GPIO chips and lines (Wiegand); the broker
reachable; TLS with the device certificate and an MQTT session; the certificate's dates (warns
within 30 days of expiry); the clock; disk space and a write in the state directory; the
journal; the roster.
Exit status: 0 nothing failed (warnings allowed); 1 at least one check failed.";

/// `rollcall doctor`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// rollcalld's configuration.
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// The user rollcalld runs as (the unit's User=).
    #[arg(long, default_value = "rollcall", hide = true)]
    pub service_user: String,
    /// The kernel command line to check for a serial console (tests give their own).
    #[arg(long, default_value = "/proc/cmdline", hide = true)]
    pub cmdline: PathBuf,
    /// The account files the service user is looked up in (tests give their own).
    #[arg(long, default_value = "/etc/passwd", hide = true)]
    pub passwd: PathBuf,
    #[arg(long, default_value = "/etc/group", hide = true)]
    pub group: PathBuf,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Ok,
    Warn,
    Fail,
}

/// One check's result: what was found and, unless ok, what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub level: Level,
    pub what: String,
    pub fix: Option<String>,
}

impl Finding {
    pub(crate) fn ok(what: String) -> Self {
        Self {
            level: Level::Ok,
            what,
            fix: None,
        }
    }
    pub(crate) fn warn(what: String, fix: String) -> Self {
        Self {
            level: Level::Warn,
            what,
            fix: Some(fix),
        }
    }
    pub(crate) fn fail(what: String, fix: String) -> Self {
        Self {
            level: Level::Fail,
            what,
            fix: Some(fix),
        }
    }

    /// `ok    what`, `warn  what -> fix: ...`, `FAIL  what -> fix: ...`
    fn line(&self) -> String {
        let tag = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        match &self.fix {
            Some(fix) => format!("{tag}  {} -> fix: {fix}", self.what),
            None => format!("{tag}  {}", self.what),
        }
    }
}

/// Runs `rollcall doctor`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for finding in diagnose(&args).await {
        println!("{}", finding.line());
        failed |= finding.level == Level::Fail;
    }
    Ok(ExitCode::from(u8::from(failed)))
}

/// Every check, in the order a person would look.
async fn diagnose(args: &Args) -> Vec<Finding> {
    let mut out = Vec::new();
    let label = args.config.display();
    let config = match Config::load(&args.config) {
        Ok(c) => {
            out.push(Finding::ok(format!("config {label}: valid")));
            c
        }
        Err(errors) => {
            for e in &errors.0 {
                out.push(Finding::fail(
                    format!("config: {e}"),
                    format!("edit {label}, then `rollcalld validate --config {label}`"),
                ));
            }
            // Whatever parses is still checked: a missing certificate file should not hide a
            // dead broker.
            let text = std::fs::read_to_string(&args.config).unwrap_or_default();
            match toml::from_str::<Config>(&text) {
                Ok(c) => c,
                Err(_) => return out,
            }
        }
    };

    let socket = config.control_socket();
    let report = match crate::status::query(&socket).await {
        Ok(r) => {
            out.push(Finding::ok(format!(
                "rollcalld: running, answers on {}",
                socket.display()
            )));
            Some(r)
        }
        Err(e) => {
            out.push(Finding::fail(
                "rollcalld: not answering".into(),
                format!("{e:#}"),
            ));
            None
        }
    };

    if checks::needs_devices(&config) {
        let user = checks::ServiceUser::lookup(&args.service_user, &args.passwd, &args.group);
        out.push(checks::service_user(&user));
        out.extend(checks::serial_ports(&config, &user));
        out.extend(checks::gpio(&config, &user));
    }
    out.push(checks::uart_console(&config, &args.cmdline));

    let m = &config.mqtt;
    let (reachable, tcp) = net::broker(&m.host, m.port).await;
    out.push(reachable);
    match (&m.tls, tcp) {
        (Some(tls), Some(tcp)) => out.push(net::tls(&m.host, tcp, tls, &config.device.id).await),
        (Some(_), None) => out.push(Finding::warn(
            "TLS handshake: not tried, the broker is unreachable".into(),
            "fix the broker's reachability first".into(),
        )),
        (None, _) => out.push(Finding::ok(format!(
            "TLS: off (plain MQTT to {}, allowed on this machine only)",
            m.host
        ))),
    }
    let now = SystemTime::now();
    if let Some(tls) = &m.tls {
        out.push(net::certificate("device certificate", &tls.cert_file, now));
        out.push(net::certificate("CA certificate", &tls.ca_file, now));
    }
    let (_, clock) = rollcall_daemon::clock::now();
    out.push(checks::clock(clock.ntp_synced, clock.offset_ms));
    let state = &config.device.state_dir;
    out.push(checks::disk(state, crate::status::free_bytes(state)));
    out.push(checks::journal(&config, report.as_ref()).await);
    out.push(checks::roster(&config, report.as_ref(), now));
    out
}
