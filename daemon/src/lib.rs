//! rollcalld, the Rollcall edge daemon: readers in, journal on disk, punches out over MQTT.
#![deny(missing_docs)]

pub mod journal;
