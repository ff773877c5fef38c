//! `rollcall keys rotate`: a new device data key, every file it protects re-sealed under it.
//!
//! With rollcalld running, the rotation is its control command `rotate-key` (the daemon owns the
//! key in memory; capture goes on throughout). With rollcalld stopped, `--offline` runs the same
//! library code (`rollcall_daemon::keys`) on the state directory. Crash safety is described
//! there: an interrupted rotation is finished by the next start of rollcalld or the next
//! `rollcall keys rotate --offline`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use rollcall_daemon::keys::{Keyring, Protected};

use crate::status::{DEFAULT_CONFIG, load_config};

const EXAMPLES: &str = "\
Examples:
  rollcall keys rotate                 # through the running rollcalld; capture goes on
  rollcall keys rotate --offline       # rollcalld stopped (systemctl stop rollcalld)
  rollcall keys rotate --offline -c /mnt/sd/etc/rollcall/rollcalld.toml \\
      --state-dir /mnt/sd/var/lib/rollcall   # an SD card's tree, mounted elsewhere

Rotates the device data key (template.key in the state directory): the sealed roster, the
enrolment outbox and the roster file's sealed templates are re-sealed under a new key, and the
old key is destroyed, so a copy of the state directory taken before (an SD card image, a backup)
cannot be read with the key it held. Use it after a suspected leak of such a copy, or on a
schedule. card-hash.key (the hash of unknown cards) is not rotated: the centre knows an unknown
card by its hash. Run as root or as the user rollcalld runs as.";

/// `rollcall keys`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES, after_long_help = EXAMPLES)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Rotate the device data key, re-sealing the roster, the outbox and the templates.
    #[command(after_help = EXAMPLES, after_long_help = EXAMPLES)]
    Rotate(RotateArgs),
}

#[derive(Debug, clap::Args)]
struct RotateArgs {
    /// rollcalld's configuration (state directory, device id, roster file, control socket).
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// rollcalld's control socket (default: the configuration's).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Rotate with rollcalld stopped, on the files themselves (refused while it answers).
    #[arg(long)]
    offline: bool,
    /// With --offline: the state directory, when not the configuration's (an SD card mounted
    /// elsewhere); a roster file inside the configured state directory is looked for inside
    /// this one.
    #[arg(long, requires = "offline")]
    state_dir: Option<PathBuf>,
}

/// Runs `rollcall keys`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Sub::Rotate(args) = args.command;
    if args.offline {
        offline(args).await
    } else {
        online(args).await
    }
}

async fn online(args: RotateArgs) -> anyhow::Result<ExitCode> {
    let socket = match args.socket {
        Some(s) => s,
        None => load_config(&args.config)?.control_socket(),
    };
    let reply = rollcall_daemon::control::send(&socket, "rotate-key")
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "rollcalld does not answer on {} ({e:#}): the key is unchanged. Start it \
                 (systemctl start rollcalld) and run this again, or rotate with it stopped: \
                 rollcall keys rotate --offline (run as root or the rollcall user)",
                socket.display()
            )
        })?;
    report(&reply)
}

async fn offline(args: RotateArgs) -> anyhow::Result<ExitCode> {
    let mut config = load_config(&args.config)?;
    let socket = args.socket.unwrap_or_else(|| config.control_socket());
    if rollcall_daemon::control::send(&socket, "status")
        .await
        .is_ok()
    {
        anyhow::bail!(
            "rollcalld is running (it answers on {}): the key is unchanged. Rotate through it \
             (rollcall keys rotate, without --offline), or stop it first (systemctl stop \
             rollcalld)",
            socket.display()
        );
    }
    if let Some(dir) = args.state_dir {
        if let Some(roster) = config.roster.path.as_mut()
            && let Ok(inside) = roster.strip_prefix(&config.device.state_dir)
        {
            *roster = dir.join(inside);
        }
        config.device.state_dir = dir;
    }
    let protected = Protected::from_config(&config);
    let state = protected.state_dir.clone();
    anyhow::ensure!(
        state.join(rollcall_daemon::templates::KEY_FILE).exists(),
        "{}: no device data key there (template.key): nothing to rotate. Check -c and \
         --state-dir",
        state.display()
    );
    let done = tokio::task::spawn_blocking(move || {
        let keyring = Keyring::open(&protected)?;
        keyring.rotate(&protected)
    })
    .await
    .context("rotation task")?
    .with_context(|| {
        format!(
            "rotating the key in {} (files stay readable; the next rollcall keys rotate \
             --offline or start of rollcalld finishes an interrupted rotation)",
            state.display()
        )
    })?;
    for f in &done.unreadable {
        eprintln!(
            "warning: {}: opens with neither key (damaged, or from another device): left as it is",
            f.display()
        );
    }
    report(&done.to_line())
}

/// Prints the daemon's (or the library's) `rotated ...` line for a person.
fn report(reply: &str) -> anyhow::Result<ExitCode> {
    let Some(fields) = reply.strip_prefix("rotated ") else {
        anyhow::bail!(
            "{}",
            reply
                .strip_prefix("error: ")
                .unwrap_or(if reply.is_empty() {
                    "rollcalld closed the connection without answering: see its log \
                 (journalctl -u rollcalld)"
                } else {
                    reply
                })
        );
    };
    let get = |key: &str| {
        fields
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or("?")
            .to_owned()
    };
    println!("device data key rotated: new key {}", get("fingerprint="));
    println!(
        "re-sealed: {} templates, {} roster, {} enrolments in the outbox",
        get("templates="),
        get("roster="),
        get("outbox=")
    );
    let unreadable = get("unreadable=");
    if unreadable != "0" {
        println!(
            "{unreadable} files opened with neither key and were left as they were (see the \
             warnings, or rollcalld's log)"
        );
        return Ok(ExitCode::from(1));
    }
    println!("the old key is destroyed: files sealed under it no longer open");
    Ok(ExitCode::SUCCESS)
}
