//! Room rosters: who each device must recognise, versioned, published as snapshots or deltas.
//!
//! A device's roster is the students ENROLLED in course sections that meet in its room in the
//! academic periods covering today (from active timetable slots and from sessions, the rooms
//! session resolution uses), with their credentials of the formats the device's readers take.
//! [`refresh`] compares that with `rollcall.roster_member` and, for each device whose roster
//! changed, bumps its version and stamps the changed entries with it (a removal stays as a
//! tombstone until the device has acknowledged it). [`due`] lists devices behind their version;
//! [`build`] gives the messages: a delta of the entries changed since the version the device
//! acknowledged, or a snapshot when it is new, asks for one, or is behind the forgotten
//! tombstones. A disabled device's roster empties: it keeps no credentials of its room.

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::GenericClient;
use rollcall_protocol::v1::credentials::FORMAT_CARD;
use rollcall_protocol::v1::{
    CardCredential, FingerCredential, MAX_MESSAGE_BYTES, RosterAck, RosterStudent, RosterUpdate,
};
use std::collections::BTreeMap;
use uuid::Uuid;

use super::keys::{KeyRing, Sealed};
use crate::db::DbError;

/// Records a device's roster ack (its hello on every connect): where it stands, what it takes.
/// Returns whether the device now needs an update (behind its version, or asking for a
/// snapshot).
/// A device new to the centre gets version 1 (an empty roster until the next refresh), so it
/// always has a version to be brought to; a device claiming a version the centre never issued
/// (the centre's database restored from backup) is moved past it with a snapshot.
pub async fn hello(
    c: &impl GenericClient,
    site: &str,
    ack: &RosterAck,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    let acked = ack.version as i64;
    let failures = serde_json::to_value(
        ack.failures
            .iter()
            .map(|f| serde_json::json!({"id": f.id, "reason": f.reason}))
            .collect::<Vec<_>>(),
    )
    .unwrap_or_default();
    let loaded = ack.templates_loaded as i32;
    let capacity = ack.capacity.map(|c| c.min(i32::MAX as u32) as i32);
    let row = c.query_one(
        "INSERT INTO rollcall.roster_device (device_id, site, version, acked_version, want_snapshot, accepts,
             templates_loaded, capacity, failures, acked_at)
         VALUES ($1, $2, greatest($3::bigint + 1, 1), $3::bigint, true, $4, $5, $6, $7, $8)
         ON CONFLICT (device_id) DO UPDATE SET
             site = $2,
             want_snapshot = $9 OR $3 = 0 OR $3 > roster_device.version OR $3 < roster_device.floor_version,
             version = CASE WHEN $3 > roster_device.version THEN $3 + 1 ELSE roster_device.version END,
             acked_version = $3, accepts = $4, templates_loaded = $5, capacity = $6, failures = $7,
             acked_at = $8
         RETURNING want_snapshot OR acked_version < version",
        &[
            &ack.device_id,
            &site,
            &acked,
            &ack.accepts,
            &loaded,
            &capacity,
            &failures,
            &now,
            &ack.want_snapshot,
        ],
    )
    .await?;
    Ok(row.get(0))
}

/// Turns PostgreSQL's JIT compilation off for the rest of the transaction. The roster
/// statements join and sort every roster at once (360,000 rows for 20,000 students on 500
/// devices), so their estimated cost is far above `jit_above_cost` and PostgreSQL compiled them
/// on every refresh: 1.5-2 s of a 3-4 s idle refresh, every `roster_every` (BENCHMARKS.md,
/// "Rosters"). They run once a tick; compiling never pays back.
async fn no_jit(c: &impl GenericClient) -> Result<(), DbError> {
    c.batch_execute("SET LOCAL jit = off").await?;
    Ok(())
}

