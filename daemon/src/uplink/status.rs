//! The status message: what the centre and whoever watches the fleet learn about this device
//! (retained on the status topic, and the broker's last will when it is "offline").

use rollcall_drivers::{ReaderConfig, ReaderHealth};
use rollcall_protocol::uplink::Uplink;
use rollcall_protocol::v1::{ReaderStatus, Refusal, Status};

use super::{UplinkShell, VERSION};
use crate::capture::ReaderHealthMap;

impl UplinkShell {
    /// The status as of now; `online` is false for the last will and the goodbye.
    pub(super) async fn status(
        &self,
        online: bool,
        sm: &Uplink,
        last_refusal: Option<&Refusal>,
    ) -> Status {
        let (now, clock) = crate::clock::now();
        let readers = reader_statuses(&self.config.readers, &self.reader_health.borrow());
        Status {
            device_id: self.config.device.id.clone(),
            version: VERSION.to_owned(),
            online,
            sent_at_ms: now,
            uptime_s: self.started.elapsed().as_secs(),
            epoch: sm.epoch(),
            journal_depth: sm.depth(),
            oldest_unacked_age_s: self.oldest_age_s().await,
            last_acked_seq: (sm.acked() > 0).then_some(sm.acked()),
            readers,
            clock,
            free_disk_bytes: crate::sys::free_bytes(&self.config.device.state_dir),
            last_refusal: last_refusal.cloned(),
        }
    }

    /// Age of the oldest punch not yet acked, in seconds; `None` when the journal is empty.
    pub(super) async fn oldest_age_s(&self) -> Option<u64> {
        let oldest = self.journal.oldest_captured_at_ms().await.ok()??;
        let (now, _) = crate::clock::now();
        Some(((now - oldest).max(0) / 1000) as u64)
    }
}

/// Every configured reader, in config order; one that never reported counts as healthy.
fn reader_statuses(readers: &[ReaderConfig], health: &ReaderHealthMap) -> Vec<ReaderStatus> {
    readers
        .iter()
        .map(|r| {
            let (healthy, detail) = match health.get(&r.id) {
                Some(ReaderHealth::Down(why)) => (false, why.clone()),
                _ => (true, String::new()),
            };
            ReaderStatus {
                id: r.id.clone(),
                kind: r.kind.as_str().to_owned(),
                healthy,
                detail,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(id: &str, kind: &str) -> ReaderConfig {
        toml::from_str(&format!(
            "id = \"{id}\"\nkind = \"{kind}\"\nsimulate = true"
        ))
        .expect("reader config")
    }

    #[test]
    fn every_configured_reader_is_listed_in_order_and_only_a_down_one_is_unhealthy() {
        let readers = [
            reader("door-card", "rdm6300"),
            reader("door-finger", "r503"),
            reader("side-card", "pn532"),
        ];
        let health = ReaderHealthMap::from([
            (
                "door-finger".to_owned(),
                ReaderHealth::Down("unplugged".into()),
            ),
            ("side-card".to_owned(), ReaderHealth::Ok),
        ]);
        let got: Vec<_> = reader_statuses(&readers, &health)
            .into_iter()
            .map(|r| (r.id, r.kind, r.healthy, r.detail))
            .collect();
        assert_eq!(
            got,
            [
                ("door-card".into(), "rdm6300".into(), true, String::new()),
                (
                    "door-finger".into(),
                    "ef01".into(),
                    false,
                    "unplugged".into()
                ),
                ("side-card".into(), "pn532".into(), true, String::new()),
            ],
            "a reader that never reported counts as healthy"
        );
    }
}
