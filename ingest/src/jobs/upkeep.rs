//! Retention cleanup and device health (which also records changes of device enablement).

use super::JobContext;
use crate::db::DbError;
use crate::db::settings::{self, Setting};
use chrono::{DateTime, Duration, Utc};
use tokio_postgres::Transaction;

/// Deletes attendance data older than DATA_RETENTION_YEARS (default 7; 365-day years, as
/// CampsHub360 counts), children before parents since the database has no ON DELETE actions:
/// records, snapshots and correction requests of old sessions, then the sessions; statistics
/// ending before the cutoff; audit rows older than the cutoff (CampsHub360 keeps them only one
/// year; here they follow the same retention). Also ingest's own ledger, dead letters and job
/// history past `jobs.ledger_retention_days`.
pub async fn retention(
    tx: &Transaction<'_>,
    ctx: &JobContext,
    now: DateTime<Utc>,
) -> Result<serde_json::Value, DbError> {
    let years = settings::get(
        tx,
        Setting::DataRetentionYears,
        ctx.default_retention_years as f64,
    )
    .await?;
    let cutoff_t = now - Duration::days((years * 365.0) as i64);
    let cutoff = cutoff_t.date_naive();
    tx.execute(
        "CREATE TEMP TABLE rollcall_old_sessions ON COMMIT DROP AS
         SELECT id FROM attendance_session WHERE scheduled_date < $1",
        &[&cutoff],
    )
    .await?;
    let q = |table: &str| {
        format!("DELETE FROM {table} WHERE session_id IN (SELECT id FROM rollcall_old_sessions)")
    };
    let records = tx.execute(&q("attendance_record"), &[]).await?;
    let snapshots = tx.execute(&q("attendance_student_snapshot"), &[]).await?;
    let corrections = tx.execute(&q("attendance_correction_request"), &[]).await?;
    let sessions = tx
        .execute(
            "DELETE FROM attendance_session WHERE id IN (SELECT id FROM rollcall_old_sessions)",
            &[],
        )
        .await?;
    let stats = tx
        .execute(
            "DELETE FROM attendance_statistics WHERE period_end < $1",
            &[&cutoff],
        )
        .await?;
    let audit = tx
        .execute(
            "DELETE FROM attendance_audit_log WHERE created_at < $1",
            &[&cutoff_t],
        )
        .await?;
    let ledger_cut = now - Duration::days(ctx.ledger_retention_days.max(1));
    let ledger = tx
        .execute(
            "DELETE FROM rollcall.ledger WHERE received_at < $1",
            &[&ledger_cut],
        )
        .await?;
    tx.execute(
        "DELETE FROM rollcall.device_cursor c WHERE c.last_commit_at < $1
           AND NOT EXISTS (SELECT 1 FROM rollcall.ledger l WHERE l.device_id = c.device_id AND l.epoch = c.epoch)",
        &[&ledger_cut],
    )
    .await?;
    let dead = tx
        .execute(
            "DELETE FROM rollcall.dead_letter WHERE received_at < $1",
            &[&ledger_cut],
        )
        .await?;
    tx.execute(
        "DELETE FROM rollcall.job_run WHERE started_at < $1",
        &[&ledger_cut],
    )
    .await?;
    tx.execute(
        "DELETE FROM rollcall.job_stamp WHERE stamp < $1",
        &[&ledger_cut],
    )
    .await?;
    Ok(serde_json::json!({
        "cutoff": cutoff.to_string(), "records": records, "snapshots": snapshots, "corrections": corrections,
        "sessions": sessions, "statistics": stats, "audit": audit, "ledger": ledger, "dead_letters": dead,
    }))
}

/// Marks devices silent past the threshold (`status = 'error'`, health `silent`) and flags rooms
/// whose session has been open for ten minutes without a single punch from the room.
pub async fn device_health(
    tx: &Transaction<'_>,
    ctx: &JobContext,
    now: DateTime<Utc>,
) -> Result<serde_json::Value, DbError> {
    let silent_since = now - Duration::seconds(ctx.device_silent_after_s);
    let silent = tx
        .query(
            "UPDATE attendance_biometric_device SET status = 'error', updated_at = $1
             WHERE is_enabled AND status = 'active' AND (last_seen IS NULL OR last_seen < $2)
             RETURNING device_id::text",
            &[&now, &silent_since],
        )
        .await?;
    let silent: Vec<String> = silent.iter().map(|r| r.get(0)).collect();
    tx.execute(
        "UPDATE rollcall.device_status SET health = 'silent', health_since = $1
         WHERE device_id = ANY($2) AND health <> 'silent'",
        &[&now, &silent],
    )
    .await?;
    let still_silent: i64 = tx
        .query_one(
            "SELECT count(*) FROM attendance_biometric_device WHERE is_enabled AND (last_seen IS NULL OR last_seen < $1)",
            &[&silent_since],
        )
        .await?
        .get(0);
    let flagged = tx
        .query(
            "INSERT INTO rollcall.room_alert (session_id, kind, room, detected_at)
             SELECT s.id, 'no_punches', s.room, $1 FROM attendance_session s
             WHERE s.status = 'open' AND s.actual_start_datetime < $1::timestamptz - interval '10 minutes' AND s.room <> ''
               AND EXISTS (SELECT 1 FROM attendance_biometric_device d WHERE d.room = s.room AND d.is_enabled)
               AND NOT EXISTS (SELECT 1 FROM rollcall.ledger l WHERE l.session_id = s.id)
               AND NOT EXISTS (SELECT 1 FROM rollcall.ledger l JOIN attendance_biometric_device d ON d.device_id = l.device_id
                               WHERE d.room = s.room AND l.received_at >= s.actual_start_datetime)
             ON CONFLICT (session_id, kind) DO NOTHING
             RETURNING room::text",
            &[&now],
        )
        .await?;
    let rooms: Vec<String> = flagged.iter().map(|r| r.get(0)).collect();
    tx.execute(
        "UPDATE rollcall.room_alert a SET cleared_at = $1 WHERE cleared_at IS NULL
           AND (EXISTS (SELECT 1 FROM rollcall.ledger l WHERE l.session_id = a.session_id)
                OR NOT EXISTS (SELECT 1 FROM attendance_session s WHERE s.id = a.session_id AND s.status = 'open'))",
        &[&now],
    )
    .await?;
    // A device disabled or re-enabled between its messages is noticed within one run, so its
    // punches are judged by the state they were captured in.
    let enablement_changes = crate::db::devices::observe_enablement(tx, None, now).await?;
    if !silent.is_empty() || !rooms.is_empty() {
        tracing::warn!(newly_silent = ?silent, rooms_without_punches = ?rooms, "device health");
    }
    Ok(serde_json::json!({
        "newly_silent": silent, "silent_total": still_silent, "rooms_without_punches": rooms,
        "enablement_changes": enablement_changes,
    }))
}
