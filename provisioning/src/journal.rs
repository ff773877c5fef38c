//! `rollcall journal salvage`: the unacknowledged punches of a journal rollcalld refused.
//!
//! rollcalld never replaces a journal it cannot trust: it stops and says to move the file aside
//! (`journal.redb.corrupt`) and start again with a new journal, which has a new epoch. The punches
//! the old file still holds keep their identity (device, old epoch, seq) here, so the centre,
//! which counts each (device, epoch, seq) once, neither loses nor doubles them:
//!
//! * the file is read by [`rollcall_daemon::journal::salvage`] (redb's read-only view of a copy,
//!   redb's repair of a copy, or a scan of the raw bytes), never written;
//! * `--out DIR` writes the batches as CBOR `PunchBatch` files, `<device>-<epoch>-<first>-<last>.cbor`
//!   (exactly what rollcalld would have published), and `<device>-<epoch>-summary.txt`;
//! * `--publish` publishes them on the device's punches topic with the device's certificate, as
//!   rollcalld's uplink does, and waits for the centre's ack covering them, sending again after
//!   each ack timeout and reconnect. Publishing twice is harmless: the centre dedupes.
//!
//! The running rollcalld is not involved: it serves its own journal's epoch and would ignore
//! acks for the old one, so handing it the old punches would mean rewriting their identity.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use rollcall_daemon::Config;
use rollcall_daemon::journal::salvage::{self, Salvage};
use rollcall_protocol::topic::{self, Kind};
use rollcall_protocol::v1::{
    Ack, MAX_BATCH_PUNCHES, MAX_MESSAGE_BYTES, Punch, PunchBatch, Subject,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

use crate::status::{DEFAULT_CONFIG, load_config};

const EXAMPLES: &str = "\
Examples:
  # rollcalld refused its journal; it was moved aside as the error said
  rollcall journal salvage /var/lib/rollcall/journal.redb.corrupt --out /root/salvaged
  rollcall journal salvage /var/lib/rollcall/journal.redb.corrupt --publish
  # on another machine, without the gateway's config
  rollcall journal salvage room-101.redb --device room-101 --out ./room-101

--publish sends the punches as this gateway (its certificate from the config) with the old
journal's epoch and seqs, and waits for the centre's ack; running it again counts nothing twice.
The running rollcalld is not asked to send them: its journal has a new epoch, and the centre
counts punches by (device, epoch, seq), so only the old epoch keeps their identity.

Exit status: 0 every unacknowledged punch recovered (and, with --publish, acknowledged);
1 some seqs could not be recovered or were not acknowledged in time (listed); 2 nothing to do.";

/// `rollcall journal`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Recover the unacknowledged punches of a damaged journal file: write them out or publish
    /// them to the centre, keeping their (device, epoch, seq).
    #[command(after_help = EXAMPLES)]
    Salvage(SalvageArgs),
}

#[derive(Debug, clap::Args)]
struct SalvageArgs {
    /// The journal file rollcalld refused (it is only read).
    file: PathBuf,
    /// Write the batches (CBOR PunchBatch files) and a summary into this directory.
    #[arg(long, required_unless_present = "publish")]
    out: Option<PathBuf>,
    /// Publish the punches to the centre as this gateway and wait for its ack.
    #[arg(long)]
    publish: bool,
    /// rollcalld's configuration (device id, broker and TLS settings).
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// The device the journal belongs to, with --out when the config is not at hand.
    #[arg(long, conflicts_with = "publish")]
    device: Option<String>,
    /// The journal's epoch, if its metadata did not survive (the centre's ledger lists the
    /// device's epochs).
    #[arg(long)]
    epoch: Option<u64>,
    /// How long --publish waits for the centre's ack, in seconds.
    #[arg(long, default_value_t = 120)]
    wait: u64,
}

