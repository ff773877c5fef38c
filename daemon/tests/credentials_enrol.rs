//! Enrolment at a gateway (issue 9 point 6), end to end: a card by a tap in enrolment mode and a
//! finger at an EF01 module simulator, started from the control socket of the real rollcalld;
//! the Enrolment reaches the centre (the test) over a real Mosquitto, survives kill -9 before
//! the centre's verdict (sent again after the restart with the same id), and stops being sent
//! once the verdict arrives. A finger already enrolled for someone else is refused, naming them.

mod credentials_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use credentials_support::*;
use rollcall_protocol::v1::credentials::{FORMAT_CARD, FORMAT_EF01};
use rollcall_protocol::v1::{Action, CredentialKind};
use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::rollcalld::{GatewayOptions, Rollcalld};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const WAIT: Duration = Duration::from_secs(20);

/// A control session running `enrol ...`: its reply lines, one at a time.
struct Session {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    _write: tokio::net::unix::OwnedWriteHalf,
}

impl Session {
    async fn start(socket: &Path, command: &str) -> anyhow::Result<Self> {
        let (read, mut write) = UnixStream::connect(socket).await?.into_split();
        write.write_all(format!("{command}\n").as_bytes()).await?;
        Ok(Self {
            lines: BufReader::new(read).lines(),
            _write: write,
        })
    }

    /// Reads lines until one starts with `prefix`; returns it.
    async fn until(&mut self, prefix: &str) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .map_err(|_| anyhow::anyhow!("no line starting {prefix:?}"))??
                .ok_or_else(|| anyhow::anyhow!("session closed before {prefix:?}"))?;
            if line.starts_with(prefix) {
                return Ok(line);
            }
            anyhow::ensure!(!line.starts_with("error:"), "{line}");
        }
    }
}

fn setup(broker: u16, module: &Module, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut opts = GatewayOptions::new(broker);
    opts.roster_from_centre = true;
    opts.readers = Some(format!(
        "[[reader]]\nid = \"door-card\"\nkind = \"simulated-card\"\n{}",
        module.reader("door-finger")
    ));
    Ok((opts.write(dir)?, dir.join("state")))
}

