//! The link from an `aura` indicator to the R503 whose ring LED it drives. The LED shares the
//! module's UART with identification, so only the reader's task may speak to it: the indicator
//! sends [`AuraStep`]s down an [`AuraLink`], the reader serves them from its [`AuraPort`]. The
//! daemon makes one link per reader and hands each end to its task; nothing is registered
//! process-wide, so two daemons (or two tests) in one process never share an LED.

use std::collections::HashMap;

use tokio::sync::mpsc;

use super::AuraStep;
use crate::{IndicatorConfig, IndicatorKind};

/// Steps waiting for a busy reader; more are dropped (the next signal replaces them anyway).
const QUEUE: usize = 16;

/// A new link: the indicator's end and the reader's end.
pub fn aura_link() -> (AuraLink, AuraPort) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (AuraLink(tx), AuraPort(rx))
}

/// The indicator's end of an Aura link. Cheap to clone: several `aura` indicators may name one
/// reader.
#[derive(Debug, Clone)]
pub struct AuraLink(mpsc::Sender<AuraStep>);

/// The reader's end of an Aura link; the reader task keeps it across reconnections.
#[derive(Debug)]
pub struct AuraPort(mpsc::Receiver<AuraStep>);

/// What became of a step sent down a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    Queued,
    /// The reader has steps waiting already (it is identifying, or down for now).
    Busy,
    /// The reader task is gone, or its kind has no Aura LED.
    Gone,
}

impl AuraLink {
    pub(crate) fn send(&self, step: AuraStep) -> Sent {
        match self.0.try_send(step) {
            Ok(()) => Sent::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Sent::Busy,
            Err(mpsc::error::TrySendError::Closed(_)) => Sent::Gone,
        }
    }
}

impl AuraPort {
    /// The next step; never resolves once every link is dropped.
    pub(crate) async fn next(&mut self) -> AuraStep {
        match self.0.recv().await {
            Some(step) => step,
            None => std::future::pending().await,
        }
    }

    /// Forgets steps queued while the reader was down: they belong to punches long gone.
    pub(crate) fn discard_stale(&mut self) {
        while self.0.try_recv().is_ok() {}
    }
}

/// The Aura links of one configuration: one per reader that an `aura` indicator names.
#[derive(Debug, Default)]
pub struct AuraWiring {
    links: HashMap<String, AuraLink>,
    ports: HashMap<String, AuraPort>,
}

impl AuraWiring {
    /// Links for every `aura` indicator in `indicators`.
    pub fn new(indicators: &[IndicatorConfig]) -> Self {
        let mut wiring = Self::default();
        for reader in indicators
            .iter()
            .filter(|i| i.kind == IndicatorKind::Aura)
            .filter_map(|i| i.reader.as_deref())
        {
            if !wiring.links.contains_key(reader) {
                let (link, port) = aura_link();
                wiring.links.insert(reader.to_owned(), link);
                wiring.ports.insert(reader.to_owned(), port);
            }
        }
        wiring
    }

    /// The link for an `aura` indicator (`None` for other kinds).
    pub fn link_for(&self, indicator: &IndicatorConfig) -> Option<AuraLink> {
        if indicator.kind != IndicatorKind::Aura {
            return None;
        }
        self.links.get(indicator.reader.as_deref()?).cloned()
    }

    /// The port for reader `id`, if an indicator names it (once: the reader task owns it).
    pub fn take_port(&mut self, id: &str) -> Option<AuraPort> {
        self.ports.remove(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indicator(text: &str) -> IndicatorConfig {
        toml::from_str(text).unwrap()
    }

    #[tokio::test]
    async fn each_reader_gets_its_own_link_and_indicators_naming_it_share_it() {
        let indicators = [
            indicator("kind = \"aura\"\nreader = \"a\""),
            indicator("kind = \"aura\"\nreader = \"a\""),
            indicator("kind = \"aura\"\nreader = \"b\""),
            indicator("kind = \"log\""),
        ];
        let mut wiring = AuraWiring::new(&indicators);
        assert!(wiring.link_for(&indicators[3]).is_none());
        let mut a = wiring.take_port("a").unwrap();
        let mut b = wiring.take_port("b").unwrap();
        assert!(
            wiring.take_port("a").is_none(),
            "one reader task owns a port"
        );
        let step = crate::indicator::aura_pattern(crate::Signal::Accepted)[0];
        assert_eq!(
            wiring.link_for(&indicators[1]).unwrap().send(step),
            Sent::Queued
        );
        assert_eq!(a.next().await, step);
        b.discard_stale();
        drop(b);
        assert_eq!(
            wiring.link_for(&indicators[2]).unwrap().send(step),
            Sent::Gone
        );
    }

    #[tokio::test]
    async fn two_wirings_with_the_same_reader_id_never_share_a_led() {
        // Two daemons (or two tests) in one process, each with a reader called "door".
        let indicators = [indicator("kind = \"aura\"\nreader = \"door\"")];
        let (first, mut second) = (AuraWiring::new(&indicators), AuraWiring::new(&indicators));
        let mut first_port = {
            let mut first = first;
            let link = first.link_for(&indicators[0]).unwrap();
            let port = first.take_port("door").unwrap();
            let step = crate::indicator::aura_pattern(crate::Signal::Unknown)[0];
            assert_eq!(link.send(step), Sent::Queued);
            port
        };
        let mut second_port = second.take_port("door").unwrap();
        assert!(second_port.0.try_recv().is_err(), "nothing crossed over");
        assert_eq!(
            first_port.next().await,
            crate::indicator::aura_pattern(crate::Signal::Unknown)[0]
        );
    }
}
