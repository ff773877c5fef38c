//! Credentials owned by the centre (issue 9): the sealed store of cards and fingerprint
//! templates, consent and retention, room rosters published to every gateway, enrolments from
//! gateways, and commands to them.
//!
//! * [`keys`]: the key file, AES-256-GCM sealing with the row's identity as associated data.
//! * [`store`]: consent, enrolment (once per enrolment id), revocation, retention, rewrap.
//! * [`roster`]: which students each device must know, versions, snapshots and deltas.
//! * [`cli`]: `rollcall-ingest consent`, `credentials` and `device` subcommands.
//!
//! [`run`] is the service side: its own MQTT client (so the punch path is untouched) with a
//! shared subscription to every device's roster acks and enrolments, and a refresh every
//! `credentials.roster_every` (and at once after an ack or an enrolment): retention, rosters
//! recomputed, CampsHub360's `attendance_biometric_template` kept current, updates and queued
//! commands published. With several replicas one refreshes at a time (an advisory lock).
//!
//! ```toml
//! [credentials]
//! key_file = "/etc/rollcall/credential-keys"  # see keys.rs; mode 0600
//! roster_every = "30s"                         # changes made in CampsHub360 reach gateways within this
//! resend_after = "1m"                          # an unacknowledged update is sent again
//! leaving_statuses = ["GRADUATED", "DROPPED"]  # students_student.status meaning "has left"
//! retention_after_leaving = "30d"              # then their templates are destroyed
//! max_part_bytes = 262144                      # roster messages are split to stay below
//! ```

pub mod cli;
pub mod keys;
pub mod roster;
pub mod store;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use rollcall_protocol::v1::{Action, Command, Enrolment, RosterAck};
use rollcall_protocol::{topic, v1};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::db::DbError;
use keys::{KeyError, KeyRing};

/// A failure of the credential side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// PostgreSQL.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A key or a sealed credential.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Db(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Error::Db(e.into())
    }
}

/// `[credentials]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsFile {
    key_file: PathBuf,
    #[serde(default)]
    roster_every: Option<String>,
    #[serde(default)]
    resend_after: Option<String>,
    #[serde(default)]
    leaving_statuses: Option<Vec<String>>,
    #[serde(default)]
    retention_after_leaving: Option<String>,
    #[serde(default)]
    max_part_bytes: Option<usize>,
}

/// `[credentials]`, validated.
#[derive(Debug, Clone)]
pub struct CredentialsConfig {
    /// The key file.
    pub key_file: PathBuf,
    /// How often rosters are recomputed.
    pub roster_every: Duration,
    /// When an unacknowledged update is sent again.
    pub resend_after: Duration,
    /// `students_student.status` values that mean the student has left.
    pub leaving_statuses: Vec<String>,
    /// How long after leaving their templates are destroyed.
    pub retention_after_leaving: Duration,
    /// Largest roster message.
    pub max_part_bytes: usize,
}

