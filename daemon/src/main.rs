//! rollcalld: see the README and `rollcalld --help`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use rollcall_daemon::{Config, RunOptions, control};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    version,
    about = "Rollcall edge daemon: readers -> durable journal -> MQTT"
)]
struct Cli {
    /// Log format: text for people, json for journald and log shippers.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Configuration file (e.g. /etc/rollcall/rollcalld.toml).
        #[arg(long, short, required_unless_present = "simulate")]
        config: Option<PathBuf>,
        /// Without --config: run with simulated readers, a demo roster and a broker on
        /// 127.0.0.1, keeping state in --state-dir. With --config: every configured reader
        /// and indicator talks to its byte-level simulator instead of hardware.
        #[arg(long)]
        simulate: bool,
        /// State directory for --simulate without --config.
        #[arg(long, default_value = "/tmp/rollcall-demo")]
        state_dir: PathBuf,
        /// Broker port on 127.0.0.1 for --simulate without --config.
        #[arg(long, default_value_t = 1883)]
        broker_port: u16,
        /// Present a random credential to each simulated reader this often (e.g. 500ms).
        #[arg(long, value_parser = parse_demo_every)]
        demo_every: Option<Duration>,
        /// Notify systemd (READY, WATCHDOG); set by the unit file.
        #[arg(long)]
        systemd: bool,
    },
    /// Check a configuration file and exit (0 = valid).
    Validate {
        /// Configuration file (e.g. /etc/rollcall/rollcalld.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Present a card or finger to a simulated reader of a running rollcalld.
    Tap {
        /// The control socket (default: <state_dir>/control.sock of --simulate).
        #[arg(long, default_value = "/tmp/rollcall-demo/control.sock")]
        socket: PathBuf,
        /// `card <reader> <hex uid>`, `finger <reader> <slot|none|file.iso>` or `status`.
        #[arg(required = true, num_args = 1..)]
        words: Vec<String>,
    },
    /// Enrol a student at a reader of a running rollcalld (guides the person, prints the
    /// centre's verdict). Run as the user rollcalld runs as.
    Enrol {
        /// The control socket (`<state_dir>/control.sock`).
        #[arg(long, default_value = "/var/lib/rollcall/control.sock")]
        socket: PathBuf,
        /// The reader's id in the config.
        reader: String,
        /// The student's CampsHub360 id or roll number.
        student: String,
    },
    /// Work on the roster file.
    Roster {
        #[command(subcommand)]
        command: RosterCommand,
    },
}

#[derive(Subcommand)]
enum RosterCommand {
    /// Seal an enrolment template (ISO/IEC 19794-2 or ANSI 378) for a student under this
    /// device's data key and add it to the roster (run as the user rollcalld runs as).
    AddTemplate {
        /// Configuration file (names the roster and the state directory with the key).
        #[arg(long, short)]
        config: PathBuf,
        /// Student id.
        #[arg(long)]
        student: String,
        /// The template record.
        #[arg(long)]
        file: PathBuf,
    },
}

/// The configuration and, when it names one that exists, the roster file: everything `run`
/// would refuse at start (the unit runs this before every start).
fn validate(path: &std::path::Path) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    if let Some(roster) = config.roster.path.as_deref().filter(|p| p.exists()) {
        let r = rollcall_daemon::roster::Roster::load(roster).map_err(|e| e.to_string())?;
        // Templates are opened only when the key exists: validate never creates it. During a
        // key rotation a crash interrupted (template.key.next is there), some are under the new
        // key: rollcalld finishes the rotation at start, before it opens them.
        let state = &config.device.state_dir;
        let key = state.join(rollcall_daemon::templates::KEY_FILE);
        let rotating = state.join(rollcall_daemon::keys::NEXT_FILE).exists();
        if !r.template_files().is_empty() && key.exists() && !rotating {
            let key = rollcall_daemon::templates::DataKey::load_or_create(&key)
                .map_err(|e| e.to_string())?;
            rollcall_daemon::roster::Roster::load_with_templates(
                roster,
                &key,
                config.capture.match_threshold,
            )
            .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    rollcall_daemon::panic::install();
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.command {
        Command::Validate { config } => match validate(&config) {
            Ok(()) => {
                println!("{}: valid", config.display());
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
        Command::Roster {
            command:
                RosterCommand::AddTemplate {
                    config,
                    student,
                    file,
                },
        } => {
            let cfg = Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let roster =
                cfg.roster.path.as_deref().ok_or_else(|| {
                    anyhow::anyhow!("{}: set roster.path first", config.display())
                })?;
            let sealed = rollcall_daemon::templates::add_template(&cfg, roster, &student, &file)?;
            println!(
                "{student}: {} sealed as {} and added to {}",
                file.display(),
                sealed.display(),
                roster.display()
            );
            Ok(())
        }
        Command::Enrol {
            socket,
            reader,
            student,
        } => {
            let last = runtime.block_on(control::stream(
                &socket,
                &format!("enrol {reader} {student}"),
                |line| println!("{line}"),
            ))?;
            if last.starts_with("error") || last.starts_with("result: refused") {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Tap { socket, mut words } => {
            // A template file is read by rollcalld, from its own working directory.
            if let [first, _, file] = words.as_mut_slice()
                && first == "finger"
                && file.contains(['/', '.'])
                && let Ok(absolute) = std::path::absolute(&*file)
            {
                *file = absolute.display().to_string();
            }
            let reply = runtime.block_on(control::send(&socket, &words.join(" ")))?;
            println!("{reply}");
            if reply.starts_with("error") {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Run {
            config,
            simulate,
            state_dir,
            broker_port,
            demo_every,
            systemd,
        } => {
            let config = match config {
                Some(path) => {
                    let mut config = Config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
                    if simulate {
                        // The installation's real config, with each device's simulator in place
                        // of the hardware: drivers and codecs run as on the Pi.
                        config.readers.iter_mut().for_each(|r| r.simulate = true);
                        config.indicators.iter_mut().for_each(|i| i.simulate = true);
                    }
                    config
                }
                None => {
                    debug_assert!(simulate);
                    Config::simulated(state_dir, broker_port)
                }
            };
            let options = RunOptions {
                demo_every,
                systemd,
            };
            runtime.block_on(async move {
                let shutdown = CancellationToken::new();
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    stop.cancel();
                });
                rollcall_daemon::run(config, options, shutdown).await
            })
        }
    }
    .context("rollcalld")
}

/// `--demo-every`: a period a timer can run (1 ms to 1 day).
fn parse_demo_every(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(1) || d > Duration::from_secs(24 * 3600) {
        return Err(format!(
            "{text:?} is out of range: use 1ms to 1day (e.g. 500ms)"
        ));
    }
    Ok(d)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROLLCALL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttc=warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
