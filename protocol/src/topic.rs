//! MQTT topic names, in one place.
//!
//! ```text
//! rollcall/v1/<site>/<device_id>/punches   device -> centre  PunchBatch  QoS 1
//! rollcall/v1/<site>/<device_id>/ack       centre -> device  Ack         QoS 1
//! rollcall/v1/<site>/<device_id>/status    device -> centre  Status      QoS 1, retained, last will
//! ```
//!
//! The broker's ACL should let a device publish only under its own `<device_id>` (Mosquitto:
//! `pattern write rollcall/v1/+/%u/#` with the device id as the user name or certificate CN), and
//! the centre checks that the topic's device and the payload's device agree.

use crate::v1::valid_id;

/// The first levels of every Rollcall topic.
pub const PREFIX: &str = "rollcall/v1";
/// The shared subscription ingest replicas use to split the punch load.
pub const SHARED_PUNCHES: &str = "$share/rollcall-ingest/rollcall/v1/+/+/punches";
/// Every device's punches (non-shared; for tools and tests).
pub const ALL_PUNCHES: &str = "rollcall/v1/+/+/punches";
/// Every device's status.
pub const ALL_STATUS: &str = "rollcall/v1/+/+/status";

/// What a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// [`crate::v1::PunchBatch`], device -> centre.
    Punches,
    /// [`crate::v1::Ack`], centre -> device.
    Ack,
    /// [`crate::v1::Status`], device -> centre.
    Status,
}

impl Kind {
    /// The last topic level.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Punches => "punches",
            Kind::Ack => "ack",
            Kind::Status => "status",
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