fn outbox_files(state: &Path) -> usize {
    files(&state.join("outbox"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sealed"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_card_reaches_the_centre_survives_kill_9_and_stops_after_the_verdict()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let mut centre = Centre::start(broker.port()).await?;
    let module = Module::start(model(20))?;
    let (config, state) = setup(broker.port(), &module, dir.path())?;
    let mut gw = Rollcalld::start(Path::new(BIN), &config).await?;
    centre.ack_where(WAIT, |_| true).await?;

    let mut s = Session::start(&state.join("control.sock"), "enrol door-card S9").await?;
    s.until("progress: tap the card on door-card").await?;
    let reply = gw
        .command(&format!("card door-card {}", hex::encode(uid(9))))
        .await?;
    assert!(reply.starts_with("enrolment:"), "{reply}");
    let line = s.until("enrolled ").await?;
    let e = centre.enrolment(WAIT).await.expect("enrolment published");
    assert_eq!(
        (
            e.student.as_str(),
            e.kind,
            e.format.as_str(),
            e.reader_id.as_str()
        ),
        ("S9", CredentialKind::Card, FORMAT_CARD, "door-card")
    );
    assert_eq!(e.data.as_bytes(), uid(9));
    assert!(line.contains(&e.enrolment_id.to_string()), "{line}");
    assert_eq!(gw.journal().await?.0, 0, "the enrolment tap is not a punch");
    assert_eq!(outbox_files(&state), 1);

    // Killed before the verdict: sent again after the restart, same id.
    gw.kill9();
    module.flush();
    let gw = Rollcalld::start(Path::new(BIN), &config).await?;
    let again = centre
        .enrolment(WAIT)
        .await
        .expect("sent again after restart");
    assert_eq!(again, e);

    // The verdict ends it: out of the outbox, not sent after the next restart.
    centre
        .command(Action::EnrolmentResult {
            enrolment_id: e.enrolment_id,
            accepted: true,
            detail: "stored".into(),
        })
        .await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while outbox_files(&state) > 0 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "outbox not emptied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(gw);
    module.flush();
    let _gw = Rollcalld::start(Path::new(BIN), &config).await?;
    centre.ack_where(WAIT, |_| true).await?;
    assert_eq!(
        centre.enrolment(Duration::from_secs(2)).await,
        None,
        "answered enrolments are not sent again"
    );
    assert_nothing_in_clear(dir.path(), &[uid(9)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finger_enrols_at_the_module_and_one_enrolled_for_someone_else_is_refused()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let mut centre = Centre::start(broker.port()).await?;
    let module = Module::start(model(20))?;
    let (config, state) = setup(broker.port(), &module, dir.path())?;
    let gw = Rollcalld::start(Path::new(BIN), &config).await?;
    centre.ack_where(WAIT, |_| true).await?;
    let (ta, tn) = (module.template(1), module.template(7));
    centre
        .send(&update(
            1,
            None,
            0,
            1,
            vec![student("A", 1, false, vec![ta.clone()])],
            vec![],
        ))
        .await?;
    centre
        .ack_where(WAIT, |a| a.version == 1 && a.templates_loaded == 1)
        .await?;

    let socket = state.join("control.sock");
    let mut s = Session::start(&socket, "enrol door-finger S7").await?;
    s.until("progress: place finger").await?;
    module.sim.lock().place_finger(tn.clone());
    s.until("progress: lift finger").await?;
    s.until("progress: place the same finger again").await?;
    module.sim.lock().place_finger(tn.clone());
    let line = s.until("enrolled ").await?;
    let e = centre.enrolment(WAIT).await.expect("enrolment published");
    assert_eq!(
        (
            e.student.as_str(),
            e.kind,
            e.format.as_str(),
            e.sensor.as_str()
        ),
        ("S7", CredentialKind::Fingerprint, FORMAT_EF01, "r30x")
    );
    assert_eq!(e.data.as_bytes(), tn, "the template read out of the module");
    assert!(line.contains(&e.enrolment_id.to_string()), "{line}");
    centre
        .command(Action::EnrolmentResult {
            enrolment_id: e.enrolment_id,
            accepted: false,
            detail: "no consent recorded".into(),
        })
        .await?;
    let verdict = s.until("result:").await?;
    assert_eq!(verdict, "result: refused no consent recorded");

    // A's finger, enrolled for A on the roster: refused, naming A.
    let mut s = Session::start(&socket, "enrol door-finger S8").await?;
    s.until("progress: place finger").await?;
    module.sim.lock().place_finger(ta.clone());
    s.until("progress: place the same finger again").await?;
    module.sim.lock().place_finger(ta.clone());
    let line = tokio::time::timeout(WAIT, async {
        loop {
            match s.lines.next_line().await {
                Ok(Some(l)) if l.starts_with("error:") => return l,
                Ok(Some(_)) => continue,
                _ => return String::new(),
            }
        }
    })
    .await?;
    assert!(line.contains("already enrolled for student A"), "{line}");
    assert_eq!(centre.enrolment(Duration::from_millis(500)).await, None);
    drop(gw);
    assert_nothing_in_clear(dir.path(), &[ta, tn]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_centre_can_start_an_enrolment_at_a_reader() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let mut centre = Centre::start(broker.port()).await?;
    let module = Module::start(model(20))?;
    let (config, _) = setup(broker.port(), &module, dir.path())?;
    let gw = Rollcalld::start(Path::new(BIN), &config).await?;
    centre.ack_where(WAIT, |_| true).await?;
    centre
        .command(Action::Enrol {
            student: "S5".into(),
            reader_id: "door-card".into(),
            kind: CredentialKind::Card,
        })
        .await?;
    // The reader is in enrolment mode once the control socket says so for a tap.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reply = gw
            .command(&format!("card door-card {}", hex::encode(uid(5))))
            .await?;
        if reply.starts_with("enrolment:") {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "never in enrolment mode: {reply}; log:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e = centre.enrolment(WAIT).await.expect("enrolment published");
    assert_eq!((e.student.as_str(), e.kind), ("S5", CredentialKind::Card));
    assert_eq!(e.data.as_bytes(), uid(5));
    assert!(e.operator.starts_with("centre:"), "{}", e.operator);
    Ok(())
}
