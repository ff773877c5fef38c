//! The demo: a roster of 40 students written when simulated readers have none, and a ticker
//! that presents their cards and fingers (and a few unknown ones) to the simulated readers.
//!
//! Student `i` has card `00 0000000i` (5 bytes, as an RDM6300 reports) and fingerprint slot `i`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rollcall_drivers::simulated::{Presentation, Presenter};
use rollcall_drivers::{CredentialKind, ReaderKind};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Students in the demo roster; the ticker draws from a few more, which are unknown.
const STUDENTS: u32 = 40;

/// Writes the demo roster to `path`.
pub fn write_roster(path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, roster_text())
        .with_context(|| format!("writing demo roster {}", path.display()))?;
    tracing::info!(roster = %path.display(), "wrote a demo roster of 40 students");
    Ok(())
}

fn roster_text() -> String {
    let mut cards = String::from("version = 1\n[cards]\n");
    let mut fingers = String::from("[fingerprints]\n");
    for i in 1..=STUDENTS {
        cards.push_str(&format!("\"00{i:08X}\" = \"DEMO{i:03}\"\n"));
        fingers.push_str(&format!("\"{i}\" = \"DEMO{i:03}\"\n"));
    }
    cards + &fingers
}

/// Every `every`, presents a random credential to each simulated reader: 9 in 10 from the demo
/// roster, the rest unknown. Runs until `stop`.
pub async fn ticker(
    config: Config,
    presenter: Presenter,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for reader in &config.readers {
            let i: u32 = rand::random_range(1..=STUDENTS + 4);
            // The demo roster has no enrolled templates to present to an iso-template reader.
            if !crate::config::is_simulated(reader) || reader.kind == ReaderKind::IsoTemplate {
                continue;
            }
            presenter.present(&reader.id, presentation(reader.kind, i));
        }
    }
}

/// Student `i`'s credential as a reader of `kind` reports it: UIDs of the length each card
/// family reports (the demo roster's are 5 bytes), and no match past the roster's fingers.
fn presentation(kind: ReaderKind, i: u32) -> Presentation {
    match (kind.credential(), kind) {
        (CredentialKind::Fingerprint, _) => {
            Presentation::Finger((i <= STUDENTS).then_some(i as u16))
        }
        (CredentialKind::Card, ReaderKind::Wiegand) => {
            Presentation::Card(i.to_be_bytes()[1..].to_vec())
        }
        (CredentialKind::Card, ReaderKind::Pn532) => Presentation::Card(i.to_be_bytes().to_vec()),
        (CredentialKind::Card, _) => {
            let mut uid = vec![0u8];
            uid.extend_from_slice(&i.to_be_bytes());
            Presentation::Card(uid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_roster_knows_every_student_by_card_and_finger() {
        let roster = crate::roster::Roster::parse(&roster_text()).expect("demo roster parses");
        assert_eq!(roster.len(), (STUDENTS as usize, STUDENTS as usize));
    }
}