/// Runs `rollcall journal`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Sub::Salvage(args) = args.command;
    let (config, device) = match &args.device {
        Some(d) => (None, d.clone()),
        None => {
            let c = load_config(&args.config)
                .context("the gateway's config names the device (or give --device with --out)")?;
            let d = c.device.id.clone();
            (Some(c), d)
        }
    };
    if let Some(c) = &config {
        refuse_live_journal(c, &args.file).await?;
    }
    let salvaged = recover(&args.file, args.epoch)?;
    let Some(epoch) = salvaged.epoch else {
        anyhow::bail!(
            "{}: no copy of the journal's metadata survived, so its epoch is unknown ({} punches \
             found). Give it with --epoch (the centre's ledger lists the device's epochs)",
            args.file.display(),
            salvaged.punches.len()
        );
    };
    let batch_max = config
        .as_ref()
        .map_or(MAX_BATCH_PUNCHES as u64, |c| c.mqtt.batch_max);
    let batches = batches(&device, epoch, &salvaged.punches, batch_max);
    print!("{}", describe(&args.file, &device, &salvaged));
    if batches.is_empty() {
        println!("nothing to recover: every punch in this journal was acknowledged");
        return Ok(ExitCode::from(2));
    }
    let mut complete = salvaged.missing().is_empty();
    if let Some(dir) = &args.out {
        let files = write_out(dir, &args.file, &device, &salvaged, &batches)?;
        for f in &files {
            println!("wrote {}", f.display());
        }
    }
    if args.publish {
        let config = config.context("--publish needs the gateway's config")?;
        let acked = publish(
            &config,
            epoch,
            salvaged.acked,
            &batches,
            Duration::from_secs(args.wait),
        )
        .await?;
        let last = salvaged.punches.keys().next_back().copied().unwrap_or(0);
        if acked >= last {
            println!(
                "published: the centre acknowledged every punch up to seq {acked} of epoch {epoch}"
            );
        } else {
            complete = false;
            println!(
                "published, but the centre acknowledged only up to seq {acked} of epoch {epoch} \
                 (last recovered {last}) within {}s{}",
                args.wait,
                if salvaged.missing().is_empty() {
                    ": run the same command again later (nothing is counted twice)"
                } else {
                    ": its ack cannot pass the seqs that could not be recovered; punches after \
                     them are recorded all the same (see the centre's ledger)"
                }
            );
        }
    }
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A running rollcalld holds its journal open and keeps writing it: reading it underneath would
/// give a torn copy. Salvage is for files rollcalld refused, or for the journal after it stopped.
async fn refuse_live_journal(config: &Config, file: &Path) -> anyhow::Result<()> {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(file, &config.journal_path())
        && tokio::net::UnixStream::connect(config.control_socket())
            .await
            .is_ok()
    {
        anyhow::bail!(
            "{} is the journal of the rollcalld running now: it sends its punches itself. \
             Salvage is for a file rollcalld refused (moved aside), or stop rollcalld first \
             (systemctl stop rollcalld)",
            file.display()
        );
    }
    Ok(())
}

/// Reads `file` with a scratch copy in a temporary directory; `epoch` overrides a lost one.
pub(crate) fn recover(file: &Path, epoch: Option<u64>) -> anyhow::Result<Salvage> {
    let scratch = tempfile::tempdir().context("a scratch directory for the copy")?;
    let mut s = salvage::salvage(file, scratch.path())?;
    if let Some(e) = epoch {
        if let Some(found) = s.epoch.filter(|&f| f != e) {
            anyhow::bail!(
                "{}: its metadata says epoch {found}, not {e}: leave out --epoch",
                file.display()
            );
        }
        s.epoch = Some(e);
    }
    Ok(s)
}

/// The punches as batches of at most `max`, each a run of consecutive seqs.
pub(crate) fn batches(
    device: &str,
    epoch: u64,
    punches: &BTreeMap<u64, Punch>,
    max: u64,
) -> Vec<PunchBatch> {
    let max = (max as usize).clamp(1, MAX_BATCH_PUNCHES);
    let mut out: Vec<PunchBatch> = Vec::new();
    for (&seq, p) in punches {
        let extend = out.last().is_some_and(|b| {
            b.punches.len() < max && b.last_seq().is_some_and(|last| last + 1 == seq)
        });
        if !extend {
            out.push(PunchBatch {
                device_id: device.to_owned(),
                epoch,
                punches: Vec::new(),
            });
        }
        if let Some(b) = out.last_mut() {
            b.punches.push(p.clone());
        }
    }
    out
}

