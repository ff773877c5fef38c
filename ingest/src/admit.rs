//! Before the attendance rules: may this punch count at all, and at what instant? Pure, like
//! [`decide`](crate::decide): the device row, its enablement history and its clock anchors come
//! in as values, `now` as an argument.
//!
//! Every message the centre receives reaches a final state, and a punch that cannot count is
//! not an error but a ledger row with an outcome and a [`Reason`]: it is acked like any other
//! (the device's acknowledged position always moves on), the ack tells the device why, and a
//! re-send is a replay of a key the ledger already holds, so nothing is repeated and nothing is
//! applied later by surprise.
//!
//! The rules, in order:
//! 1. a punch PostgreSQL refused once is stored again with its text escaped, as
//!    `database_rejected`;
//! 2. a punch whose values break the contract (`v1::Punch::check`) is `invalid_punch`;
//! 3. a device not in `attendance_biometric_device` is `unknown_device`;
//! 4. a clock that cannot be trusted (more than `max_future_skew_s` ahead, or unsynced, before
//!    2020 and without an offset) is corrected from the device's heartbeat of the same boot when
//!    there is one (true time = heartbeat receive time - (heartbeat monotonic - punch
//!    monotonic)); otherwise the punch is `held` (`clock_ahead` / `clock_unset`) for a person;
//! 5. a device disabled when the punch was captured (by Rollcall's record of its enablement,
//!    not its state now) is `disabled_device`: re-enabling it later never applies it;
//! 6. a SIMULATED punch from a device not configured as a demo is `simulated`.

use crate::decide::DeviceInfo;
use crate::punch::PunchIn;
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use uuid::Uuid;

/// Unix time of 2020-01-01: an unsynced clock before it was never set.
const CLOCK_SET_AFTER_S: i64 = 1_577_836_800;

/// Why a punch was refused (`rejected`) or `held`: `rollcall.ledger.reason`, and the code in
/// the device's ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// PostgreSQL refused the punch's rows; stored again with its text escaped.
    DatabaseRejected,
    /// A value breaks the contract (time, offset, ids).
    InvalidPunch,
    /// The device is not registered.
    UnknownDevice,
    /// The device's clock was ahead and no heartbeat of its boot could correct it.
    ClockAhead,
    /// The device's clock was never set and no heartbeat of its boot could correct it.
    ClockUnset,
    /// The device was disabled when the punch was captured.
    DisabledDevice,
    /// A simulated reader's punch from a device that is not a demo.
    Simulated,
    /// The device has no room, so no session can be found.
    DeviceNoRoom,
}

impl Reason {
    /// Stable spelling (ledger column, ack refusal code, metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::DatabaseRejected => "database_rejected",
            Reason::InvalidPunch => "invalid_punch",
            Reason::UnknownDevice => "unknown_device",
            Reason::ClockAhead => "clock_ahead",
            Reason::ClockUnset => "clock_unset",
            Reason::DisabledDevice => "disabled_device",
            Reason::Simulated => "simulated",
            Reason::DeviceNoRoom => "device_no_room",
        }
    }

    /// What a person should do, sent to the device with the refusal.
    pub fn remedy(self) -> &'static str {
        match self {
            Reason::DatabaseRejected => {
                "the centre's database refused this punch; it is kept in rollcall.ledger: report it"
            }
            Reason::InvalidPunch => {
                "a value is out of range (clock or ids): check the device's clock and roster"
            }
            Reason::UnknownDevice => {
                "this device is not registered at the centre: register it in attendance_biometric_device"
            }
            Reason::ClockAhead | Reason::ClockUnset => {
                "the device clock is wrong: fix NTP; held punches are kept in rollcall.ledger for review"
            }
            Reason::DisabledDevice => {
                "this device is disabled at the centre: its punches are kept but not counted"
            }
            Reason::Simulated => {
                "simulated readers count only on devices listed in [attendance] demo_devices"
            }
            Reason::DeviceNoRoom => {
                "the device has no room at the centre: set attendance_biometric_device.room"
            }
        }
    }
}

/// A heartbeat's moment: the centre's receive time against the device's monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// CLOCK_BOOTTIME of the device when it sent the heartbeat.
    pub monotonic_ms: u64,
    /// When the centre received it.
    pub received_at: DateTime<Utc>,
}

/// A device's enablement as observed: from when (`None`: since always), and the state.
pub type EnablementChange = (Option<DateTime<Utc>>, bool);

/// What Rollcall knows about devices beyond their rows.
#[derive(Debug, Clone, Default)]
pub struct DeviceFacts {
    /// Per device, its enablement changes as observed, oldest first; `None` = since always.
    pub enablement: HashMap<String, Vec<EnablementChange>>,
    /// Per (device, boot id), its latest heartbeat.
    pub anchors: HashMap<(String, Uuid), Anchor>,
}