/// Who each device must know, as SQL common table expressions ending in `desired (device_id,
/// student_id, digest)`: the students ENROLLED in sections meeting in the device's room in the
/// academic periods covering `$1` (active timetable slots and sessions), with a digest of their
/// credentials of the formats the device takes. [`refresh`] diffs it against the stored
/// members; the roster benchmark times it alone as its reference.
pub const MEMBERSHIP_CTES: &str = "periods AS (
                 SELECT id FROM attendance_academicperiod
                 WHERE is_active AND period_start <= $1 AND period_end >= $1
             ), sections AS (
                 SELECT course_section_id, room FROM attendance_timetable_slot
                 WHERE is_active AND academic_period_id IN (SELECT id FROM periods)
                 UNION
                 SELECT course_section_id, room FROM attendance_session
                 WHERE academic_period_id IN (SELECT id FROM periods) AND status <> 'cancelled'
             ), devices AS (
                 SELECT r.device_id, d.room, r.accepts FROM rollcall.roster_device r
                 JOIN attendance_biometric_device d ON d.device_id = r.device_id
                 WHERE d.is_enabled AND d.room <> ''
             ), pairs AS (
                 SELECT DISTINCT dv.device_id, dv.accepts, e.student_id
                 FROM devices dv
                 JOIN sections s ON s.room = dv.room
                 JOIN academics_courseenrollment e
                   ON e.course_section_id = s.course_section_id AND e.status = 'ENROLLED'
             ), desired AS (
                 SELECT p.device_id, p.student_id, string_agg(c.id::text, ',' ORDER BY c.id) AS digest
                 FROM pairs p
                 JOIN rollcall.credential c
                   ON c.student_id = p.student_id AND c.revoked_at IS NULL AND c.format = ANY(p.accepts)
                 GROUP BY p.device_id, p.student_id
             )";

