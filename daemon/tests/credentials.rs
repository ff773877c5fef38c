//! The room's roster from the centre (issue 9), end to end: the real rollcalld with a simulated
//! card reader and an EF01 module simulator on a pseudo-terminal, a real Mosquitto, and the test
//! in the centre's place. Snapshots, deltas, parts, wrong bases, stale versions, resync, module
//! sync and capacity, and nothing in clear on disk.

mod credentials_support;

use std::time::Duration;

use credentials_support::*;
use rollcall_protocol::v1::Action;
use rollcall_tests::fixtures::fvc;
use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::rollcalld::{GatewayOptions, Rollcalld, parse_reply};

const WAIT: Duration = Duration::from_secs(20);

async fn tap(gw: &Rollcalld, n: u32) -> anyhow::Result<String> {
    let line = gw
        .command(&format!("card door-card {}", hex::encode(uid(n))))
        .await?;
    let reply = parse_reply(&line).ok_or_else(|| anyhow::anyhow!("tap: {line}"))?;
    Ok(format!("{} {}", reply.outcome, reply.subject))
}

fn gateway(
    broker: u16,
    module: &Module,
    dir: &std::path::Path,
    metrics: Option<u16>,
) -> anyhow::Result<std::path::PathBuf> {
    let mut opts = GatewayOptions::new(broker);
    opts.roster_from_centre = true;
    opts.metrics_port = metrics;
    opts.readers = Some(format!(
        "[[reader]]\nid = \"door-card\"\nkind = \"simulated-card\"\n{}",
        module.reader("door-finger")
    ));
    opts.write(dir)
}

