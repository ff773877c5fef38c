//! What the writer reads and writes about devices, inside its transaction: their rows, the
//! enablement history (so a punch is judged by its device's state when it was captured), the
//! clock anchors from heartbeats, the heartbeats themselves, the messages of devices that are
//! not registered, and dead letters.

use super::DbError;
use crate::admit::{Anchor, DeviceFacts};
use crate::decide::DeviceInfo;
use crate::punch::{BatchIn, Credential, DeadLetter, PunchIn, StatusIn, SubjectIn};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use tokio_postgres::GenericClient;

/// The rows of `ids` in `attendance_biometric_device`, by device id.
pub(crate) async fn rows(
    tx: &impl GenericClient,
    ids: &[&str],
    demo: &HashSet<String>,
) -> Result<HashMap<String, DeviceInfo>, DbError> {
    Ok(tx
        .query(
            "SELECT id, device_id, room, device_type, is_enabled FROM attendance_biometric_device WHERE device_id = ANY($1)",
            &[&ids],
        )
        .await?
        .iter()
        .map(|r| {
            let device_id: String = r.get(1);
            let d = DeviceInfo {
                id: r.get(0),
                demo: demo.contains(&device_id),
                device_id,
                room: r.get(2),
                device_type: r.get(3),
                enabled: r.get(4),
            };
            (d.device_id.clone(), d)
        })
        .collect())
}

/// Records, as of `now`, each device whose `is_enabled` differs from the last state Rollcall
/// saw (a device seen for the first time gets its state since `-infinity`). Every registered
/// device when `ids` is `None` (the upkeep job). Returns how many changes were recorded.
pub(crate) async fn observe_enablement(
    tx: &impl GenericClient,
    ids: Option<&[&str]>,
    now: DateTime<Utc>,
) -> Result<u64, DbError> {
    Ok(tx
        .execute(
            "INSERT INTO rollcall.device_enablement (device_id, since, enabled)
             SELECT d.device_id, CASE WHEN last.enabled IS NULL THEN '-infinity'::timestamptz ELSE $2 END, d.is_enabled
             FROM attendance_biometric_device d
             LEFT JOIN LATERAL (SELECT e.enabled FROM rollcall.device_enablement e
                                WHERE e.device_id = d.device_id ORDER BY e.since DESC LIMIT 1) last ON true
             WHERE ($1::text[] IS NULL OR d.device_id = ANY($1))
               AND last.enabled IS DISTINCT FROM d.is_enabled
             ON CONFLICT (device_id, since) DO UPDATE SET enabled = EXCLUDED.enabled",
            &[&ids, &now],
        )
        .await?)
}

/// Enablement histories and clock anchors of `ids`.
pub(crate) async fn facts(tx: &impl GenericClient, ids: &[&str]) -> Result<DeviceFacts, DbError> {
    let mut f = DeviceFacts::default();
    for r in tx
        .query(
            "SELECT device_id::text, NULLIF(since, '-infinity'), enabled FROM rollcall.device_enablement
             WHERE device_id = ANY($1) ORDER BY device_id, since",
            &[&ids],
        )
        .await?
    {
        f.enablement
            .entry(r.get(0))
            .or_default()
            .push((r.get(1), r.get(2)));
    }
    for r in tx
        .query(
            "SELECT device_id::text, boot_id, monotonic_ms, received_at FROM rollcall.clock_anchor WHERE device_id = ANY($1)",
            &[&ids],
        )
        .await?
    {
        let mono: i64 = r.get(2);
        f.anchors.insert(
            (r.get(0), r.get(1)),
            Anchor {
                monotonic_ms: mono.max(0) as u64,
                received_at: r.get(3),
            },
        );
    }
    Ok(f)
}

/// Applies heartbeats of registered devices: the device row's health, `rollcall.device_status`,
/// and the clock anchor of the device's boot.
pub(crate) async fn write_heartbeats(
    tx: &impl GenericClient,
    statuses: &[&StatusIn],
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    for st in statuses {
        let health = if !st.online {
            "offline"
        } else if st.readers_unhealthy {
            "readers_unhealthy"
        } else {
            "ok"
        };
        // 'maintenance' is set by people and left alone; otherwise the heartbeat decides.
        tx.execute(
            "UPDATE attendance_biometric_device SET last_seen = $2, firmware_version = left($3, 50), updated_at = $2,
                 status = CASE WHEN status = 'maintenance' THEN status WHEN $4 = 'ok' THEN 'active'
                               WHEN $4 = 'offline' THEN 'inactive' ELSE 'error' END
             WHERE device_id = $1",
            &[&st.device_id, &now, &st.version, &health],
        )
        .await?;
        tx.execute(
            "INSERT INTO rollcall.device_status (device_id, last_status_at, version, online, status, health, health_since)
             VALUES ($1, $2, $3, $4, $5, $6, $2)
             ON CONFLICT (device_id) DO UPDATE SET last_status_at = $2, version = $3, online = $4, status = $5,
                 health_since = CASE WHEN rollcall.device_status.health = $6 THEN rollcall.device_status.health_since ELSE $2 END,
                 health = $6",
            &[&st.device_id, &now, &st.version, &st.online, &st.json, &health],
        )
        .await?;
        // A last will is published by the broker long after the device wrote it: no anchor.
        if st.online {
            let mono = i64::try_from(st.monotonic_ms).unwrap_or(i64::MAX);
            tx.execute(
                "INSERT INTO rollcall.clock_anchor (device_id, boot_id, monotonic_ms, received_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (device_id, boot_id) DO UPDATE SET monotonic_ms = $3, received_at = $4
                 WHERE rollcall.clock_anchor.monotonic_ms <= $3",
                &[&st.device_id, &st.boot_id, &mono, &now],
            )
            .await?;
        }
    }
    Ok(())
}

