//! Rollcall's wire contract between a gateway (rollcalld) and the centre (rollcall-ingest).
//!
//! * [`v1`]: the version-1 messages (punch batch, ack, status heartbeat), their CBOR encoding
//!   and their validation. Every decode is bounded in size and returns a typed error.
//! * [`topic`]: the MQTT topic names, `rollcall/v1/<site>/<device_id>/<kind>`, in one place.
//! * [`uplink`]: the sans-IO uplink state machine: what to publish, what an ack allows to be
//!   deleted, when to retransmit. No I/O, no clock reads: time is an argument.
//!
//! This crate has no tokio, no sockets and no clock reads, so both sides and the tests share
//! exactly one definition of the contract.
#![deny(missing_docs)]

pub mod topic;
pub mod uplink;
pub mod v1;
