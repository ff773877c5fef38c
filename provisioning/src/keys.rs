//! `rollcall keys`: rotating the device data key.
//!
//! Not built yet (issue 10): the running rollcalld holds the key in memory (the credentials
//! store, the outbox, the template store each load it at start), so a rotation that does not stop
//! capture needs a control command in the daemon that re-seals every protected file under a new
//! key and swaps the key in each holder, with a start-up step that finishes or undoes an
//! interrupted rotation. Until then this command refuses and changes nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::status::DEFAULT_CONFIG;

/// `rollcall keys`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Rotate the device data key (not available yet: refuses and changes nothing).
    Rotate {
        /// rollcalld's configuration.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

/// Runs `rollcall keys`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Sub::Rotate { config } = args.command;
    anyhow::bail!(
        "rollcall keys rotate is not available yet: rollcalld has no key rotation command, so the \
         device data key (template.key in the state directory {} names) is unchanged. To stop \
         trusting a key today, run rollcall reset --factory --export DIR and provision the \
         gateway again",
        config.display()
    )
}