impl CredentialsFile {
    /// Validates, pushing each problem (naming the key and what to write) to `problems`.
    pub fn validate(self, problems: &mut Vec<String>) -> CredentialsConfig {
        let mut bounded =
            |key: &str, v: Option<String>, default: Duration, lo: Duration, hi: Duration| match v
                .map(|t| humantime::parse_duration(&t).map_err(|e| (t, e)))
            {
                None => default,
                Some(Err((t, e))) => {
                    problems.push(format!(
                        "credentials.{key} {t:?}: {e}; write e.g. \"10s\", \"5m\", \"30d\""
                    ));
                    default
                }
                Some(Ok(d)) if d >= lo && d <= hi => d,
                Some(Ok(d)) => {
                    problems.push(format!(
                        "credentials.{key} {}: give {} to {}",
                        humantime::format_duration(d),
                        humantime::format_duration(lo),
                        humantime::format_duration(hi)
                    ));
                    default
                }
            };
        let roster_every = bounded(
            "roster_every",
            self.roster_every,
            Duration::from_secs(30),
            Duration::from_secs(1),
            Duration::from_secs(600),
        );
        let resend_after = bounded(
            "resend_after",
            self.resend_after,
            Duration::from_secs(60),
            Duration::from_secs(5),
            Duration::from_secs(86_400),
        );
        let retention_after_leaving = bounded(
            "retention_after_leaving",
            self.retention_after_leaving,
            Duration::from_secs(30 * 86_400),
            Duration::ZERO,
            Duration::from_secs(10 * 366 * 86_400),
        );
        let max_part_bytes = self.max_part_bytes.unwrap_or(256 * 1024);
        if !(4096..=v1::MAX_MESSAGE_BYTES).contains(&max_part_bytes) {
            problems.push(format!(
                "credentials.max_part_bytes {max_part_bytes}: give 4096 to {}",
                v1::MAX_MESSAGE_BYTES
            ));
        }
        let leaving_statuses = self
            .leaving_statuses
            .unwrap_or_else(|| vec!["GRADUATED".into(), "DROPPED".into()]);
        if leaving_statuses
            .iter()
            .any(|s| s.eq_ignore_ascii_case("ACTIVE"))
        {
            problems.push(
                "credentials.leaving_statuses lists ACTIVE: every student would lose their templates"
                    .into(),
            );
        }
        CredentialsConfig {
            key_file: self.key_file,
            roster_every,
            resend_after,
            leaving_statuses,
            retention_after_leaving,
            max_part_bytes: max_part_bytes.clamp(4096, v1::MAX_MESSAGE_BYTES),
        }
    }
}

/// Advisory lock held by the replica refreshing rosters.
const ROSTER_LOCK: i64 = 0x726f_7374_6572_0001;

/// What one refresh did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refresh {
    /// Templates revoked by retention.
    pub revoked: u64,
    /// Devices whose roster changed.
    pub changed: usize,
    /// Roster messages published.
    pub messages: usize,
    /// Commands published.
    pub commands: usize,
    /// CampsHub360's `attendance_biometric_template` was brought up to date.
    pub template_table: bool,
}

/// How often CampsHub360's template table is brought up to date when nothing changed (for
/// `last_used`).
const TEMPLATE_TABLE_EVERY: chrono::Duration = chrono::Duration::minutes(5);

/// When a refresh runs.
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    /// The previous refresh (fingerprint punches since then update `last_used`).
    pub last: DateTime<Utc>,
    /// Now.
    pub now: DateTime<Utc>,
    /// Bring CampsHub360's template table up to date even if no roster changed.
    pub template_table: bool,
}

/// One refresh: retention, rosters, the template table, then every due update and queued
/// command published through `client`. Skipped (default result) while another replica holds
/// the lock.
pub async fn refresh_once(
    pool: &Pool,
    keys: &KeyRing,
    cfg: &Config,
    cc: &CredentialsConfig,
    client: &AsyncClient,
    tick: Tick,
) -> Result<Refresh, Error> {
    let Tick {
        last,
        now,
        template_table: template_sync_due,
    } = tick;
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&ROSTER_LOCK])
        .await?
        .get(0);
    if !locked {
        return Ok(Refresh::default());
    }
    let mut out = Refresh {
        revoked: store::apply_retention(&tx, &cc.leaving_statuses, cc.retention_after_leaving, now)
            .await?,
        ..Refresh::default()
    };
    let today = now.with_timezone(&cfg.campus.timezone).date_naive();
    out.changed = roster::refresh(&tx, today, now).await?.len();
    // CampsHub360's template table follows the rosters: at once after a change, and every few
    // minutes for `last_used` (rebuilding it costs seconds on a large campus, too much for
    // every idle tick).
    if out.changed > 0 || out.revoked > 0 || template_sync_due {
        roster::sync_template_table(&tx, last - chrono::Duration::minutes(1), now).await?;
        out.template_table = true;
    }
    let resend_before = now - chrono::Duration::from_std(cc.resend_after).unwrap_or_default();
    let mut publish: Vec<(String, Vec<u8>)> = Vec::new();
    for d in roster::due(&tx, resend_before).await? {
        let (students, removed, problems) = roster::build(&tx, keys, &d).await?;
        for p in problems {
            warn!(device = %d.device_id, problem = %p, "credential left out of a roster");
        }
        let base = (!d.snapshot).then_some(d.acked as u64);
        let parts = roster::split(
            &d.device_id,
            base,
            d.version as u64,
            students,
            removed,
            cc.max_part_bytes,
        );
        let t = topic::build(&d.site, &d.device_id, topic::Kind::Roster);
        info!(device = %d.device_id, version = d.version, snapshot = d.snapshot, parts = parts.len(), "publishing roster");
        for p in parts {
            publish.push((t.clone(), p.encode()));
        }
        roster::mark_published(&tx, &d, now).await?;
    }
    for (device, site, command) in pending_commands(&tx, now).await? {
        publish.push((
            topic::build(&site, &device, topic::Kind::Command),
            command.encode(),
        ));
        out.commands += 1;
    }
    tx.commit().await?;
    out.messages = publish.len() - out.commands;
    for (t, bytes) in publish {
        if let Err(e) = client.publish(t, QoS::AtLeastOnce, false, bytes).await {
            warn!(error = %e, "roster or command not queued; sent again after resend_after");
        }
    }
    Ok(out)
}

