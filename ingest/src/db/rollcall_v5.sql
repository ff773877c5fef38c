-- rollcall schema, version 5: credentials owned by the centre (issue 9).

-- Consent to biometric processing (GDPR art. 9, India's DPDP Act 2023), one row per student with
-- its latest state; every grant and withdrawal is also kept in consent_event. Fingerprint
-- enrolment is refused without a current grant; cards need none.
CREATE TABLE rollcall.consent (
    student_id   uuid        PRIMARY KEY,
    granted_at   timestamptz NOT NULL,
    granted_by   text        NOT NULL,
    method       text        NOT NULL,  -- how it was given: "paper form 2026/114", "portal"
    withdrawn_at timestamptz,
    withdrawn_by text
);

CREATE TABLE rollcall.consent_event (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    student_id uuid        NOT NULL,
    at         timestamptz NOT NULL,
    action     text        NOT NULL CHECK (action IN ('granted', 'withdrawn')),
    by_whom    text        NOT NULL,
    method     text        NOT NULL
);

-- Every credential, its secret sealed with AES-256-GCM under a centre key (key_id names it in
-- the key file), the associated data being the row's identity (id, student, kind) so a
-- ciphertext moved to another row fails to open. Revocation destroys the ciphertext
-- (key_id, nonce and ciphertext set to NULL, destroyed_at set); the row stays as the record
-- that the credential existed and when it went.
CREATE TABLE rollcall.credential (
    id              uuid        PRIMARY KEY, -- the enrolment id the gateway chose
    student_id      uuid        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('card', 'fingerprint')),
    format          text        NOT NULL,    -- card | ef01 | iso19794-2
    sensor          text        NOT NULL,
    quality         smallint,
    enrolled_at     timestamptz NOT NULL,
    enrolled_device varchar(100) NOT NULL,
    enrolled_reader text        NOT NULL,
    enrolled_by     text        NOT NULL,
    digest          bytea       NOT NULL,    -- keyed BLAKE3 of the secret (the digest key)
    key_id          text,
    nonce           bytea,
    ciphertext      bytea,
    revoked_at      timestamptz,
    revoked_reason  text,
    destroyed_at    timestamptz,
    CHECK ((revoked_at IS NULL) = (ciphertext IS NOT NULL))
);
CREATE INDEX credential_student ON rollcall.credential (student_id) WHERE revoked_at IS NULL;
-- One card belongs to one student at a time.
CREATE UNIQUE INDEX credential_card_once ON rollcall.credential (digest)
    WHERE kind = 'card' AND revoked_at IS NULL;

-- The verdict on every enrolment a device sent, so a re-sent one gets the same answer.
CREATE TABLE rollcall.enrolment_verdict (
    enrolment_id uuid        PRIMARY KEY,
    device_id    varchar(100) NOT NULL,
    accepted     boolean     NOT NULL,
    detail       text        NOT NULL,
    decided_at   timestamptz NOT NULL
);

-- Each device's roster: its version (only grows), what the device last acknowledged, and what
-- its readers take. A device gets a roster once it has said hello with a roster ack.
CREATE TABLE rollcall.roster_device (
    device_id         varchar(100) PRIMARY KEY,
    site              text        NOT NULL,   -- from its topic: where to publish its roster
    version           bigint      NOT NULL DEFAULT 0,
    acked_version     bigint      NOT NULL DEFAULT 0,
    want_snapshot     boolean     NOT NULL DEFAULT true,
    accepts           text[]      NOT NULL DEFAULT '{}',
    templates_loaded  integer,
    capacity          integer,
    failures          jsonb       NOT NULL DEFAULT '[]',
    acked_at          timestamptz,
    published_version bigint,
    published_at      timestamptz,
    floor_version     bigint      NOT NULL DEFAULT 0, -- removals up to here are forgotten
    changed_at        timestamptz
);

-- Who is on each device's roster, with a digest of their credentials there, and the version in
-- which that entry last changed (a removal is kept as a tombstone until the device has it).
CREATE TABLE rollcall.roster_member (
    device_id       varchar(100) NOT NULL,
    student_id      uuid        NOT NULL,
    digest          text        NOT NULL,
    changed_version bigint      NOT NULL,
    removed         boolean     NOT NULL,
    PRIMARY KEY (device_id, student_id)
);
CREATE INDEX roster_member_changes ON rollcall.roster_member (device_id, changed_version);

-- Commands for devices, queued by the command line and published by the service.
CREATE TABLE rollcall.device_command (
    command_id   uuid        PRIMARY KEY,
    device_id    varchar(100) NOT NULL,
    action       jsonb       NOT NULL,
    queued_at    timestamptz NOT NULL,
    queued_by    text        NOT NULL,
    published_at timestamptz
);
CREATE INDEX device_command_pending ON rollcall.device_command (queued_at) WHERE published_at IS NULL;
