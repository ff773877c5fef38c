//! Presenter -> simulator bridges: what a person "presents" becomes the bytes or edges the
//! real device would produce, so the real drivers do the decoding.

use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::sync::{broadcast, mpsc};

use super::Stop;
use crate::ef01::sim::SimHandle;
use crate::pn532::sim::Pn532Handle;
use crate::rdm6300::{Tag, sim as rdm_sim};
use crate::simulated::Presentation;
use crate::wiegand::{Edge, Timing, sim as wiegand_sim};

type Presentations = broadcast::Receiver<(String, Presentation)>;

/// Next presentation for reader `id`; `None` when the presenter is gone.
async fn next(rx: &mut Presentations, id: &str) -> Option<Presentation> {
    loop {
        match rx.recv().await {
            Ok((target, what)) if target == id => return Some(what),
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(reader = id, lost = n, "simulated presentations dropped");
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// Fingers onto an EF01 simulator. `Finger(Some(slot))` is a finger whose template is stored
/// in `slot` (stored on first use); `Finger(None)` is a finger the library does not hold.
pub(crate) async fn fingers(mut rx: Presentations, id: &str, sim: &SimHandle) -> Result<(), Stop> {
    let mut strangers = 0u32;
    while let Some(what) = next(&mut rx, id).await {
        let mut module = sim.lock();
        match what {
            Presentation::Finger(Some(slot)) => {
                let template = module.template_for(u32::from(slot) + 1);
                if module.library().get(&slot) != Some(&template) {
                    module.insert(slot, template.clone());
                }
                module.place_finger(template);
            }
            Presentation::Finger(None) => {
                strangers = strangers.wrapping_add(1);
                let template = module.template_for(0x8000_0000 | strangers);
                module.place_finger(template);
            }
            Presentation::Card(_) | Presentation::Template(_) => {
                tracing::warn!(
                    reader = id,
                    "a card or a template was presented to an ef01 fingerprint reader; ignored"
                );
            }
        }
    }
    Ok(())
}

/// Templates onto a template sensor's line: `Template(record)` is a finger whose sensor
/// produced `record`; anything else is not what such a sensor reads.
pub(crate) async fn templates<W: AsyncWrite + Unpin>(
    mut rx: Presentations,
    id: &str,
    mut line: W,
) -> Result<(), Stop> {
    while let Some(what) = next(&mut rx, id).await {
        match what {
            Presentation::Template(record) => {
                if let Err(e) = crate::iso_template::sim::place(&mut line, &record, None).await {
                    if e.kind() == std::io::ErrorKind::InvalidInput {
                        tracing::warn!(reader = id, error = %e, "template not presented");
                        continue;
                    }
                    return Err(Stop::Down(format!("template simulator: {e}")));
                }
            }
            other => tracing::warn!(
                reader = id,
                presented = ?other,
                "an iso-template sensor reads templates only (`finger <reader> <file.iso>`); ignored"
            ),
        }
    }
    Ok(())
}

/// The card simulators a `cards` bridge feeds, each with the timing its reader is set to.
pub(crate) struct CardSims<'a, W> {
    /// The RDM6300's line, and the reader's repeat window.
    pub(crate) rdm6300: Option<(W, Duration)>,
    /// The PN532 chip.
    pub(crate) pn532: Option<&'a Pn532Handle>,
    /// The Wiegand lines, and the reader's timing.
    pub(crate) wiegand: Option<(mpsc::Sender<Edge>, Timing)>,
}

/// Cards onto whichever card simulators are present, by UID length: 5 bytes RDM6300,
/// 4/7/10 bytes PN532, 3 (or 4 without a PN532) bytes Wiegand.
pub(crate) async fn cards<W: AsyncWrite + Unpin>(
    mut rx: Presentations,
    id: &str,
    mut sims: CardSims<'_, W>,
) -> Result<(), Stop> {
    let epoch = tokio::time::Instant::now();
    // The RDM6300 card last shown and when its last frame went out: the same card again must
    // come after the reader's repeat window, or the reader rightly takes it for the same tap.
    let mut last_rdm: Option<(Tag, tokio::time::Instant)> = None;
    // Where the last Wiegand frame's timestamps ended: the next frame starts a gap later.
    let mut wiegand_free_ns = 0u64;
    while let Some(what) = next(&mut rx, id).await {
        let Presentation::Card(uid) = what else {
            tracing::warn!(
                reader = id,
                "a finger was presented to a card reader; ignored"
            );
            continue;
        };
        match (uid.len(), &mut sims.rdm6300, sims.pn532, &sims.wiegand) {
            (5, Some((port, window)), _, _) => {
                let tag = Tag {
                    version: uid[0],
                    id: u32::from_be_bytes([uid[1], uid[2], uid[3], uid[4]]),
                };
                if let Some((last, at)) = last_rdm
                    && last == tag
                {
                    // Taken away for longer than the window.
                    tokio::time::sleep_until(at + *window + Duration::from_millis(100)).await;
                }
                rdm_sim::present(port, tag, 2, None)
                    .await
                    .map_err(|e| Stop::Down(format!("rdm6300 simulator: {e}")))?;
                last_rdm = Some((tag, tokio::time::Instant::now()));
            }
            (4 | 7 | 10, _, Some(chip), _) => {
                chip.lock().place_card(uid, 3);
                // Wait until the reader has seen the card and seen it leave.
                for _ in 0..250 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let chip = chip.lock();
                    if !chip.card_present() && chip.empty_polls() >= 2 {
                        break;
                    }
                }
            }
            (3 | 4, _, _, Some((lines, timing))) => {
                let Some(card) = wiegand_sim::card_for_uid(&uid) else {
                    continue;
                };
                let gap = timing.frame_gap().as_nanos() as u64;
                let start = (epoch.elapsed().as_nanos() as u64).max(wiegand_free_ns);
                let edges = wiegand_sim::frame_edges(card, start, None);
                wiegand_free_ns = edges.last().map_or(start, |e| e.at_ns) + 2 * gap;
                for edge in edges {
                    if lines.send(edge).await.is_err() {
                        return Err(Stop::Down("wiegand simulator: reader gone".into()));
                    }
                }
                // Let the reader's gap timer end the frame before the next one.
                tokio::time::sleep(timing.frame_gap() + Duration::from_millis(30)).await;
            }
            (n, ..) => {
                tracing::warn!(
                    reader = id,
                    len = n,
                    "no simulated reader of this kind produces a {n}-byte UID; ignored"
                );
            }
        }
    }
    Ok(())
}