/// Queued commands of devices that have said hello (their site is known), marked published.
async fn pending_commands(
    tx: &impl deadpool_postgres::GenericClient,
    now: DateTime<Utc>,
) -> Result<Vec<(String, String, Command)>, Error> {
    let rows = tx
        .query(
            "UPDATE rollcall.device_command c SET published_at = $1
             FROM rollcall.roster_device r
             WHERE c.device_id = r.device_id AND c.published_at IS NULL
             RETURNING c.command_id, c.device_id::text, r.site, c.action",
            &[&now],
        )
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let action: serde_json::Value = r.get(3);
        match cli::action_from_json(&action) {
            Some(action) => out.push((
                r.get(1),
                r.get(2),
                Command {
                    device_id: r.get(1),
                    command_id: r.get(0),
                    action,
                },
            )),
            None => {
                warn!(command = %r.get::<_, uuid::Uuid>(0), "queued command unreadable; dropped")
            }
        }
    }
    Ok(out)
}

/// Handles one message on a roster-ack or enrol topic; returns whether rosters should be
/// refreshed now. Bad input is logged and dropped (the device re-sends what matters).
pub async fn handle(
    pool: &Pool,
    keys: &KeyRing,
    cc: &CredentialsConfig,
    client: &AsyncClient,
    topic_name: &str,
    payload: &[u8],
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    let Ok(t) = topic::parse(topic_name) else {
        warn!(topic = %topic_name.chars().take(200).collect::<String>(), "not a rollcall topic; dropped");
        return Ok(false);
    };
    match t.kind {
        topic::Kind::RosterAck => {
            let ack = match RosterAck::decode(payload) {
                Ok(a) if a.device_id == t.device_id => a,
                Ok(a) => {
                    warn!(topic_device = t.device_id, payload_device = %a.device_id, "roster ack for another device; dropped");
                    return Ok(false);
                }
                Err(e) => {
                    warn!(device = t.device_id, error = %e, "roster ack undecodable; dropped");
                    return Ok(false);
                }
            };
            let c = pool.get().await?;
            Ok(roster::hello(&c, t.site, &ack, now).await?)
        }
        topic::Kind::Enrol => {
            let e = match Enrolment::decode(payload) {
                Ok(e) if e.device_id == t.device_id => e,
                Ok(e) => {
                    warn!(topic_device = t.device_id, payload_device = %e.device_id, "enrolment for another device; dropped");
                    return Ok(false);
                }
                Err(err) => {
                    warn!(device = t.device_id, error = %err, "enrolment undecodable; dropped");
                    return Ok(false);
                }
            };
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            let verdict = store::enrol(&tx, keys, &e, &cc.leaving_statuses, now).await?;
            tx.commit().await?;
            info!(device = %e.device_id, enrolment = %e.enrolment_id, accepted = verdict.accepted, detail = %verdict.detail, "enrolment");
            let answer = Command {
                device_id: e.device_id.clone(),
                command_id: uuid::Uuid::now_v7(),
                action: Action::EnrolmentResult {
                    enrolment_id: e.enrolment_id,
                    accepted: verdict.accepted,
                    detail: verdict.detail,
                },
            };
            let t = topic::build(t.site, t.device_id, topic::Kind::Command);
            if let Err(err) = client
                .publish(t, QoS::AtLeastOnce, false, answer.encode())
                .await
            {
                warn!(error = %err, "enrolment verdict not queued; the device re-sends and gets it again");
            }
            Ok(verdict.accepted)
        }
        _ => Ok(false),
    }
}

