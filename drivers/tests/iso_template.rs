//! An `iso-template` reader with `simulate = true`: the real driver opens a pseudo-terminal by
//! path, as it opens /dev/ttyAMA1 on a Pi, and the simulator frames each presented template.
#![cfg(feature = "linux")]

use std::time::Duration;

use rollcall_drivers::simulated::{Presentation, Presenter};
use rollcall_drivers::{ReaderConfig, ReaderEvent, ReaderWiring, run_reader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn presented_templates_come_out_byte_for_byte_and_other_presentations_are_ignored() {
    let config: ReaderConfig =
        toml::from_str("id = \"door-template\"\nkind = \"iso-template\"\nsimulate = true")
            .expect("valid reader table");
    let presenter = Presenter::new();
    let (tx, mut events) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let wiring = ReaderWiring::for_config(&config, &presenter);
    let s = stop.clone();
    let task = tokio::spawn(async move { run_reader(&config, wiring, tx, s).await });

    // A 300-byte record, and one as large as a frame can carry.
    let small: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
    let large: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    let next = async |events: &mut mpsc::Receiver<ReaderEvent>| {
        tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("an event within 10 s")
            .expect("reader running")
    };
    // The reader subscribes when its session starts: present until it hears.
    let mut first = None;
    for _ in 0..50 {
        presenter.present("door-template", Presentation::Template(small.clone()));
        if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
            first = Some(e);
            break;
        }
    }
    assert_eq!(
        first,
        Some(ReaderEvent::FingerprintTemplate {
            template: small.clone()
        })
    );
    // Drain repeats of the first template sent while the reader was starting.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), events.recv()).await {}
    presenter.present("door-template", Presentation::Finger(Some(3)));
    presenter.present("door-template", Presentation::Card(vec![1, 2, 3, 4]));
    presenter.present("door-template", Presentation::Template(Vec::new()));
    presenter.present("door-template", Presentation::Template(large.clone()));
    assert_eq!(
        next(&mut events).await,
        ReaderEvent::FingerprintTemplate { template: large }
    );
    stop.cancel();
    task.await.expect("join").expect("clean stop");
}
