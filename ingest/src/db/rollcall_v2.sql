-- rollcall schema, version 2: every message reaches a final state (issue 7).
--
-- * A refused punch is a ledger row like any other (so it is acked, kept once, and never applied
--   later): `reason` holds the refusal code of a `rejected` or `held` punch.
-- * `held`: a punch whose clock cannot be trusted and could not be corrected; kept out of
--   attendance for a person to review.
-- * A punch whose capture time is out of range has no timestamp to store.
ALTER TABLE rollcall.ledger ADD COLUMN reason text;
ALTER TABLE rollcall.ledger ALTER COLUMN captured_at DROP NOT NULL;
ALTER TABLE rollcall.ledger ALTER COLUMN effective_at DROP NOT NULL;
ALTER TABLE rollcall.ledger DROP CONSTRAINT ledger_outcome_check;
ALTER TABLE rollcall.ledger ADD CONSTRAINT ledger_outcome_check CHECK (outcome IN
    ('recorded','duplicate','unknown_credential','no_session','not_enrolled','rejected','held'));
CREATE INDEX ledger_held ON rollcall.ledger (device_id, boot_id) WHERE outcome = 'held';

-- Each change of attendance_biometric_device.is_enabled as Rollcall observed it (when it
-- processes the device's messages, and every minute in the upkeep job), so a punch is judged by
-- the device's state when it was captured, not when it arrived. The first row of a device has
-- since = '-infinity': before Rollcall first saw it, it is taken to have been as it was then.
CREATE TABLE rollcall.device_enablement (
    device_id  varchar(100) NOT NULL,
    since      timestamptz  NOT NULL,
    enabled    boolean      NOT NULL,
    PRIMARY KEY (device_id, since)
);

-- The latest heartbeat of each device per boot: the centre's receive time against the device's
-- monotonic clock (CLOCK_BOOTTIME), so a punch of the same boot stamped by a wrong wall clock can
-- be placed in true time.
CREATE TABLE rollcall.clock_anchor (
    device_id    varchar(100) NOT NULL,
    boot_id      uuid         NOT NULL,
    monotonic_ms bigint       NOT NULL,
    received_at  timestamptz  NOT NULL,
    PRIMARY KEY (device_id, boot_id)
);

-- Messages from devices that are not registered: one row per device and kind, counted, instead
-- of a dead letter per heartbeat.
CREATE TABLE rollcall.refused_device (
    device_id  varchar(100) NOT NULL,
    kind       text         NOT NULL, -- status | punches
    reason     text         NOT NULL,
    first_seen timestamptz  NOT NULL,
    last_seen  timestamptz  NOT NULL,
    messages   bigint       NOT NULL,
    PRIMARY KEY (device_id, kind)
);