/// Recomputes every roster against `today` (the campus's date); returns the devices whose
/// roster changed, with their new version.
pub async fn refresh(
    c: &impl GenericClient,
    today: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Vec<(String, i64)>, DbError> {
    no_jit(c).await?;
    let rows = c
        .query(
            &format!(
                "WITH {MEMBERSHIP_CTES}, changes AS (
                 SELECT d.device_id, d.student_id, d.digest FROM desired d
                 LEFT JOIN rollcall.roster_member m
                   ON m.device_id = d.device_id AND m.student_id = d.student_id
                 WHERE m.student_id IS NULL OR m.removed OR m.digest <> d.digest
                 UNION ALL
                 SELECT m.device_id, m.student_id, NULL FROM rollcall.roster_member m
                 WHERE NOT m.removed AND NOT EXISTS (
                     SELECT 1 FROM desired d WHERE d.device_id = m.device_id AND d.student_id = m.student_id)
             ), bumped AS (
                 UPDATE rollcall.roster_device r SET version = r.version + 1, changed_at = $2
                 WHERE r.device_id IN (SELECT device_id FROM changes)
                 RETURNING r.device_id, r.version
             ), written AS (
                 INSERT INTO rollcall.roster_member (device_id, student_id, digest, changed_version, removed)
                 SELECT ch.device_id, ch.student_id, coalesce(ch.digest, ''), b.version, ch.digest IS NULL
                 FROM changes ch JOIN bumped b ON b.device_id = ch.device_id
                 ON CONFLICT (device_id, student_id) DO UPDATE SET digest = excluded.digest,
                     changed_version = excluded.changed_version, removed = excluded.removed
             )
             SELECT device_id::text, version FROM bumped"
            ),
            &[&today, &now],
        )
        .await?;
    // Tombstones the device already has are forgotten; a device acknowledging an older version
    // later (restored from backup) then gets a snapshot.
    c.execute(
        "WITH gone AS (
             DELETE FROM rollcall.roster_member m USING rollcall.roster_device r
             WHERE m.device_id = r.device_id AND m.removed AND m.changed_version <= r.acked_version
             RETURNING m.device_id, m.changed_version
         )
         UPDATE rollcall.roster_device r SET floor_version = greatest(r.floor_version, g.v)
         FROM (SELECT device_id, max(changed_version) AS v FROM gone GROUP BY device_id) g
         WHERE r.device_id = g.device_id",
        &[],
    )
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Keeps CampsHub360's `attendance_biometric_template` showing who is enrolled where: one row
/// per student and device whose roster carries the student's fingerprint, `template_hash` the
/// keyed digest of their newest template (never the template), `template_data` empty; rows of
/// Rollcall's templates no longer loaded there become inactive; `last_used` follows the
/// fingerprint punches recorded since `since`.
pub async fn sync_template_table(
    c: &impl GenericClient,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    no_jit(c).await?;
    let loaded = "SELECT DISTINCT ON (m.device_id, m.student_id) m.student_id, d.id AS dev_pk,
                      encode(c.digest, 'hex') AS hash, (c.quality::numeric / 100)::numeric(3,2) AS q,
                      c.enrolled_at
                  FROM rollcall.roster_member m
                  JOIN rollcall.roster_device r ON r.device_id = m.device_id
                  JOIN attendance_biometric_device d ON d.device_id = m.device_id
                  JOIN rollcall.credential c ON c.student_id = m.student_id AND c.kind = 'fingerprint'
                       AND c.revoked_at IS NULL AND c.format = ANY(r.accepts)
                  WHERE NOT m.removed
                  ORDER BY m.device_id, m.student_id, c.enrolled_at DESC, c.id DESC";
    c.execute(
        &format!(
            "INSERT INTO attendance_biometric_template AS t (created_at, updated_at, student_id, device_id,
                 template_data, template_hash, quality_score, is_active, enrolled_at, last_used)
             SELECT $1, $1, x.student_id, x.dev_pk, '', x.hash, x.q, true, x.enrolled_at, NULL
             FROM ({loaded}) x
             ON CONFLICT (student_id, device_id) DO UPDATE SET updated_at = $1,
                 template_hash = excluded.template_hash, quality_score = excluded.quality_score,
                 is_active = true, enrolled_at = excluded.enrolled_at
             WHERE (t.template_hash, t.is_active) IS DISTINCT FROM (excluded.template_hash, true)"
        ),
        &[&now],
    )
    .await?;
    c.execute(
        &format!(
            "UPDATE attendance_biometric_template t SET is_active = false, updated_at = $1
             WHERE t.is_active
               AND EXISTS (SELECT 1 FROM rollcall.credential c WHERE encode(c.digest, 'hex') = t.template_hash)
               AND NOT EXISTS (SELECT 1 FROM ({loaded}) x
                               WHERE x.student_id = t.student_id AND x.dev_pk = t.device_id)"
        ),
        &[&now],
    )
    .await?;
    c.execute(
        "UPDATE attendance_biometric_template t SET last_used = u.at, updated_at = $2
         FROM (SELECT d.id AS dev_pk, l.student_id, max(l.captured_at) AS at
               FROM rollcall.ledger l JOIN attendance_biometric_device d ON d.device_id = l.device_id
               WHERE l.received_at > $1 AND l.credential = 'fingerprint' AND l.student_id IS NOT NULL
                 AND l.outcome IN ('recorded', 'duplicate')
               GROUP BY 1, 2) u
         WHERE t.device_id = u.dev_pk AND t.student_id = u.student_id
           AND (t.last_used IS NULL OR t.last_used < u.at)",
        &[&since, &now],
    )
    .await?;
    Ok(())
}

/// A device that needs an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The device.
    pub device_id: String,
    /// Its site (topic level).
    pub site: String,
    /// Its roster's version now.
    pub version: i64,
    /// What it acknowledged.
    pub acked: i64,
    /// Whether it gets a snapshot.
    pub snapshot: bool,
    /// Formats its readers take.
    pub accepts: Vec<String>,
}

