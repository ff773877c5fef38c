//! MQTT topic names, in one place.
//!
//! ```text
//! rollcall/v1/<site>/<device_id>/punches   device -> centre  PunchBatch  QoS 1
//! rollcall/v1/<site>/<device_id>/ack       centre -> device  Ack         QoS 1
//! rollcall/v1/<site>/<device_id>/status    device -> centre  Status      QoS 1, retained, last will
//! rollcall/v1/<site>/<device_id>/roster    centre -> device  RosterUpdate  QoS 1
//! rollcall/v1/<site>/<device_id>/roster-ack device -> centre RosterAck   QoS 1
//! rollcall/v1/<site>/<device_id>/enrol     device -> centre  Enrolment   QoS 1
//! rollcall/v1/<site>/<device_id>/command   centre -> device  Command     QoS 1
//! ```
//!
//! The broker's ACL lets a device publish only its own punches, status, roster acks and
//! enrolments, and read only its own acks, roster and commands (Mosquitto: [`device_acl`], with
//! the device id as the user name or certificate CN); the centre checks that the topic's device
//! and the payload's device agree.

use crate::v1::valid_id;

/// The first levels of every Rollcall topic.
pub const PREFIX: &str = "rollcall/v1";
/// The shared subscription ingest replicas use to split the punch load.
pub const SHARED_PUNCHES: &str = "$share/rollcall-ingest/rollcall/v1/+/+/punches";
/// Every device's punches (non-shared; for tools and tests).
pub const ALL_PUNCHES: &str = "rollcall/v1/+/+/punches";
/// Every device's status.
pub const ALL_STATUS: &str = "rollcall/v1/+/+/status";
/// Every device's roster acks (shared among ingest replicas).
pub const SHARED_ROSTER_ACKS: &str = "$share/rollcall-ingest/rollcall/v1/+/+/roster-ack";
/// Every device's enrolments (shared among ingest replicas).
pub const SHARED_ENROLMENTS: &str = "$share/rollcall-ingest/rollcall/v1/+/+/enrol";

/// The Mosquitto ACL entry for the centre's user (`rollcall-ingest` by default): it reads what
/// devices send and writes what they read, for every device.
pub fn centre_acl(user: &str) -> String {
    let mut acl = format!("user {user}\n");
    for (k, access) in [
        (Kind::Punches, "read"),
        (Kind::Status, "read"),
        (Kind::RosterAck, "read"),
        (Kind::Enrol, "read"),
        (Kind::Ack, "write"),
        (Kind::Roster, "write"),
        (Kind::Command, "write"),
    ] {
        acl.push_str(&format!("topic {access} {PREFIX}/+/+/{}\n", k.as_str()));
    }
    acl
}

/// The Mosquitto ACL patterns for devices (`%u` is the device id: the user name, or the
/// certificate's CN with `use_identity_as_username`): each device writes and reads only its own
/// topics, in the directions of the table above.
pub fn device_acl() -> String {
    [
        (Kind::Punches, "write"),
        (Kind::Status, "write"),
        (Kind::RosterAck, "write"),
        (Kind::Enrol, "write"),
        (Kind::Ack, "read"),
        (Kind::Roster, "read"),
        (Kind::Command, "read"),
    ]
    .iter()
    .map(|(k, access)| format!("pattern {access} {PREFIX}/+/%u/{}\n", k.as_str()))
    .collect()
}

/// What a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// [`crate::v1::PunchBatch`], device -> centre.
    Punches,
    /// [`crate::v1::Ack`], centre -> device.
    Ack,
    /// [`crate::v1::Status`], device -> centre.
    Status,
    /// [`crate::v1::RosterUpdate`], centre -> device.
    Roster,
    /// [`crate::v1::RosterAck`], device -> centre.
    RosterAck,
    /// [`crate::v1::Enrolment`], device -> centre.
    Enrol,
    /// [`crate::v1::Command`], centre -> device.
    Command,
}

impl Kind {
    /// The last topic level.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Punches => "punches",
            Kind::Ack => "ack",
            Kind::Status => "status",
            Kind::Roster => "roster",
            Kind::RosterAck => "roster-ack",
            Kind::Enrol => "enrol",
            Kind::Command => "command",
        }
    }
}

/// A parsed Rollcall topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic<'a> {
    /// Campus / site id.
    pub site: &'a str,
    /// The device the topic belongs to (its `attendance_biometric_device.device_id`).
    pub device_id: &'a str,
    /// What it carries.
    pub kind: Kind,
}

/// A topic that is not a Rollcall v1 topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a rollcall/v1 topic: {0:?}")]
pub struct TopicError(pub String);

/// Builds the topic for `kind` of one device. Ids must satisfy [`valid_id`] (config validation
/// guarantees it on both sides).
pub fn build(site: &str, device_id: &str, kind: Kind) -> String {
    format!("{PREFIX}/{site}/{device_id}/{}", kind.as_str())
}

/// Parses a topic string.
pub fn parse(topic: &str) -> Result<Topic<'_>, TopicError> {
    let err = || TopicError(topic.chars().take(200).collect());
    let rest = topic
        .strip_prefix(PREFIX)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(err)?;
    let mut parts = rest.split('/');
    let (Some(site), Some(device_id), Some(kind), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(err());
    };
    if !valid_id(site) || !valid_id(device_id) {
        return Err(err());
    }
    let kind = match kind {
        "punches" => Kind::Punches,
        "ack" => Kind::Ack,
        "status" => Kind::Status,
        "roster" => Kind::Roster,
        "roster-ack" => Kind::RosterAck,
        "enrol" => Kind::Enrol,
        "command" => Kind::Command,
        _ => return Err(err()),
    };
    Ok(Topic {
        site,
        device_id,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses_round_trip() {
        let t = build("north-campus", "room-101", Kind::Punches);
        assert_eq!(t, "rollcall/v1/north-campus/room-101/punches");
        assert_eq!(
            parse(&t),
            Ok(Topic {
                site: "north-campus",
                device_id: "room-101",
                kind: Kind::Punches
            })
        );
    }

    #[test]
    fn credential_topics_round_trip() {
        for (kind, last) in [
            (Kind::Roster, "roster"),
            (Kind::RosterAck, "roster-ack"),
            (Kind::Enrol, "enrol"),
            (Kind::Command, "command"),
        ] {
            let t = build("s", "room-101", kind);
            assert_eq!(t, format!("rollcall/v1/s/room-101/{last}"));
            assert_eq!(parse(&t).map(|t| t.kind), Ok(kind));
        }
    }

    #[test]
    fn the_device_acl_gives_each_direction_its_topics() {
        let acl = device_acl();
        let lines: Vec<&str> = acl.lines().collect();
        assert_eq!(
            lines,
            [
                "pattern write rollcall/v1/+/%u/punches",
                "pattern write rollcall/v1/+/%u/status",
                "pattern write rollcall/v1/+/%u/roster-ack",
                "pattern write rollcall/v1/+/%u/enrol",
                "pattern read rollcall/v1/+/%u/ack",
                "pattern read rollcall/v1/+/%u/roster",
                "pattern read rollcall/v1/+/%u/command",
            ]
        );
    }

    #[test]
    fn rejects_foreign_and_malformed_topics() {
        for t in [
            "rollcall/v2/s/d/punches",
            "rollcall/v1/s/d",
            "rollcall/v1/s/d/punches/extra",
            "rollcall/v1/s/d/unknown",
            "rollcall/v1/s/+/punches",
            "rollcall/v1//d/punches",
            "other/v1/s/d/ack",
        ] {
            assert!(parse(t).is_err(), "{t} should be rejected");
        }
    }
}
