//! Issue 9's promise end to end, every part real: PostgreSQL and Mosquitto started here,
//! rollcall-ingest with `[credentials]`, and two real rollcalld gateways, each with an EF01
//! fingerprint module (the byte-level simulator on a pseudo-terminal) and a card reader.
//!
//! A student enrols a finger once, at gateway A (room R101), with consent; the template goes
//! from A's module through A's outbox to the centre, sealed there, and out in the roster of
//! gateway B (room R201, where the student also has class), into B's module. The same finger on
//! B's module then punches as that student and the punch is recorded in PostgreSQL. A student
//! with no class in R201 is never loaded on B. Withdrawing consent removes the template from
//! B's module. Nothing either gateway wrote holds the template or a card UID in clear.

mod ingest_common;

use ingest_common::*;
use rollcall_ingest::config::SessionClock;
use rollcall_tests::ef01::{Module, model};
use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::rollcalld::{GatewayOptions, Rollcalld};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const WAIT: Duration = Duration::from_secs(30);

async fn gateway(broker: u16, device: &str, module: &Module, dir: &Path) -> Rollcalld {
    let mut opts = GatewayOptions::new(broker);
    opts.device_id = device.into();
    opts.roster_from_centre = true;
    opts.readers = Some(format!(
        "[[reader]]\nid = \"door-card\"\nkind = \"simulated-card\"\n{}",
        module.reader("door-finger")
    ));
    let config = opts.write(dir).unwrap();
    Rollcalld::start(&rollcall_tests::binaries::rollcalld(), &config)
        .await
        .unwrap()
}

/// Whether the module's library holds `template` in some slot.
fn holds(module: &Module, template: &[u8]) -> bool {
    module.library().values().any(|t| t == template)
}

/// Polls `f` until it returns `Some`, within [`WAIT`].
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `enrol <reader> <student>` on a gateway's control socket, doing what each progress line
/// asks with `act`; returns the final `result:` line.
async fn enrol(socket: &Path, reader: &str, student: &str, mut act: impl FnMut(&str)) -> String {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (read, mut write) = stream.into_split();
    write
        .write_all(format!("enrol {reader} {student}\n").as_bytes())
        .await
        .unwrap();
    let mut lines = BufReader::new(read).lines();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("enrolment within time")
            .unwrap()
            .expect("session open until the result");
        assert!(!line.starts_with("error:"), "{line}");
        if line.starts_with("result:") {
            return line;
        }
        act(&line);
    }
}