/// Writes each batch as `<device>-<epoch>-<first>-<last>.cbor` and a summary, into `dir`
/// (created 0700: punches name students), each file written whole then renamed.
pub(crate) fn write_out(
    dir: &Path,
    source: &Path,
    device: &str,
    salvaged: &Salvage,
    batches: &[PunchBatch],
) -> anyhow::Result<Vec<PathBuf>> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut files = Vec::new();
    for b in batches {
        let (first, last) = (b.punches[0].seq, b.last_seq().unwrap_or(0));
        let path = dir.join(format!("{device}-{}-{first}-{last}.cbor", b.epoch));
        write_private(&path, &b.encode())?;
        files.push(path);
    }
    let epoch = batches.first().map_or(0, |b| b.epoch);
    let mut text = describe(source, device, salvaged);
    text.push_str("\nseq\tcaptured at (UTC)\treader\tcredential\tsubject\n");
    for (seq, p) in &salvaged.punches {
        let _ = writeln!(
            text,
            "{seq}\t{}\t{}\t{:?}\t{}",
            captured(p.captured_at_ms),
            p.reader_id,
            p.credential,
            subject(&p.subject)
        );
    }
    let summary = dir.join(format!("{device}-{epoch}-summary.txt"));
    write_private(&summary, text.as_bytes())?;
    files.push(summary);
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(files)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("writing {}", path.display()))
}

/// What was found, for the terminal and the summary file.
fn describe(source: &Path, device: &str, s: &Salvage) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "journal file:   {}", source.display());
    for n in &s.notes {
        let _ = writeln!(t, "  {n}");
    }
    let _ = writeln!(t, "device:         {device}");
    let _ = writeln!(
        t,
        "epoch:          {}",
        s.epoch.map_or("unknown".into(), |e| e.to_string())
    );
    let _ = writeln!(t, "acknowledged:   up to seq {}", s.acked);
    if let Some(n) = s.next_seq {
        let _ = writeln!(t, "last seq:       {}", n - 1);
    }
    let _ = writeln!(
        t,
        "recovered:      {} unacknowledged punches{}",
        s.punches.len(),
        match (s.punches.keys().next(), s.punches.keys().next_back()) {
            (Some(a), Some(b)) => format!(" (seq {a}..={b})"),
            _ => String::new(),
        }
    );
    let missing = s.missing();
    if missing.is_empty() {
        let _ = writeln!(t, "missing:        none");
    } else {
        let ranges: Vec<String> = missing
            .iter()
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}..={b}")
                }
            })
            .collect();
        let _ = writeln!(
            t,
            "missing:        seq {} (not recoverable from this file)",
            ranges.join(", ")
        );
    }
    t
}

fn captured(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
    )
}

fn subject(s: &Subject) -> String {
    match s {
        Subject::Student(id) => format!("student {id}"),
        Subject::UnknownCard(h) => format!("unknown card {}", hex_prefix(h)),
        Subject::UnknownFinger => "unknown finger".into(),
    }
}

