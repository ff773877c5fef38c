//! Software fingerprint matching end to end (issue 12): a simulated `iso-template` sensor (the
//! real driver on a pseudo-terminal, fed FVC2002 templates) in a real rollcalld, with a roster
//! whose templates were sealed by `rollcalld roster add-template`, over a real Mosquitto to
//! the test acker. Enrolled: impressions 1-3 of three fingers; presented: other impressions of
//! them, and fingers that are not enrolled.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rollcall_protocol::v1::{CredentialKind, Subject};
use rollcall_tests::acker::Acker;
use rollcall_tests::fixtures::fvc;
use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::rollcalld::{GatewayOptions, Rollcalld, parse_reply};

const BIN: &str = env!("CARGO_BIN_EXE_rollcalld");
const DEVICE: &str = "room-101";

fn add_template(config: &Path, student: &str, file: &Path) -> anyhow::Result<()> {
    let out = Command::new(BIN)
        .args(["roster", "add-template", "--config"])
        .arg(config)
        .args(["--student", student, "--file"])
        .arg(file)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "add-template {student} {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_sensor_punches_enrolled_students_and_unknown_for_strangers()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let acker = Acker::start(broker.port()).await?;
    let mut opts = GatewayOptions::new(broker.port());
    opts.readers = Some(
        "[[reader]]\nid = \"door-template\"\nkind = \"iso-template\"\nsimulate = true\n".into(),
    );
    let config = opts.write(dir.path())?;
    for finger in [101, 102, 103] {
        for impression in 1..=3 {
            add_template(
                &config,
                &format!("S{finger}"),
                &fvc(&format!("{finger}_{impression}")),
            )?;
        }
    }
    // At rest: nine sealed files, none holding its record in clear, and a private key.
    let state = dir.path().join("state");
    let sealed: Vec<_> = std::fs::read_dir(state.join("templates"))?.collect::<Result<_, _>>()?;
    assert_eq!(sealed.len(), 9);
    let record = std::fs::read(fvc("101_1"))?;
    for f in &sealed {
        let bytes = std::fs::read(f.path())?;
        assert!(bytes.starts_with(b"RCT1"));
        assert!(!bytes.windows(8).any(|w| w == &record[24..32]));
    }
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(state.join("template.key"))?
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);

    let gw = Rollcalld::start(Path::new(BIN), &config).await?;
    let mut expected = Vec::new();
    for (probe, want) in [
        ("101_4", "student=S101"),
        ("105_4", "unknown-finger"),
        ("102_5", "student=S102"),
        ("103_7", "student=S103"),
        ("106_5", "unknown-finger"),
    ] {
        let line = gw
            .command(&format!("finger door-template {}", fvc(probe).display()))
            .await?;
        let reply = parse_reply(&line).ok_or_else(|| anyhow::anyhow!("{probe}: {line}"))?;
        let outcome = if want.starts_with("student") {
            "accepted"
        } else {
            "unknown"
        };
        assert_eq!(
            (reply.outcome.as_str(), reply.subject.as_str()),
            (outcome, want),
            "{probe}: {line}"
        );
        expected.push((reply.seq.expect("stored"), want));
    }

    acker
        .wait_for("the five punches", Duration::from_secs(60), |s| {
            s.seqs(DEVICE).len() == 5
        })
        .await?;
    let seen = acker.seen();
    let punches: Vec<_> = seen.punches.values().flat_map(|m| m.values()).collect();
    for (seq, want) in expected {
        let p = punches
            .iter()
            .find(|p| p.seq == seq)
            .expect("every stored punch reaches the centre");
        assert_eq!(p.credential, CredentialKind::Fingerprint);
        assert_eq!(p.reader_kind, "iso-template");
        let score = p.score.expect("a template punch carries its score");
        match &p.subject {
            Subject::Student(s) => {
                assert_eq!(format!("student={s}"), want);
                assert!(score >= 1350, "{s}: score {score} under the threshold");
            }
            Subject::UnknownFinger => {
                assert_eq!(want, "unknown-finger");
                assert!(score < 1350, "stranger scored {score}");
            }
            other => panic!("unexpected subject {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_moved_to_another_student_stops_the_gateway_with_the_fix() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let opts = GatewayOptions::new(1); // never connects: start must fail first
    let mut opts = opts;
    opts.readers = Some(
        "[[reader]]\nid = \"door-template\"\nkind = \"iso-template\"\nsimulate = true\n".into(),
    );
    let config = opts.write(dir.path())?;
    add_template(&config, "S101", &fvc("101_1"))?;
    let roster = dir.path().join("state/roster.toml");
    let text = std::fs::read_to_string(&roster)?;
    std::fs::write(
        &roster,
        text.replace("student = \"S101\"", "student = \"S102\""),
    )?;

    let validate = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&config)
        .output()?;
    let err = String::from_utf8_lossy(&validate.stderr);
    assert!(!validate.status.success(), "validate accepted it: {err}");
    assert!(
        err.contains("S102") && err.contains("another student") && err.contains("add-template"),
        "{err}"
    );
    Ok(())
}
