//! `rollcall ca`: Certificates for campuses without a PKI: a CA, device and ingest certificates, renewal, revocation and the CRL Mosquitto reads.

use std::process::ExitCode;

/// `rollcall ca`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `rollcall ca`.
pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("rollcall ca: not built yet")
}