/// Devices behind their roster version (or asking for a snapshot) that were not sent it yet,
/// or were sent it before `resend_before` without acknowledging it, or acknowledged something
/// else since. Locks their rows for this transaction.
pub async fn due(
    c: &impl GenericClient,
    resend_before: DateTime<Utc>,
) -> Result<Vec<Due>, DbError> {
    let rows = c
        .query(
            "SELECT device_id::text, site, version, acked_version,
                    want_snapshot OR acked_version = 0 OR acked_version < floor_version, accepts
             FROM rollcall.roster_device
             WHERE (want_snapshot OR acked_version < version)
               AND (published_version IS NULL OR published_version < version
                    OR published_at < acked_at OR published_at < $1)
             ORDER BY device_id
             FOR UPDATE SKIP LOCKED",
            &[&resend_before],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Due {
            device_id: r.get(0),
            site: r.get(1),
            version: r.get(2),
            acked: r.get(3),
            snapshot: r.get(4),
            accepts: r.get(5),
        })
        .collect())
}

/// Marks the update to `d.version` as published now.
pub async fn mark_published(
    c: &impl GenericClient,
    d: &Due,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    c.execute(
        "UPDATE rollcall.roster_device SET published_version = $2, published_at = $3,
             want_snapshot = want_snapshot AND NOT $4
         WHERE device_id = $1",
        &[&d.device_id, &d.version, &now, &d.snapshot],
    )
    .await?;
    Ok(())
}