/// Counts messages from devices that are not registered: one row per device and kind.
pub(crate) async fn note_unregistered(
    tx: &impl GenericClient,
    seen: &[(&str, &'static str)],
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    if seen.is_empty() {
        return Ok(());
    }
    let mut counts: HashMap<(&str, &str), i64> = HashMap::new();
    for (d, k) in seen {
        *counts.entry((d, k)).or_default() += 1;
    }
    let devs: Vec<&str> = counts.keys().map(|k| k.0).collect();
    let kinds: Vec<&str> = counts.keys().map(|k| k.1).collect();
    let ns: Vec<i64> = counts.values().copied().collect();
    tx.execute(
        "INSERT INTO rollcall.refused_device (device_id, kind, reason, first_seen, last_seen, messages)
         SELECT left(d, 100), k, 'unknown_device', $4, $4, n FROM unnest($1::text[], $2::text[], $3::int8[]) AS u(d, k, n)
         ORDER BY 1, 2
         ON CONFLICT (device_id, kind) DO UPDATE SET last_seen = $4,
             messages = rollcall.refused_device.messages + EXCLUDED.messages",
        &[&devs, &kinds, &ns, &now],
    )
    .await?;
    Ok(())
}

/// Writes dead letters.
pub(crate) async fn write_dead_letters(
    tx: &impl GenericClient,
    dead: &[&DeadLetter],
    node: &str,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    if dead.is_empty() {
        return Ok(());
    }
    let topics: Vec<&str> = dead.iter().map(|d| d.topic.as_str()).collect();
    let devs: Vec<Option<&str>> = dead.iter().map(|d| d.device_id.as_deref()).collect();
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    let details: Vec<&str> = dead.iter().map(|d| d.detail.as_str()).collect();
    let payloads: Vec<&[u8]> = dead.iter().map(|d| d.payload.as_slice()).collect();
    let sizes: Vec<i32> = dead
        .iter()
        .map(|d| i32::try_from(d.size).unwrap_or(i32::MAX))
        .collect();
    tx.execute(
        "INSERT INTO rollcall.dead_letter (received_at, topic, device_id, reason, detail, payload, payload_size, node)
         SELECT $1, t, d, r, x, p, n, $8 FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::int4[]) AS u(t, d, r, x, p, n)",
        &[&now, &topics, &devs, &reasons, &details, &payloads, &sizes, &node],
    )
    .await?;
    Ok(())
}

/// Held punches of the devices and boots that `statuses` just anchored, removed from the ledger
/// so the writer decides them again with the new anchor, as batches per (device, epoch).
pub(crate) async fn take_held(
    tx: &impl GenericClient,
    statuses: &[&StatusIn],
) -> Result<Vec<BatchIn>, DbError> {
    let online: Vec<&&StatusIn> = statuses.iter().filter(|s| s.online).collect();
    if online.is_empty() {
        return Ok(Vec::new());
    }
    let devs: Vec<&str> = online.iter().map(|s| s.device_id.as_str()).collect();
    let boots: Vec<uuid::Uuid> = online.iter().map(|s| s.boot_id).collect();
    let rows = tx
        .query(
            "DELETE FROM rollcall.ledger l USING unnest($1::text[], $2::uuid[]) AS u(d, b)
             WHERE l.outcome = 'held' AND l.device_id = u.d AND l.boot_id = u.b
             RETURNING l.device_id::text, l.epoch, l.seq, l.event_id, l.captured_at, l.credential, l.subject,
                       l.reader_id, l.reader_kind, l.score, l.flags, l.ntp_synced, l.clock_offset_ms, l.boot_id,
                       l.monotonic_ms",
            &[&devs, &boots],
        )
        .await?;
    let mut by_key: BTreeMap<(String, i64), Vec<PunchIn>> = BTreeMap::new();
    for r in rows {
        let captured: Option<DateTime<Utc>> = r.get(4);
        let subject: String = r.get(6);
        let p = PunchIn {
            seq: r.get::<_, i64>(2) as u64,
            event_id: r.get(3),
            captured_at_ms: captured.map_or(0, |t| t.timestamp_millis()),
            ntp_synced: r.get(11),
            offset_ms: r.get(12),
            boot_id: r.get(13),
            monotonic_ms: r.get::<_, i64>(14).max(0) as u64,
            reader_id: r.get(7),
            reader_kind: r.get(8),
            credential: if r.get::<_, &str>(5) == "card" {
                Credential::Card
            } else {
                Credential::Fingerprint
            },
            subject: SubjectIn::from_ledger(&subject),
            score: r
                .get::<_, Option<i32>>(9)
                .and_then(|s| u16::try_from(s).ok()),
            flags: u32::try_from(r.get::<_, i64>(10)).unwrap_or(0),
            problem: None,
        };
        by_key.entry((r.get(0), r.get(1))).or_default().push(p);
    }
    Ok(by_key
        .into_iter()
        .map(|((device_id, epoch), mut punches)| {
            punches.sort_by_key(|p| p.seq);
            BatchIn {
                site: String::new(),
                device_id,
                epoch: epoch as u64,
                punches,
                database_refused: None,
            }
        })
        .collect())
}
