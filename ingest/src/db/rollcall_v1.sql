-- rollcall schema, version 1: ledger, cursors, dead letters, job runs, device status.
CREATE TABLE rollcall.ledger (
    device_id      varchar(100) NOT NULL,
    epoch          bigint       NOT NULL, -- the u64 journal epoch, bit-cast to i64
    seq            bigint       NOT NULL,
    event_id       uuid         NOT NULL,
    captured_at    timestamptz  NOT NULL, -- by the device's clock
    effective_at   timestamptz  NOT NULL, -- corrected by the known clock offset
    received_at    timestamptz  NOT NULL,
    credential     text         NOT NULL,
    subject        text         NOT NULL,
    reader_id      text         NOT NULL,
    reader_kind    text         NOT NULL,
    score          integer,
    flags          bigint       NOT NULL,
    ntp_synced     boolean      NOT NULL,
    clock_offset_ms bigint,
    boot_id        uuid         NOT NULL,
    monotonic_ms   bigint       NOT NULL,
    outcome        text         NOT NULL CHECK (outcome IN
                   ('recorded','duplicate','unknown_credential','no_session','not_enrolled','rejected')),
    detail         text         NOT NULL,
    session_id     bigint,
    student_id     uuid,
    mark           text,
    node           text         NOT NULL,
    PRIMARY KEY (device_id, epoch, seq)
);
CREATE INDEX ledger_received_at ON rollcall.ledger (received_at);
CREATE INDEX ledger_session ON rollcall.ledger (session_id) WHERE session_id IS NOT NULL;

CREATE TABLE rollcall.device_cursor (
    device_id      varchar(100) NOT NULL,
    epoch          bigint       NOT NULL,
    contiguous_seq bigint       NOT NULL, -- every seq 1..=contiguous_seq is in the ledger (the ack)
    max_seq        bigint       NOT NULL, -- highest seq seen; above contiguous_seq means a gap
    punches        bigint       NOT NULL,
    first_seen     timestamptz  NOT NULL,
    last_commit_at timestamptz  NOT NULL,
    PRIMARY KEY (device_id, epoch)
);

-- Seqs that never arrived (first 10,000 after each cursor).
CREATE VIEW rollcall.gaps AS
SELECT c.device_id, c.epoch, s.seq AS missing_seq
FROM rollcall.device_cursor c
CROSS JOIN LATERAL generate_series(c.contiguous_seq + 1, LEAST(c.max_seq, c.contiguous_seq + 10000)) AS s(seq)
WHERE c.max_seq > c.contiguous_seq
  AND NOT EXISTS (SELECT 1 FROM rollcall.ledger l
                  WHERE l.device_id = c.device_id AND l.epoch = c.epoch AND l.seq = s.seq);

CREATE TABLE rollcall.dead_letter (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    topic        text        NOT NULL,
    device_id    text,
    reason       text        NOT NULL,
    detail       text        NOT NULL,
    payload      bytea       NOT NULL, -- first 64 KiB
    payload_size integer     NOT NULL,
    node         text        NOT NULL
);
CREATE INDEX dead_letter_received_at ON rollcall.dead_letter (received_at);

-- One row per job occurrence: the claim (exactly one replica inserts it) and its history.
CREATE TABLE rollcall.job_run (
    job         text        NOT NULL,
    slot        timestamptz NOT NULL,
    node        text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    status      text        NOT NULL CHECK (status IN ('ok','failed')),
    detail      jsonb       NOT NULL,
    PRIMARY KEY (job, slot)
);

CREATE TABLE rollcall.device_status (
    device_id      varchar(100) PRIMARY KEY,
    last_status_at timestamptz  NOT NULL,
    version        text         NOT NULL,
    online         boolean      NOT NULL,
    status         jsonb        NOT NULL,
    health         text         NOT NULL, -- ok | silent | readers_unhealthy | offline
    health_since   timestamptz  NOT NULL
);

-- Rooms with an open session but no punches (device health job).
CREATE TABLE rollcall.room_alert (
    session_id  bigint      NOT NULL,
    kind        text        NOT NULL,
    room        varchar(64) NOT NULL,
    detected_at timestamptz NOT NULL,
    cleared_at  timestamptz,
    PRIMARY KEY (session_id, kind)
);
