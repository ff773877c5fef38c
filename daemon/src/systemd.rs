//! systemd integration: `Type=notify` readiness and the watchdog.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Tells systemd that rollcalld is ready (journal open, tasks started).
pub fn ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::debug!(error = %e, "sd_notify READY not sent");
    }
}

/// Tells systemd that rollcalld is stopping.
pub fn stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// Feeds the watchdog at half its interval while the runtime is responsive; a hung runtime
/// stops feeding it and systemd restarts the service.
pub async fn watchdog(stop: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval((interval / 2).max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        }
    }
}