impl DeviceFacts {
    /// Whether `device` was enabled at `t`, by the observed history; `now` when there is none.
    pub fn enabled_at(&self, device: &DeviceInfo, t: DateTime<Utc>) -> bool {
        let Some(history) = self.enablement.get(&device.device_id) else {
            return device.enabled;
        };
        history
            .iter()
            .rev()
            .find(|(since, _)| since.is_none_or(|s| s <= t))
            .map_or(device.enabled, |(_, enabled)| *enabled)
    }
}

/// The limits that apply to time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Now, on the centre's clock (passed in: the rules never read the clock).
    pub now: DateTime<Utc>,
    /// How far ahead of `now` a capture time may be.
    pub max_future: Duration,
}

/// A punch that may count, and the instant it counts at.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted<'a> {
    /// The device's row, for the decision.
    pub device: &'a DeviceInfo,
    /// The instant on the true clock.
    pub at: DateTime<Utc>,
    /// How the instant was corrected, when it was.
    pub note: Option<String>,
}

/// A punch that cannot count.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// `held` or `rejected`.
    pub held: bool,
    /// The refusal code stored in `rollcall.ledger.reason` and sent in the ack.
    pub reason: Reason,
    /// For humans: what was wrong, with the value.
    pub detail: String,
    /// The instant, when one could be told.
    pub at: Option<DateTime<Utc>>,
}

impl Refused {
    fn reject(reason: Reason, detail: impl Into<String>, at: Option<DateTime<Utc>>) -> Self {
        Refused {
            held: false,
            reason,
            detail: detail.into(),
            at,
        }
    }
}

/// Applies the rules of this module's header to one punch.
pub fn admit<'a>(
    p: &PunchIn,
    database_refused: Option<&str>,
    device: Option<&'a DeviceInfo>,
    facts: &DeviceFacts,
    clock: Clock,
) -> Result<Admitted<'a>, Refused> {
    if let Some(why) = database_refused {
        return Err(Refused::reject(Reason::DatabaseRejected, why, None));
    }
    if let Some(problem) = &p.problem {
        return Err(Refused::reject(Reason::InvalidPunch, problem.clone(), None));
    }
    let Some(device) = device else {
        return Err(Refused::reject(
            Reason::UnknownDevice,
            "device not registered in attendance_biometric_device",
            None,
        ));
    };
    let Some(stamped) = DateTime::<Utc>::from_timestamp_millis(p.effective_ms()) else {
        return Err(Refused::reject(
            Reason::InvalidPunch,
            "capture time out of range",
            None,
        ));
    };
    let (at, note) = match untrusted(p, stamped, clock) {
        None => (stamped, None),
        Some(reason) => match corrected(p, &device.device_id, facts, clock) {
            Some(at) => (
                at,
                Some(format!(
                    "clock corrected from a heartbeat of the same boot: device said {stamped}"
                )),
            ),
            None => {
                let detail = match reason {
                    Reason::ClockAhead => format!(
                        "capture time {stamped} is {} s ahead and no heartbeat of boot {} can correct it: held for review",
                        (stamped - clock.now).num_seconds(),
                        p.boot_id
                    ),
                    _ => format!(
                        "device clock not set ({stamped}, unsynced, no offset) and no heartbeat of boot {} can correct it: held for review",
                        p.boot_id
                    ),
                };
                return Err(Refused {
                    held: true,
                    reason,
                    detail,
                    at: Some(stamped),
                });
            }
        },
    };
    if !facts.enabled_at(device, at) {
        return Err(Refused::reject(
            Reason::DisabledDevice,
            format!("device was disabled at {at} (attendance_biometric_device.is_enabled)"),
            Some(at),
        ));
    }
    if p.flags & rollcall_protocol::v1::flags::SIMULATED != 0 && !device.demo {
        return Err(Refused::reject(
            Reason::Simulated,
            "punch from a simulated reader on a device that is not in [attendance] demo_devices",
            Some(at),
        ));
    }
    Ok(Admitted { device, at, note })
}

/// Why the stamped time cannot be trusted, if it cannot.
fn untrusted(p: &PunchIn, stamped: DateTime<Utc>, clock: Clock) -> Option<Reason> {
    if stamped > clock.now + clock.max_future {
        Some(Reason::ClockAhead)
    } else if !p.ntp_synced && p.offset_ms.is_none() && stamped.timestamp() < CLOCK_SET_AFTER_S {
        Some(Reason::ClockUnset)
    } else {
        None
    }
}

/// The true capture time from a heartbeat of the same boot, when it gives a believable one.
fn corrected(
    p: &PunchIn,
    device_id: &str,
    facts: &DeviceFacts,
    clock: Clock,
) -> Option<DateTime<Utc>> {
    let a = facts.anchors.get(&(device_id.to_string(), p.boot_id))?;
    let before_ms = i64::try_from(a.monotonic_ms)
        .ok()?
        .checked_sub(i64::try_from(p.monotonic_ms).ok()?)?;
    let at = a
        .received_at
        .checked_sub_signed(Duration::try_milliseconds(before_ms)?)?;
    (at <= clock.now + clock.max_future && at.timestamp() >= CLOCK_SET_AFTER_S).then_some(at)
}

#[cfg(test)]
mod tests;