/// Every file under `dir`, read whole.
fn contents(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file()
                && let Ok(bytes) = std::fs::read(&p)
            {
                out.push((p, bytes));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enrolled_once_at_one_gateway_recognised_at_the_gateway_of_another_room() {
    let db = db(Schema::Standalone).await.unwrap();
    let c = &db.client;
    let campus = campus(c, SessionClock::Utc).await;
    two_rooms(c, &campus).await;
    let (s0, s1) = (campus.students[0], campus.students[1]);
    // A class in R201 now, so B's punch counts: the other section, where S0 is enrolled. The
    // session spans both time conventions' idea of "now" (it is a test of identification, not
    // of clocks), so the punch may be marked late.
    ins(
        c,
        "attendance_session",
        &[
            ("course_section_id", &campus.other_section.to_string()),
            ("academic_period_id", &format!("'{}'", campus.period)),
            ("faculty_id", &format!("'{}'", campus.faculty)),
            ("scheduled_date", "current_date"),
            ("start_datetime", "now() - interval '2 hours'"),
            ("end_datetime", "now() + interval '8 hours'"),
            ("room", "'R201'"),
            ("status", "'open'"),
        ],
    )
    .await;

    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, ingest) = service::with_credentials(dir.path(), &db.url, &broker.url(), "e2e", "");

    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let (module_a, module_b) = (
        Module::start(model(50)).unwrap(),
        Module::start(model(50)).unwrap(),
    );
    let a = gateway(broker.port(), DEVICE, &module_a, &dir_a).await;
    let b = gateway(broker.port(), D201, &module_b, &dir_b).await;
    // Both gateways said hello and hold a roster.
    eventually("both gateways acknowledged a roster", || async {
        let n = count(
            c,
            "SELECT count(*) FROM rollcall.roster_device WHERE acked_version > 0",
        )
        .await;
        (n == 2).then_some(())
    })
    .await;

    service::cli(
        &config,
        &[
            "consent",
            "grant",
            "R000",
            "--by",
            "registrar@campus.test",
            "--method",
            "form 1",
        ],
    );
    // S0's finger at A's module: two captures of the same finger, as the gateway guides.
    let finger = module_a.template(4242);
    let result = enrol(
        &dir_a.join("state/control.sock"),
        "door-finger",
        "R000",
        |line| {
            if line.starts_with("progress: place") {
                module_a.sim.lock().place_finger(finger.clone());
            }
        },
    )
    .await;
    assert!(result.starts_with("result: accepted"), "{result}");
    // S1's card at A, by a tap in enrolment mode.
    let uid = "04A1B2C35D6180";
    let socket_a = dir_a.join("state/control.sock");
    let tap_line = format!("card door-card {uid}");
    let (result, tap) = tokio::join!(enrol(&socket_a, "door-card", "R001", |_| {}), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        a.command(&tap_line).await
    });
    assert!(
        tap.unwrap().starts_with("enrolment:"),
        "the tap went to the enrolment"
    );
    assert!(result.starts_with("result: accepted"), "{result}");

    // The template reaches B's module (S0 has class in R201); S1's card is not B's business.
    eventually("S0's template in B's module", || async {
        holds(&module_b, &finger).then_some(())
    })
    .await;
    assert_eq!(module_b.library().len(), 1, "only S0 is expected in R201");
    eventually("S0's template kept in A's module", || async {
        holds(&module_a, &finger).then_some(())
    })
    .await;
    let reply = b.command(&format!("card door-card {uid}")).await.unwrap();
    assert!(reply.contains("unknown-card"), "S1's card at B: {reply}");
    let reply = a.command(&format!("card door-card {uid}")).await.unwrap();
    assert!(
        reply.contains(&format!("student={s1}")),
        "S1's card at A: {reply}"
    );

    // The finger on B's module punches as S0, recorded in the open session of R201.
    module_b.sim.lock().place_finger(finger.clone());
    let outcome: String = eventually("B's fingerprint punch in the ledger", || async {
        c.query_opt(
            "SELECT outcome FROM rollcall.ledger WHERE device_id = $1 AND credential = 'fingerprint'
               AND student_id = $2",
            &[&D201, &s0],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
    })
    .await;
    assert_eq!(outcome, "recorded");
    assert_eq!(
        count(
            c,
            &format!(
                "SELECT count(*) FROM attendance_record r JOIN attendance_session s ON s.id = r.session_id
                 WHERE r.student_id = '{s0}' AND s.room = 'R201' AND r.mark IN ('present', 'late')"
            )
        )
        .await,
        1
    );

    // Withdrawal: the template leaves B's module (and A's).
    service::cli(
        &config,
        &["consent", "withdraw", "R000", "--by", "dpo@campus.test"],
    );
    eventually("S0's template deleted from both modules", || async {
        (!holds(&module_b, &finger) && !holds(&module_a, &finger)).then_some(())
    })
    .await;

    // Nothing either gateway wrote holds the template or the card UID in clear.
    let uid_bytes: Vec<u8> = (0..uid.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&uid[i..i + 2], 16).unwrap())
        .collect();
    for gw_dir in [&dir_a, &dir_b] {
        for (path, bytes) in contents(gw_dir) {
            for secret in [&finger[..], &uid_bytes[..]] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret),
                    "{} holds a secret in clear",
                    path.display()
                );
            }
            let text = String::from_utf8_lossy(&bytes).to_lowercase();
            assert!(
                !text.contains(&uid.to_lowercase()),
                "{} holds the card UID in hex",
                path.display()
            );
        }
    }
    drop((a, b));
    ingest.shutdown().await;
}