/// Runs the credential side until `stop`.
pub async fn run(
    cfg: Arc<Config>,
    cc: CredentialsConfig,
    pool: Pool,
    stop: CancellationToken,
) -> Result<(), crate::IngestError> {
    let keys = Arc::new(
        KeyRing::load(&cc.key_file).map_err(|e| crate::IngestError::Setup(e.to_string()))?,
    );
    let mut opts = crate::consumer::mqtt_options(&cfg)?;
    opts.set_client_id(format!("rollcall-ingest-{}-credentials", cfg.node_name));
    opts.set_manual_acks(false);
    // Roster parts are up to `max_part_bytes` (256 KiB by default): the punch consumer's 64 KiB
    // outgoing limit would refuse every one of them.
    opts.set_max_packet_size(
        v1::MAX_MESSAGE_BYTES + 64 * 1024,
        v1::MAX_MESSAGE_BYTES + 64 * 1024,
    );
    let (client, mut el) = AsyncClient::new(opts, 4096);
    let wake = Arc::new(Notify::new());
    let group = cfg.mqtt.share_group.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, bytes::Bytes)>(1024);
    let loop_client = client.clone();
    let loop_stop = stop.clone();
    let event_loop = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            let ev = tokio::select! {
                _ = loop_stop.cancelled() => break,
                ev = el.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send((p.topic, p.payload)).await.is_err() {
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(200);
                    for f in ["rollcall/v1/+/+/roster-ack", "rollcall/v1/+/+/enrol"] {
                        let shared = format!("$share/{group}/{f}");
                        if let Err(e) = loop_client.try_subscribe(shared, QoS::AtLeastOnce) {
                            warn!(error = %e, "subscribe request not queued");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "credentials: broker connection lost; reconnecting");
                    tokio::select! {
                        _ = loop_stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        let _ = loop_client.try_disconnect();
    });
    let handler = {
        let (pool, keys, cc, client, wake, stop) = (
            pool.clone(),
            keys.clone(),
            cc.clone(),
            client.clone(),
            wake.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (t, payload) = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = rx.recv() => match m { Some(m) => m, None => break },
                };
                match handle(&pool, &keys, &cc, &client, &t, &payload, Utc::now()).await {
                    Ok(true) => wake.notify_one(),
                    Ok(false) => {}
                    Err(e) => {
                        warn!(error = %e, "credential message not processed; the device sends it again")
                    }
                }
            }
        })
    };
    let mut last = Utc::now() - chrono::Duration::minutes(10);
    let mut last_template_table = last;
    loop {
        let now = Utc::now();
        let template_sync_due = now - last_template_table >= TEMPLATE_TABLE_EVERY;
        match refresh_once(
            &pool,
            &keys,
            &cfg,
            &cc,
            &client,
            Tick {
                last,
                now,
                template_table: template_sync_due,
            },
        )
        .await
        {
            Ok(r) => {
                if r.template_table {
                    last_template_table = now;
                }
                if r.revoked + (r.changed + r.messages + r.commands) as u64 > 0 {
                    info!(
                        revoked = r.revoked,
                        changed = r.changed,
                        messages = r.messages,
                        commands = r.commands,
                        "credentials refreshed"
                    );
                }
                last = now;
            }
            Err(e) => warn!(error = %e, "roster refresh failed; retrying"),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wake.notified() => {
                // A burst of acks or enrolments (every gateway reconnecting after a broker
                // restart) is handled by one refresh, not one each.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            _ = tokio::time::sleep(cc.roster_every) => {}
        }
    }
    let _ = handler.await;
    let _ = event_loop.await;
    Ok(())
}