/// The update's content for one due device: the students with their current credentials
/// (decrypted into zeroizing buffers inside [`RosterStudent`]) and the removed ones. A
/// credential that does not open (a key missing from the key file, tampered bytes) is left out
/// and reported in the second value.
pub async fn build(
    c: &impl GenericClient,
    keys: &KeyRing,
    d: &Due,
) -> Result<(Vec<RosterStudent>, Vec<String>, Vec<String>), DbError> {
    let members = if d.snapshot {
        c.query(
            "SELECT student_id, removed FROM rollcall.roster_member
             WHERE device_id = $1 AND NOT removed ORDER BY student_id",
            &[&d.device_id],
        )
        .await?
    } else {
        c.query(
            "SELECT student_id, removed FROM rollcall.roster_member
             WHERE device_id = $1 AND changed_version > $2 ORDER BY student_id",
            &[&d.device_id, &d.acked],
        )
        .await?
    };
    let mut removed = Vec::new();
    let mut present: BTreeMap<Uuid, RosterStudent> = BTreeMap::new();
    for r in &members {
        let id: Uuid = r.get(0);
        if r.get::<_, bool>(1) {
            removed.push(id.to_string());
        } else {
            present.insert(
                id,
                RosterStudent {
                    student: id.to_string(),
                    cards: Vec::new(),
                    fingers: Vec::new(),
                },
            );
        }
    }
    let ids: Vec<Uuid> = present.keys().copied().collect();
    let creds = c
        .query(
            "SELECT id, student_id, kind, format, key_id, nonce, ciphertext FROM rollcall.credential
             WHERE student_id = ANY($1) AND revoked_at IS NULL AND format = ANY($2)
             ORDER BY student_id, enrolled_at, id",
            &[&ids, &d.accepts],
        )
        .await?;
    let mut problems = Vec::new();
    for r in &creds {
        let (id, student, kind, format): (Uuid, Uuid, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let sealed = Sealed {
            key_id: r.get(4),
            nonce: r.get(5),
            ciphertext: r.get(6),
        };
        let secret = match keys.open(id, student, &kind, &sealed) {
            Ok(s) => s,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        let Some(entry) = present.get_mut(&student) else {
            continue;
        };
        if format == FORMAT_CARD {
            entry.cards.push(CardCredential {
                id,
                uid: secret.to_vec().into(),
            });
        } else {
            entry.fingers.push(FingerCredential {
                id,
                format,
                data: secret.to_vec().into(),
            });
        }
    }
    Ok((present.into_values().collect(), removed, problems))
}

/// Room left in a part for everything but the students and removals.
const PART_OVERHEAD: usize = 256;

/// Splits an update into parts of at most `max_part_bytes` encoded bytes each (and never above
/// the protocol's message limit); every part carries the same versions. One student's entry is
/// never split; an entry larger than a part (impossible within the protocol's credential
/// limits and a sane part size) travels alone.
pub fn split(
    device_id: &str,
    base_version: Option<u64>,
    version: u64,
    students: Vec<RosterStudent>,
    removed: Vec<String>,
    max_part_bytes: usize,
) -> Vec<RosterUpdate> {
    let budget = max_part_bytes.min(MAX_MESSAGE_BYTES) - PART_OVERHEAD;
    let mut parts: Vec<(Vec<RosterStudent>, Vec<String>)> = vec![(Vec::new(), Vec::new())];
    let mut used = 0usize;
    let mut push_size = |parts: &mut Vec<(Vec<RosterStudent>, Vec<String>)>, size: usize| {
        let last = parts.last().expect("at least one part");
        if used + size > budget && !(last.0.is_empty() && last.1.is_empty()) {
            parts.push((Vec::new(), Vec::new()));
            used = 0;
        }
        used += size;
    };
    for r in removed {
        push_size(&mut parts, r.len() + 3);
        parts.last_mut().expect("part").1.push(r);
    }
    for s in students {
        let size = minicbor::to_vec(&s).map_or(0, |v| v.len());
        push_size(&mut parts, size);
        parts.last_mut().expect("part").0.push(s);
    }
    let n = parts.len() as u32;
    parts
        .into_iter()
        .enumerate()
        .map(|(i, (students, removed))| RosterUpdate {
            device_id: device_id.to_string(),
            version,
            base_version,
            part: i as u32,
            parts: n,
            students,
            removed,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn student(n: u8, template: usize) -> RosterStudent {
        RosterStudent {
            student: Uuid::from_bytes([n; 16]).to_string(),
            cards: vec![CardCredential {
                id: Uuid::from_bytes([n; 16]),
                uid: vec![n; 4].into(),
            }],
            fingers: vec![FingerCredential {
                id: Uuid::from_bytes([n ^ 0xff; 16]),
                format: "ef01".into(),
                data: vec![n; template].into(),
            }],
        }
    }

    #[test]
    fn a_small_update_is_one_part() {
        let parts = split(
            "d",
            Some(3),
            4,
            vec![student(1, 512)],
            vec!["x".into()],
            64 * 1024,
        );
        assert_eq!(parts.len(), 1);
        assert_eq!((parts[0].part, parts[0].parts), (0, 1));
        assert!(parts[0].validate().is_ok());
    }

    #[test]
    fn a_large_roster_splits_within_the_limit_and_keeps_everyone() {
        let students: Vec<_> = (0..200).map(|n| student(n, 1536)).collect();
        let removed: Vec<String> = (0..50).map(|n| format!("gone-{n}")).collect();
        let max = 32 * 1024;
        let parts = split(
            "room-101",
            Some(7),
            9,
            students.clone(),
            removed.clone(),
            max,
        );
        assert!(parts.len() > 1);
        let n = parts.len() as u32;
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(
                (p.part, p.parts, p.version, p.base_version),
                (i as u32, n, 9, Some(7))
            );
            let bytes = p.encode();
            assert!(bytes.len() <= max, "part {i} is {} bytes", bytes.len());
            assert_eq!(RosterUpdate::decode(&bytes).unwrap(), *p);
        }
        let got: Vec<RosterStudent> = parts.iter().flat_map(|p| p.students.clone()).collect();
        assert_eq!(got, students);
        let got: Vec<String> = parts.iter().flat_map(|p| p.removed.clone()).collect();
        assert_eq!(got, removed);
    }

    #[test]
    fn an_empty_snapshot_is_one_valid_part() {
        let parts = split("d", None, 1, vec![], vec![], 64 * 1024);
        assert_eq!(parts.len(), 1);
        assert!(parts[0].validate().is_ok());
    }
}