fn hex_prefix(h: &[u8; 32]) -> String {
    h[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Publishes `batches` as the config's device and waits (up to `wait`) until the centre's ack
/// for `epoch` covers the last one. Re-sends what is not acked after every ack timeout and every
/// reconnect, as rollcalld's uplink does. Returns the highest seq acked.
pub(crate) async fn publish(
    config: &Config,
    epoch: u64,
    acked: u64,
    batches: &[PunchBatch],
    wait: Duration,
) -> anyhow::Result<u64> {
    let (site, device) = (&config.device.site, &config.device.id);
    let punches_topic = topic::build(site, device, Kind::Punches);
    let ack_topic = topic::build(site, device, Kind::Ack);
    let last = batches.last().and_then(|b| b.last_seq()).unwrap_or(acked);
    let payloads: Vec<(u64, Vec<u8>)> = batches
        .iter()
        .map(|b| (b.last_seq().unwrap_or(0), b.encode()))
        .collect();

    // Its own client id: the running rollcalld's session (same certificate) is left alone.
    let mut opts = MqttOptions::new(
        format!("{}-salvage", config.client_id()),
        config.mqtt.host.clone(),
        config.mqtt.port,
    );
    opts.set_keep_alive(config.mqtt.keep_alive);
    opts.set_clean_session(true);
    opts.set_max_packet_size(MAX_MESSAGE_BYTES + 1024, MAX_MESSAGE_BYTES + 1024);
    if let Some(tls) = &config.mqtt.tls {
        let read = |p: &Path| {
            std::fs::read(p).with_context(|| {
                format!(
                    "{}: run as root or as a member of the rollcall group, which can read the \
                     device's TLS files",
                    p.display()
                )
            })
        };
        opts.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca: read(&tls.ca_file)?,
            alpn: None,
            client_auth: Some((read(&tls.cert_file)?, read(&tls.key_file)?)),
        }));
    }
    let (client, mut events) = AsyncClient::new(opts, payloads.len() + 16);
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let poller = tokio::spawn(async move {
        loop {
            let e = events.poll().await;
            let failed = e.is_err();
            if tx.send(e.map_err(|e| e.to_string())).await.is_err() {
                return;
            }
            if failed {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });

    let deadline = Instant::now() + wait;
    let mut up_to = acked;
    let mut last_error = None::<String>;
    let mut resend_at = None::<Instant>;
    let result = loop {
        if up_to >= last {
            break Ok(up_to);
        }
        let now = Instant::now();
        if now >= deadline {
            if up_to == acked
                && let Some(e) = &last_error
            {
                break Err(anyhow::anyhow!(
                    "no ack from the centre within {}s; the broker at {}:{}: {e}",
                    wait.as_secs(),
                    config.mqtt.host,
                    config.mqtt.port
                ));
            }
            break Ok(up_to);
        }
        if resend_at.is_some_and(|t| now >= t) {
            send(&client, &punches_topic, &payloads, up_to).await;
            resend_at = Some(now + config.mqtt.ack_timeout);
        }
        let until = resend_at.unwrap_or(deadline).min(deadline);
        let event = tokio::select! {
            e = rx.recv() => e,
            _ = tokio::time::sleep_until(until.into()) => continue,
        };
        match event {
            None => break Err(anyhow::anyhow!("the MQTT client stopped")),
            Some(Err(e)) => {
                last_error = Some(e);
                // Reconnecting: everything not acked goes again once connected.
                resend_at = None;
            }
            Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                last_error = None;
                if let Err(e) = client.subscribe(ack_topic.clone(), QoS::AtLeastOnce).await {
                    break Err(e.into());
                }
            }
            Some(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                send(&client, &punches_topic, &payloads, up_to).await;
                resend_at = Some(Instant::now() + config.mqtt.ack_timeout);
            }
            Some(Ok(Event::Incoming(Packet::Publish(p)))) if p.topic == ack_topic => {
                match Ack::decode(&p.payload) {
                    Ok(ack) if ack.epoch == epoch && ack.device_id == *device => {
                        if ack.up_to_seq > up_to {
                            up_to = ack.up_to_seq.min(last);
                            resend_at = Some(Instant::now() + config.mqtt.ack_timeout);
                        }
                        for r in ack.refusals.iter().flatten() {
                            eprintln!(
                                "the centre refused seq {}..={} ({} punches): {}: {}",
                                r.first_seq, r.last_seq, r.count, r.reason, r.detail
                            );
                        }
                    }
                    // Acks for the running rollcalld's epoch are not ours.
                    Ok(_) => {}
                    Err(e) => eprintln!("ignored an undecodable ack: {e}"),
                }
            }
            Some(Ok(_)) => {}
        }
    };
    let _ = client.disconnect().await;
    poller.abort();
    result
}

async fn send(client: &AsyncClient, topic: &str, payloads: &[(u64, Vec<u8>)], acked: u64) {
    for (last, bytes) in payloads {
        if *last > acked {
            let _ = client
                .publish(topic, QoS::AtLeastOnce, false, bytes.clone())
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_protocol::v1::{ClockState, CredentialKind};

    fn punch(seq: u64) -> Punch {
        Punch {
            seq,
            event_id: uuid::Uuid::from_u128(seq as u128),
            captured_at_ms: 1_700_000_000_000,
            clock: ClockState {
                ntp_synced: true,
                offset_ms: None,
                boot_id: uuid::Uuid::from_u128(1),
                monotonic_ms: seq,
            },
            reader_id: "door-card".into(),
            reader_kind: "rdm6300".into(),
            credential: CredentialKind::Card,
            subject: Subject::Student("S001".into()),
            score: None,
            flags: 0,
        }
    }

    #[test]
    fn batches_are_runs_of_consecutive_seqs_no_longer_than_the_maximum() {
        let punches: BTreeMap<u64, Punch> = [3, 4, 5, 6, 7, 9, 10]
            .into_iter()
            .map(|s| (s, punch(s)))
            .collect();
        let b = batches("room-101", 42, &punches, 3);
        let runs: Vec<Vec<u64>> = b
            .iter()
            .map(|b| b.punches.iter().map(|p| p.seq).collect())
            .collect();
        assert_eq!(runs, vec![vec![3, 4, 5], vec![6, 7], vec![9, 10]]);
        assert!(b.iter().all(|b| b.epoch == 42 && b.validate().is_ok()));
    }
}
