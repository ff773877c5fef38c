-- rollcall schema, version 3: ZKTeco PUSH (ADMS / iclock) terminals (issue 14).
--
-- A terminal is identified by its serial number (SN=), which is its
-- attendance_biometric_device.device_id once registered. Its records have no sequence number:
-- each record's natural key (serial, PIN, local time) is given the terminal's next ledger seq
-- once, here, in the same transaction that writes its rollcall.ledger row under
-- (device_id = serial, epoch = ADMS epoch, seq). A record sent again (retry, stamp reset,
-- reboot, a time-range query) finds its key and its seq, and the ledger makes it a replay.

-- One row per serial number that ever called, registered or not (operators' view).
CREATE TABLE rollcall.adms_terminal (
    serial            varchar(100) PRIMARY KEY,
    first_seen        timestamptz  NOT NULL,
    last_seen         timestamptz  NOT NULL,
    last_ip           text,
    user_agent        text         NOT NULL,
    push_version      text         NOT NULL,
    firmware          text         NOT NULL,
    next_seq          bigint       NOT NULL,  -- the seq the next new natural key gets
    attlog_stamp      text,                   -- the terminal's ATTLOG cursor, as last committed
    operlog_stamp     text,
    refused           text,                   -- unknown_device | disabled_device while refused
    refused_since     timestamptz,
    clock_offset_s    bigint,                 -- terminal clock minus true time, last measured
    clock_measured_at timestamptz,
    log_records       bigint,                 -- records in the terminal's log at its last INFO
    log_stored        bigint,                 -- records of it stored here at that moment
    log_counted_at    timestamptz
);

-- Every record received from a terminal, once per natural key, with its ledger seq.
CREATE TABLE rollcall.adms_record (
    serial         varchar(100) NOT NULL,
    pin            varchar(64)  NOT NULL,
    local_time     timestamp    NOT NULL,     -- the terminal's wall clock, as it said
    seq            bigint       NOT NULL,
    status         integer,
    verify         integer,
    workcode       text         NOT NULL,
    received_at    timestamptz  NOT NULL,     -- the centre's clock
    clock_offset_s bigint,                    -- the terminal's offset as measured then
    PRIMARY KEY (serial, pin, local_time),
    UNIQUE (serial, seq)
);

-- Optional: a PIN that is not the student's roll number.
CREATE TABLE rollcall.adms_pin (
    pin        varchar(64) PRIMARY KEY,
    student_id uuid        NOT NULL
);

-- Commands for a terminal's next poll, and their results.
CREATE TABLE rollcall.adms_command (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    serial      varchar(100) NOT NULL,
    command     text         NOT NULL,
    queued_at   timestamptz  NOT NULL,
    queued_by   text         NOT NULL,
    sent_at     timestamptz,
    sent_count  integer      NOT NULL DEFAULT 0,
    return_code bigint,
    result      text,
    done_at     timestamptz
);
CREATE INDEX adms_command_pending ON rollcall.adms_command (serial, id) WHERE done_at IS NULL;

-- Users and enrolments the terminals report (OPERLOG); fingerprint templates are not kept.
CREATE TABLE rollcall.adms_operlog (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    serial      varchar(100) NOT NULL,
    received_at timestamptz  NOT NULL,
    kind        text         NOT NULL,  -- user | finger | other
    pin         text         NOT NULL,
    detail      jsonb        NOT NULL
);

-- What a person must look at: clock jumps, possible silent loss.
CREATE TABLE rollcall.adms_alert (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    serial      varchar(100) NOT NULL,
    kind        text         NOT NULL,  -- clock_jump | silent_loss
    detail      text         NOT NULL,
    detected_at timestamptz  NOT NULL,
    cleared_at  timestamptz
);
CREATE INDEX adms_alert_open ON rollcall.adms_alert (serial) WHERE cleared_at IS NULL;
