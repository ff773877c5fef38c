//! Simulated readers: a person or a test "presents" a card or a finger to a named reader.

use tokio::sync::broadcast;

/// Something put in front of a simulated reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presentation {
    /// A card with this UID.
    Card(Vec<u8>),
    /// A finger: `Some(slot)` if it matches the template stored in that library slot.
    Finger(Option<u16>),
    /// A finger on a template sensor (`iso-template`): the minutiae record it produces.
    Template(Vec<u8>),
}

/// Fan-out of presentations to simulated readers, by reader id. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Presenter {
    tx: broadcast::Sender<(String, Presentation)>,
}

impl Default for Presenter {
    fn default() -> Self {
        Self::new()
    }
}

impl Presenter {
    /// A presenter with no readers listening yet.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self { tx }
    }

    /// Presents `what` to the reader with id `reader`. Returns false if no reader is listening.
    pub fn present(&self, reader: &str, what: Presentation) -> bool {
        self.tx.send((reader.to_owned(), what)).is_ok()
    }

    /// Subscribes to everything presented; readers filter by their own id.
    pub fn subscribe(&self) -> broadcast::Receiver<(String, Presentation)> {
        self.tx.subscribe()
    }
}