/// Waits until the module's library holds exactly `templates` (in any slots).
async fn library_holds(module: &Module, templates: &[Vec<u8>]) -> anyhow::Result<()> {
    let mut want: Vec<Vec<u8>> = templates.to_vec();
    want.sort();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut got: Vec<Vec<u8>> = module.library().into_values().collect();
        got.sort();
        if got == want {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("module holds {} templates, want {}", got.len(), want.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_then_deltas_are_applied_acknowledged_and_used() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let mut centre = Centre::start(broker.port()).await?;
    let module = Module::start(model(50))?;
    let metrics = rollcall_tests::free_port()?;
    let config = gateway(broker.port(), &module, dir.path(), Some(metrics))?;
    let gw = Rollcalld::start(std::path::Path::new(BIN), &config).await?;

    let first = centre.ack_where(WAIT, |_| true).await?;
    assert_eq!((first.version, first.want_snapshot), (0, true), "{first:?}");
    assert_eq!(first.accepts, ["card", "ef01"]);

    let (ta, tb, tc, td) = (
        module.template(1),
        module.template(2),
        module.template(3),
        module.template(4),
    );
    // A snapshot in two parts; part 1 first: nothing applies until part 0 arrives.
    centre
        .send(&update(
            1,
            None,
            1,
            2,
            vec![
                student("B", 2, true, vec![tb.clone()]),
                student("C", 3, true, vec![]),
            ],
            vec![],
        ))
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(tap(&gw, 1).await?.starts_with("unknown unknown-card="));
    assert!(
        module.library().is_empty(),
        "nothing loaded from half an update"
    );
    centre
        .send(&update(
            1,
            None,
            0,
            2,
            vec![student("A", 1, true, vec![ta.clone(), tc.clone()])],
            vec![],
        ))
        .await?;
    let ack = centre.ack_where(WAIT, |a| a.version == 1).await?;
    assert!(!ack.want_snapshot, "{ack:?}");
    assert_eq!(ack.templates_loaded, 3, "{ack:?}");
    assert_eq!(ack.capacity, Some(50));
    assert!(ack.failures.is_empty(), "{ack:?}");
    assert_eq!(tap(&gw, 1).await?, "accepted student=A");
    assert_eq!(tap(&gw, 2).await?, "accepted student=B");
    library_holds(&module, &[ta.clone(), tb.clone(), tc.clone()]).await?;
    assert!(gw.command("status").await?.ends_with("roster_version=1"));

    // A delta: B leaves, A keeps one finger, D arrives.
    centre
        .send(&update(
            2,
            Some(1),
            0,
            1,
            vec![
                student("A", 1, true, vec![ta.clone()]),
                student("D", 4, true, vec![td.clone()]),
            ],
            vec!["B".into()],
        ))
        .await?;
    let ack = centre.ack_where(WAIT, |a| a.version == 2).await?;
    assert_eq!(
        (ack.want_snapshot, ack.templates_loaded),
        (false, 2),
        "{ack:?}"
    );
    assert!(
        tap(&gw, 2).await?.starts_with("unknown unknown-card="),
        "B's card is unknown now"
    );
    assert_eq!(tap(&gw, 4).await?, "accepted student=D");
    assert_eq!(tap(&gw, 3).await?, "accepted student=C");
    library_holds(&module, &[ta.clone(), td.clone()]).await?;

    // A delta on another base: ignored, and a snapshot is asked for.
    centre
        .send(&update(3, Some(1), 0, 1, vec![], vec!["A".into()]))
        .await?;
    let ack = centre.ack_where(WAIT, |_| true).await?;
    assert_eq!((ack.version, ack.want_snapshot), (2, true), "{ack:?}");
    assert_eq!(
        tap(&gw, 1).await?,
        "accepted student=A",
        "A was not removed"
    );
    // A stale update is acknowledged again without change.
    centre
        .send(&update(2, Some(1), 0, 1, vec![], vec!["A".into()]))
        .await?;
    let ack = centre.ack_where(WAIT, |_| true).await?;
    assert_eq!(ack.version, 2, "{ack:?}");
    assert_eq!(tap(&gw, 1).await?, "accepted student=A");

    // A snapshot settles it; a resync asks for another.
    centre
        .send(&update(
            5,
            None,
            0,
            1,
            vec![student("D", 4, true, vec![td.clone()])],
            vec![],
        ))
        .await?;
    let ack = centre.ack_where(WAIT, |a| a.version == 5).await?;
    assert!(!ack.want_snapshot, "{ack:?}");
    library_holds(&module, std::slice::from_ref(&td)).await?;
    centre.command(Action::Resync).await?;
    let ack = centre.ack_where(WAIT, |_| true).await?;
    assert_eq!((ack.version, ack.want_snapshot), (5, true), "{ack:?}");

    // A restart keeps the roster (sealed) and says where it stands.
    drop(gw);
    centre.drain_acks();
    module.flush();
    let gw = Rollcalld::start(std::path::Path::new(BIN), &config).await?;
    let ack = centre.ack_where(WAIT, |_| true).await?;
    assert_eq!((ack.version, ack.want_snapshot), (5, false), "{ack:?}");
    assert_eq!(tap(&gw, 4).await?, "accepted student=D");
    assert!(tap(&gw, 1).await?.starts_with("unknown"));
    library_holds(&module, std::slice::from_ref(&td)).await?;
    for (series, want) in [
        ("rollcall_roster_version", 5),
        ("rollcall_templates_loaded", 1),
        ("rollcall_module_capacity", 50),
        ("rollcall_enrolment_outbox", 0),
    ] {
        let deadline = tokio::time::Instant::now() + WAIT;
        while metric(metrics, series).await? != Some(want) {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{series} is {:?}, not {want}",
                metric(metrics, series).await?
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Hostile or misdirected messages change nothing and stop nothing.
    use rollcall_protocol::topic::Kind;
    centre.drain_acks();
    for kind in [Kind::Roster, Kind::Command] {
        centre.publish_raw(kind, vec![]).await?;
        centre.publish_raw(kind, vec![0xFF; 64]).await?;
        centre.publish_raw(kind, vec![0xBF; 1]).await?;
    }
    let mut foreign = update(9, None, 0, 1, vec![], vec![]);
    foreign.device_id = "room-999".into();
    centre.send(&foreign).await?;
    let mut bad_parts = update(9, None, 5, 2, vec![], vec![]);
    bad_parts.part = 5;
    centre.publish_raw(Kind::Roster, bad_parts.encode()).await?;
    centre.command(Action::Resync).await?;
    let ack = centre.ack_where(WAIT, |_| true).await?;
    assert_eq!((ack.version, ack.want_snapshot), (5, true), "{ack:?}");
    assert_eq!(tap(&gw, 4).await?, "accepted student=D");

    // Nothing in clear: not in the state directory, the config, the log.
    let mut secrets: Vec<Vec<u8>> = (1..=4).map(uid).collect();
    secrets.extend([ta, tb, tc, td]);
    assert_nothing_in_clear(dir.path(), &secrets);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roster_larger_than_the_module_reports_what_does_not_fit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let mut centre = Centre::start(broker.port()).await?;
    let module = Module::start(model(3))?;
    let config = gateway(broker.port(), &module, dir.path(), None)?;
    let _gw = Rollcalld::start(std::path::Path::new(BIN), &config).await?;
    centre.ack_where(WAIT, |a| a.version == 0).await?;
    let students: Vec<_> = (1..=5)
        .map(|n| student(&format!("S{n}"), n, false, vec![module.template(n)]))
        .collect();
    centre
        .send(&update(1, None, 0, 1, students, vec![]))
        .await?;
    let ack = centre
        .ack_where(WAIT, |a| a.version == 1 && a.templates_loaded == 3)
        .await?;
    assert_eq!(ack.capacity, Some(3), "{ack:?}");
    assert_eq!(ack.failures.len(), 2, "{ack:?}");
    assert!(
        ack.failures
            .iter()
            .all(|f| f.reason.contains("module full")),
        "{ack:?}"
    );
    assert_eq!(module.library().len(), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iso_templates_from_the_centre_are_matched_in_software() -> anyhow::Result<()> {
    use rollcall_protocol::v1::credentials::FORMAT_ISO_19794_2;
    use rollcall_protocol::v1::{FingerCredential, Secret};
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let mut centre = Centre::start(broker.port()).await?;
    let mut opts = GatewayOptions::new(broker.port());
    opts.roster_from_centre = true;
    opts.readers = Some(
        "[[reader]]\nid = \"door-template\"\nkind = \"iso-template\"\nsimulate = true\n".into(),
    );
    let gw = Rollcalld::start(std::path::Path::new(BIN), &opts.write(dir.path())?).await?;
    let first = centre.ack_where(WAIT, |_| true).await?;
    assert_eq!(first.accepts, ["iso19794-2"]);
    assert_eq!(first.capacity, None, "no module");
    let mut records = Vec::new();
    let students = [101u32, 102]
        .into_iter()
        .map(|finger| {
            let mut s = student(&format!("S{finger}"), finger, false, vec![]);
            s.fingers = (1..=3)
                .map(|i| {
                    let record = std::fs::read(fvc(&format!("{finger}_{i}"))).expect("fvc");
                    records.push(record.clone());
                    FingerCredential {
                        id: id(finger * 8 + i, 3),
                        format: FORMAT_ISO_19794_2.into(),
                        data: Secret::new(record),
                    }
                })
                .collect();
            s
        })
        .collect();
    centre
        .send(&update(1, None, 0, 1, students, vec![]))
        .await?;
    let ack = centre.ack_where(WAIT, |a| a.version == 1).await?;
    assert_eq!(
        (ack.templates_loaded, ack.failures.len()),
        (6, 0),
        "{ack:?}"
    );
    for (probe, want) in [
        ("101_5", "accepted student=S101"),
        ("102_6", "accepted student=S102"),
        ("105_4", "unknown unknown-finger"),
    ] {
        let line = gw
            .command(&format!("finger door-template {}", fvc(probe).display()))
            .await?;
        let reply = parse_reply(&line).ok_or_else(|| anyhow::anyhow!("{probe}: {line}"))?;
        assert_eq!(
            format!("{} {}", reply.outcome, reply.subject),
            want,
            "{probe}"
        );
    }
    let state = dir.path().join("state");
    // Minutiae records have little structure to hide; every 32-byte window of each must be gone.
    assert_nothing_in_clear(&state, &records);
    Ok(())
}

/// A gateway whose first roster ack found nobody subscribed (the centre starting later, a
/// broker restart) says hello again until a roster comes, so it is never left without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_waiting_for_a_roster_says_hello_again() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let module = Module::start(model(20))?;
    let gw = Rollcalld::start(
        std::path::Path::new(BIN),
        &gateway(broker.port(), &module, dir.path(), None)?,
    )
    .await?;
    // rollcalld is up and connected: its first hello went to nobody.
    gw.command("status").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut centre = Centre::start(broker.port()).await?;
    let ack = centre
        .ack_where(WAIT, |a| a.version == 0 && a.want_snapshot)
        .await?;
    assert_eq!(ack.device_id, DEVICE);
    centre
        .send(&update(
            1,
            None,
            0,
            1,
            vec![student("A", 1, true, vec![])],
            vec![],
        ))
        .await?;
    centre.ack_where(WAIT, |a| a.version == 1).await?;
    // Holding a roster, it stops repeating itself.
    centre.drain_acks();
    assert!(
        centre
            .ack_where(Duration::from_secs(12), |_| true)
            .await
            .is_err(),
        "a gateway holding its roster sent another hello"
    );
    Ok(())
}
