-- rollcall schema, version 4: living next to CampsHub360's Django app and Celery beat (issue 15).

-- The "now" of every committed run of a job that writes CampsHub360 rows stamped with it
-- (generate_sessions: attendance_session.created_at; open_close: the auto_open / auto_close
-- audit rows' created_at; statistics: attendance_statistics.updated_at). A recent row carrying
-- no stamp of ours was written by another writer: `rollcall-ingest check` names it.
CREATE TABLE rollcall.job_stamp (
    job   text        NOT NULL,
    stamp timestamptz NOT NULL,
    PRIMARY KEY (job, stamp)
);

-- The accounts_user row that Rollcall's audit rows name in performed_by_id (Django's
-- full_clean() refuses an audit row without one). One row at most; none: performed_by_id NULL.
CREATE TABLE rollcall.system_user (
    one     boolean     PRIMARY KEY DEFAULT true CHECK (one),
    user_id uuid        NOT NULL,
    name    text        NOT NULL,   -- campus.system_user as configured (an email or a uuid)
    set_at  timestamptz NOT NULL
);
