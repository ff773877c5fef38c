//! The credential store: consent, enrolments from gateways, revocation and retention.
//!
//! Every secret (a card UID, a template) is sealed by [`KeyRing::seal`] before it reaches
//! PostgreSQL; revocation destroys the ciphertext.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use rollcall_protocol::v1::credentials::FORMAT_CARD;
use rollcall_protocol::v1::{CredentialKind, Enrolment};
use uuid::Uuid;

use super::keys::KeyRing;
use crate::db::DbError;

/// A student as the centre knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Student {
    /// `students_student.id`.
    pub id: Uuid,
    /// `roll_number`.
    pub roll_number: String,
    /// `status` (ACTIVE, GRADUATED, ...).
    pub status: String,
}

/// Finds a student by id (UUID text) or roll number, the two names a punch or an enrolment may
/// carry.
pub async fn find_student(c: &impl GenericClient, name: &str) -> Result<Option<Student>, DbError> {
    let row = match Uuid::parse_str(name) {
        Ok(id) => {
            c.query_opt(
                "SELECT id, roll_number::text, status::text FROM students_student WHERE id = $1",
                &[&id],
            )
            .await?
        }
        Err(_) => {
            c.query_opt(
                "SELECT id, roll_number::text, status::text FROM students_student WHERE roll_number = $1",
                &[&name],
            )
            .await?
        }
    };
    Ok(row.map(|r| Student {
        id: r.get(0),
        roll_number: r.get(1),
        status: r.get(2),
    }))
}

/// The centre's verdict on an enrolment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Stored (or stored before: a re-sent enrolment).
    pub accepted: bool,
    /// For a person.
    pub detail: String,
}

impl Verdict {
    fn refuse(detail: impl Into<String>) -> Self {
        Self {
            accepted: false,
            detail: detail.into(),
        }
    }
}

/// Most active fingerprint templates per student (ten fingers). With the protocol's 16 KiB per
/// template this keeps one student's roster entry far below a message, so rosters always split.
pub const MAX_FINGERPRINTS: i64 = 10;
/// Most active cards per student.
pub const MAX_CARDS: i64 = 4;

async fn count_active(c: &impl GenericClient, student: Uuid, kind: &str) -> Result<i64, DbError> {
    Ok(c.query_one(
        "SELECT count(*) FROM rollcall.credential WHERE student_id = $1 AND kind = $2 AND revoked_at IS NULL",
        &[&student, &kind],
    )
    .await?
    .get(0))
}

/// Whether the student's consent to biometric processing is currently recorded.
pub async fn has_consent(c: &impl GenericClient, student: Uuid) -> Result<bool, DbError> {
    Ok(c.query_opt(
        "SELECT 1 FROM rollcall.consent WHERE student_id = $1 AND withdrawn_at IS NULL",
        &[&student],
    )
    .await?
    .is_some())
}

/// Applies one enrolment from a gateway, once: a re-sent enrolment (same id) gets the verdict
/// it got the first time. `leaving` are the student statuses that mean the student has left.
pub async fn enrol(
    c: &impl GenericClient,
    keys: &KeyRing,
    e: &Enrolment,
    leaving: &[String],
    now: DateTime<Utc>,
) -> Result<Verdict, DbError> {
    if let Some(r) = c
        .query_opt(
            "SELECT accepted, detail FROM rollcall.enrolment_verdict WHERE enrolment_id = $1",
            &[&e.enrolment_id],
        )
        .await?
    {
        return Ok(Verdict {
            accepted: r.get(0),
            detail: r.get(1),
        });
    }
    let verdict = judge_and_store(c, keys, e, leaving, now).await?;
    c.execute(
        "INSERT INTO rollcall.enrolment_verdict (enrolment_id, device_id, accepted, detail, decided_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (enrolment_id) DO NOTHING",
        &[&e.enrolment_id, &e.device_id, &verdict.accepted, &verdict.detail, &now],
    )
    .await?;
    Ok(verdict)
}

