//! `rollcall`: the IT command line for Rollcall gateways (issue 10). Each subcommand's help shows
//! an example; `rollcall --help` lists them.

mod ca;
mod device;
mod doctor;
mod enrol;
mod journal;
mod keys;
mod provision;
mod reset;
mod status;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples (a new gateway, from a laptop or the central server, then on the Pi):
  rollcall ca init --dir /etc/rollcall/ca --campus 'North Campus'
  rollcall ca issue room-101 --dir /etc/rollcall/ca
  rollcall provision room-101 --site north --room R101 --broker mqtts://broker.campus:8883 \\
      --ca-dir /etc/rollcall/ca --reader card:rdm6300:/dev/ttyAMA0 --root ./sd-card
  rollcall device register room-101 --room R101 --ingest-config /etc/rollcall/ingest.toml
  # on the Pi
  rollcall doctor
  rollcall status
  rollcall enrol door-finger 2024CS001
  rollcall keys rotate                    # after a suspected leak of an SD card image, or yearly
  # after a failure, or when the gateway leaves service
  rollcall journal salvage /var/lib/rollcall/journal.redb.corrupt --publish
  rollcall reset --factory --export /root/room-101-punches";

/// The IT command line for Rollcall gateways.
#[derive(Debug, Parser)]
#[command(version, about, after_help = EXAMPLES, after_long_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Certificates for campuses without a PKI: CA, device and ingest certificates, CRL.
    Ca(ca::Args),
    /// Write the whole installation of one gateway (config, keys, certificates), then check it.
    Provision(provision::Args),
    /// Register a gateway at the centre, enable or disable it.
    Device(device::Args),
    /// The local gateway's state: journal, link, readers, clock, roster (exit 0 healthy).
    Status(status::Args),
    /// Every check that tells why a gateway is not working, each failure with its fix.
    Doctor(doctor::Args),
    /// Enrol a student's finger or card at a reader of this gateway, step by step.
    Enrol(enrol::Args),
    /// Recover the unacknowledged punches of a journal rollcalld refused as damaged.
    Journal(journal::Args),
    /// Rotate the device data key without stopping capture (or --offline with rollcalld stopped).
    Keys(keys::Args),
    /// Factory reset: destroy the keys so no stored template or roster can be read again.
    Reset(reset::Args),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ca(a) => ca::run(a).await,
        Command::Provision(a) => provision::run(a).await,
        Command::Device(a) => device::run(a).await,
        Command::Status(a) => status::run(a).await,
        Command::Doctor(a) => doctor::run(a).await,
        Command::Enrol(a) => enrol::run(a).await,
        Command::Journal(a) => journal::run(a).await,
        Command::Keys(a) => keys::run(a).await,
        Command::Reset(a) => reset::run(a).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
