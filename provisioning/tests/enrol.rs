//! `rollcall enrol` at the real rollcalld with a simulated card reader, a real Mosquitto, and
//! the test in the centre's place answering each enrolment: the person sees what to do, the
//! verdict ends it, and the exit status says which verdict.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rollcall_protocol::topic::{self, Kind};
use rollcall_protocol::v1::{Action, Command, Enrolment};
use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::rollcalld::{GatewayOptions, Rollcalld};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use uuid::Uuid;

const ROLLCALL: &str = env!("CARGO_BIN_EXE_rollcall");
const SITE: &str = "test-site";
const DEVICE: &str = "room-101";
const WAIT: Duration = Duration::from_secs(20);

/// The test in the centre's place: receives enrolments, answers with a verdict.
struct Centre {
    client: AsyncClient,
    enrolments: mpsc::UnboundedReceiver<Enrolment>,
}

impl Centre {
    async fn start(port: u16) -> anyhow::Result<Self> {
        let opts = MqttOptions::new(
            format!("centre-{}", Uuid::now_v7().simple()),
            "127.0.0.1",
            port,
        );
        let (client, mut events) = AsyncClient::new(opts, 100);
        let (tx, enrolments) = mpsc::unbounded_channel();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(e) = Enrolment::decode(&p.payload) {
                            let _ = tx.send(e);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        client
            .subscribe(topic::build(SITE, DEVICE, Kind::Enrol), QoS::AtLeastOnce)
            .await?;
        tokio::time::timeout(WAIT, ready).await??;
        Ok(Self { client, enrolments })
    }

    async fn enrolment(&mut self) -> anyhow::Result<Enrolment> {
        tokio::time::timeout(WAIT, self.enrolments.recv())
            .await
            .map_err(|_| anyhow::anyhow!("no enrolment reached the centre"))?
            .ok_or_else(|| anyhow::anyhow!("centre client stopped"))
    }

    async fn verdict(&self, e: &Enrolment, accepted: bool, detail: &str) -> anyhow::Result<()> {
        let c = Command {
            device_id: DEVICE.into(),
            command_id: Uuid::now_v7(),
            action: Action::EnrolmentResult {
                enrolment_id: e.enrolment_id,
                accepted,
                detail: detail.into(),
            },
        };
        self.client
            .publish(
                topic::build(SITE, DEVICE, Kind::Command),
                QoS::AtLeastOnce,
                false,
                c.encode(),
            )
            .await?;
        Ok(())
    }
}

/// `rollcall enrol door-card <student>`, tapping `uid` once it asks for the card, the centre
/// answering `accepted`/`detail`; returns the exit status and what the terminal showed.
async fn enrol_card(
    config: &Path,
    gw: &Rollcalld,
    centre: &mut Centre,
    student: &str,
    uid: &str,
    accepted: bool,
    detail: &str,
) -> anyhow::Result<(Option<i32>, String)> {
    let mut child = tokio::process::Command::new(ROLLCALL)
        .args(["enrol", "door-card", student, "-c"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut shown = String::new();
    let asked = async {
        while let Some(line) = lines.next_line().await? {
            shown.push_str(&line);
            shown.push('\n');
            if line.starts_with("  -> Tap the card on door-card") {
                return Ok(());
            }
        }
        anyhow::bail!("rollcall enrol ended without asking for the card")
    };
    tokio::time::timeout(WAIT, asked)
        .await
        .map_err(|_| anyhow::anyhow!("no instruction to tap the card"))??;
    let reply = gw.command(&format!("card door-card {uid}")).await?;
    assert!(reply.starts_with("enrolment:"), "{reply}");
    let e = centre.enrolment().await?;
    assert_eq!(e.student, student);
    centre.verdict(&e, accepted, detail).await?;
    let rest = async {
        while let Some(line) = lines.next_line().await? {
            shown.push_str(&line);
            shown.push('\n');
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(WAIT, rest)
        .await
        .map_err(|_| anyhow::anyhow!("no verdict shown; so far:\n{shown}\nlog:\n{}", gw.log()))??;
    let status = child.wait().await?;
    Ok((status.code(), shown))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_enrolment_shows_each_step_and_the_centres_verdict_as_the_exit_status()
-> anyhow::Result<()> {
    let broker = Mosquitto::start()?;
    let dir = tempfile::tempdir()?;
    let mut opts = GatewayOptions::new(broker.port());
    opts.roster_from_centre = true;
    let config = opts.write(dir.path())?;
    let gw = Rollcalld::start(&rollcall_tests::binaries::rollcalld(), &config).await?;
    let mut centre = Centre::start(broker.port()).await?;

    let (code, shown) = enrol_card(
        &config,
        &gw,
        &mut centre,
        "S9",
        "0A0B0C0D09",
        true,
        "stored",
    )
    .await?;
    assert_eq!(code, Some(0), "{shown}");
    for want in [
        "Enrolling S9 at door-card (simulated-card)",
        "  -> Tap the card on door-card",
        "Stored on this gateway and sent to the centre (enrolled ",
        "waiting for the centre's verdict",
        "ACCEPTED by the centre: stored",
    ] {
        assert!(shown.contains(want), "{want:?} not in:\n{shown}");
    }

    let (code, shown) = enrol_card(
        &config,
        &gw,
        &mut centre,
        "S10",
        "0A0B0C0D10",
        false,
        "card already enrolled for S9",
    )
    .await?;
    assert_eq!(code, Some(1), "{shown}");
    assert!(
        shown.contains("REFUSED by the centre: card already enrolled for S9")
            && shown.contains("fix:"),
        "{shown}"
    );
    assert_eq!(gw.journal().await?.0, 0, "enrolment taps are not punches");

    // A reader the configuration does not have: refused before the daemon is asked.
    let out = std::process::Command::new(ROLLCALL)
        .args(["enrol", "door-x", "S1", "-c"])
        .arg(&config)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no reader \"door-x\"") && err.contains("door-card, door-finger"),
        "{err}"
    );
    Ok(())
}

#[test]
fn without_a_daemon_enrol_says_how_to_start_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = GatewayOptions::new(1).write(dir.path())?;
    let out = std::process::Command::new(ROLLCALL)
        .args(["enrol", "door-card", "S1", "-c"])
        .arg(&config)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("systemctl start rollcalld"), "{err}");
    Ok(())
}

#[test]
fn help_shows_an_example_and_the_exit_statuses() -> anyhow::Result<()> {
    let out = std::process::Command::new(ROLLCALL)
        .args(["enrol", "--help"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rollcall enrol door-card 2024CS001"),
        "{text}"
    );
    assert!(text.contains("Exit status: 0 accepted"), "{text}");
    Ok(())
}