async fn judge_and_store(
    c: &impl GenericClient,
    keys: &KeyRing,
    e: &Enrolment,
    leaving: &[String],
    now: DateTime<Utc>,
) -> Result<Verdict, DbError> {
    let device = c
        .query_opt(
            "SELECT is_enabled FROM attendance_biometric_device WHERE device_id = $1",
            &[&e.device_id],
        )
        .await?;
    match device {
        None => {
            return Ok(Verdict::refuse(format!(
                "device {} is not registered: register it before enrolling there",
                e.device_id
            )));
        }
        Some(r) if !r.get::<_, bool>(0) => {
            return Ok(Verdict::refuse(format!(
                "device {} is disabled at the centre",
                e.device_id
            )));
        }
        Some(_) => {}
    }
    let Some(student) = find_student(c, &e.student).await? else {
        return Ok(Verdict::refuse(format!(
            "no student {:?} (give the roll number or the student id)",
            e.student
        )));
    };
    if leaving.contains(&student.status) {
        return Ok(Verdict::refuse(format!(
            "student {} has status {}: no enrolment for students who have left",
            student.roll_number, student.status
        )));
    }
    let (kind, format) = match e.kind {
        CredentialKind::Card => ("card", FORMAT_CARD),
        CredentialKind::Fingerprint => ("fingerprint", e.format.as_str()),
    };
    if e.kind == CredentialKind::Fingerprint && !has_consent(c, student.id).await? {
        return Ok(Verdict::refuse(format!(
            "no biometric consent recorded for {}: record it with `rollcall-ingest consent grant {} --by <who> --method <how>`, then enrol again",
            student.roll_number, student.roll_number
        )));
    }
    let (held, most): (i64, i64) = match e.kind {
        CredentialKind::Card => (count_active(c, student.id, "card").await?, MAX_CARDS),
        CredentialKind::Fingerprint => (
            count_active(c, student.id, "fingerprint").await?,
            MAX_FINGERPRINTS,
        ),
    };
    if held >= most {
        return Ok(Verdict::refuse(format!(
            "{} already has {held} active {kind} credentials, the most a student may have: revoke one first (`rollcall-ingest credentials list {0}`)",
            student.roll_number
        )));
    }
    let digest = keys.digest(kind, e.data.as_bytes());
    if e.kind == CredentialKind::Card
        && let Some(r) = c
            .query_opt(
                "SELECT c.student_id, s.roll_number::text FROM rollcall.credential c
                 JOIN students_student s ON s.id = c.student_id
                 WHERE c.kind = 'card' AND c.revoked_at IS NULL AND c.digest = $1",
                &[&digest.as_slice()],
            )
            .await?
    {
        let owner: Uuid = r.get(0);
        return Ok(if owner == student.id {
            Verdict {
                accepted: true,
                detail: format!("card already enrolled for {}", student.roll_number),
            }
        } else {
            Verdict::refuse(format!(
                "card already enrolled for another student ({}): revoke it there first",
                r.get::<_, String>(1)
            ))
        });
    }
    let sealed = keys.seal(e.enrolment_id, student.id, kind, e.data.as_bytes());
    let captured = DateTime::<Utc>::from_timestamp_millis(e.captured_at_ms).unwrap_or(now);
    let quality = e.quality.map(i16::from);
    let inserted = c
        .execute(
            "INSERT INTO rollcall.credential (id, student_id, kind, format, sensor, quality, enrolled_at,
                 enrolled_device, enrolled_reader, enrolled_by, digest, key_id, nonce, ciphertext)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (id) DO NOTHING",
            &[
                &e.enrolment_id,
                &student.id,
                &kind,
                &format,
                &e.sensor,
                &quality,
                &captured,
                &e.device_id,
                &e.reader_id,
                &e.operator,
                &digest.as_slice(),
                &sealed.key_id,
                &sealed.nonce,
                &sealed.ciphertext,
            ],
        )
        .await?;
    Ok(if inserted == 1 {
        Verdict {
            accepted: true,
            detail: format!("{kind} enrolled for {}", student.roll_number),
        }
    } else {
        Verdict::refuse("a credential with this id already exists")
    })
}

/// Records consent (a new grant replaces a withdrawn one).
pub async fn grant_consent(
    c: &impl GenericClient,
    student: Uuid,
    by: &str,
    method: &str,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    c.execute(
        "INSERT INTO rollcall.consent (student_id, granted_at, granted_by, method)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (student_id) DO UPDATE SET granted_at = $2, granted_by = $3, method = $4,
             withdrawn_at = NULL, withdrawn_by = NULL",
        &[&student, &now, &by, &method],
    )
    .await?;
    c.execute(
        "INSERT INTO rollcall.consent_event (student_id, at, action, by_whom, method) VALUES ($1, $2, 'granted', $3, $4)",
        &[&student, &now, &by, &method],
    )
    .await?;
    Ok(())
}

/// Withdraws consent and revokes the student's fingerprint templates at once (destroyed here;
/// the next roster refresh removes them from every gateway and module). Returns how many were
/// revoked.
pub async fn withdraw_consent(
    c: &impl GenericClient,
    student: Uuid,
    by: &str,
    method: &str,
    now: DateTime<Utc>,
) -> Result<u64, DbError> {
    c.execute(
        "UPDATE rollcall.consent SET withdrawn_at = $2, withdrawn_by = $3
         WHERE student_id = $1 AND withdrawn_at IS NULL",
        &[&student, &now, &by],
    )
    .await?;
    c.execute(
        "INSERT INTO rollcall.consent_event (student_id, at, action, by_whom, method) VALUES ($1, $2, 'withdrawn', $3, $4)",
        &[&student, &now, &by, &method],
    )
    .await?;
    revoke(
        c,
        RevokeWhat::Fingerprints(student),
        "consent withdrawn",
        now,
    )
    .await
}

/// What to revoke.
#[derive(Debug, Clone, Copy)]
pub enum RevokeWhat {
    /// One credential.
    One(Uuid),
    /// Every fingerprint template of a student.
    Fingerprints(Uuid),
}

/// Revokes and destroys: the ciphertext, nonce and key id are erased; the row stays as the
/// record of what existed and when it went. Returns how many were revoked.
pub async fn revoke(
    c: &impl GenericClient,
    what: RevokeWhat,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<u64, DbError> {
    let (filter, id) = match what {
        RevokeWhat::One(id) => ("id = $1", id),
        RevokeWhat::Fingerprints(s) => ("student_id = $1 AND kind = 'fingerprint'", s),
    };
    let n = c
        .execute(
            &format!(
                "UPDATE rollcall.credential SET revoked_at = $2, revoked_reason = $3, destroyed_at = $2,
                     key_id = NULL, nonce = NULL, ciphertext = NULL
                 WHERE {filter} AND revoked_at IS NULL"
            ),
            &[&id, &now, &reason],
        )
        .await?;
    Ok(n)
}

/// Retention: revokes the fingerprint templates of students who have left (status in
/// `leaving`, unchanged for `after`) and of students without a current consent (a template
/// enrolled while a withdrawal was being recorded). Returns how many were revoked.
pub async fn apply_retention(
    c: &impl GenericClient,
    leaving: &[String],
    after: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<u64, DbError> {
    let cutoff = now - chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
    let left = c
        .execute(
            "UPDATE rollcall.credential c SET revoked_at = $3, revoked_reason = 'student left: ' || s.status,
                 destroyed_at = $3, key_id = NULL, nonce = NULL, ciphertext = NULL
             FROM students_student s
             WHERE s.id = c.student_id AND c.kind = 'fingerprint' AND c.revoked_at IS NULL
               AND s.status = ANY($1) AND s.updated_at <= $2",
            &[&leaving, &cutoff, &now],
        )
        .await?;
    let unconsented = c
        .execute(
            "UPDATE rollcall.credential c SET revoked_at = $1, revoked_reason = 'no consent',
                 destroyed_at = $1, key_id = NULL, nonce = NULL, ciphertext = NULL
             WHERE c.kind = 'fingerprint' AND c.revoked_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM rollcall.consent k
                               WHERE k.student_id = c.student_id AND k.withdrawn_at IS NULL)",
            &[&now],
        )
        .await?;
    Ok(left + unconsented)
}

/// Re-seals every stored credential under the key ring's current key. Returns how many rows
/// were re-sealed.
pub async fn rewrap(c: &impl GenericClient, keys: &KeyRing) -> Result<u64, super::Error> {
    let rows = c
        .query(
            "SELECT id, student_id, kind, key_id, nonce, ciphertext FROM rollcall.credential
             WHERE revoked_at IS NULL AND key_id <> $1 FOR UPDATE",
            &[&keys.current_id()],
        )
        .await?;
    let mut n = 0;
    for r in rows {
        let (id, student, kind): (Uuid, Uuid, String) = (r.get(0), r.get(1), r.get(2));
        let sealed = super::keys::Sealed {
            key_id: r.get(3),
            nonce: r.get(4),
            ciphertext: r.get(5),
        };
        let secret = keys.open(id, student, &kind, &sealed)?;
        let new = keys.seal(id, student, &kind, &secret);
        c.execute(
            "UPDATE rollcall.credential SET key_id = $2, nonce = $3, ciphertext = $4 WHERE id = $1",
            &[&id, &new.key_id, &new.nonce, &new.ciphertext],
        )
        .await?;
        n += 1;
    }
    Ok(n)
}
