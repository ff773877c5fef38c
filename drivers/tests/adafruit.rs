//! Cross-check of the EF01 simulator by a host driver written by others: Adafruit's CircuitPython
//! fingerprint library, on CPython with pyserial, over a pseudo-terminal.
//!
//! Needs the Python venv made by `drivers/tests/setup-python.sh` (or `ROLLCALL_PYTHON` pointing
//! at a python with `adafruit_fingerprint` and `serial`). Without it the test prints why it
//! skipped and passes, except under CI (`CI=true`), where it fails: a green CI run must have
//! run the cross-check.
#![cfg(feature = "linux")]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rollcall_drivers::ef01::sim::{Ef01Sim, SimHandle, SimModel};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_serial::{SerialPort, SerialStream};
use tokio_util::sync::CancellationToken;

fn python() -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .to_path_buf();
    let candidates = [
        std::env::var_os("ROLLCALL_PYTHON").map(PathBuf::from),
        Some(workspace.join("target/python-venv/bin/python")),
        Some(PathBuf::from("python3")),
    ];
    candidates.into_iter().flatten().find(|py| {
        std::process::Command::new(py)
            .args(["-c", "import adafruit_fingerprint, serial"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[tokio::test]
async fn adafruit_circuitpython_driver_accepts_the_simulator() {
    let Some(py) = python() else {
        let missing = "no python with adafruit-circuitpython-fingerprint and pyserial \
                       (target/python-venv, ROLLCALL_PYTHON or python3)";
        let how = "run drivers/tests/setup-python.sh, or point ROLLCALL_PYTHON at a python \
                   that has them";
        // The rule of rollcall-tests' `skip`, which drivers does not depend on.
        if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1") {
            panic!(
                "the Adafruit cross-check cannot run: {missing}; {how} (under CI, CI=true, a skipped test fails)"
            );
        }
        println!("SKIPPED the Adafruit cross-check: {missing}; {how}");
        return;
    };
    let (master, slave) = SerialStream::pair().unwrap();
    let path = slave.name().unwrap();
    let mut module = Ef01Sim::new(SimModel::R503);
    let preloaded = module.template_for(3);
    module.insert(3, preloaded);
    let sim = SimHandle::new(module);
    let stop = CancellationToken::new();
    let (s, t) = (sim.clone(), stop.clone());
    tokio::spawn(async move { s.serve(master, t).await });

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/adafruit_crosscheck.py");
    let mut child = tokio::process::Command::new(&py)
        .arg(&script)
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start python");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut transcript = Vec::new();
    let mut passed = false;
    let run = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix("PLACE ") {
                let mut it = rest.split_whitespace().map(|n| n.parse::<u32>().unwrap());
                let (seed, count) = (it.next().unwrap(), it.next().unwrap());
                {
                    let mut m = sim.lock();
                    let template = m.template_for(seed);
                    for _ in 0..count {
                        m.place_finger(template.clone());
                    }
                }
                stdin.write_all(b"ok\n").await.unwrap();
                stdin.flush().await.unwrap();
            }
            passed |= line == "PASS";
            transcript.push(line);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("python finished within 60 s");
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    stop.cancel();
    drop(slave);
    assert!(
        out.status.success() && passed,
        "Adafruit cross-check failed ({}):\n{}\n{stderr}",
        out.status,
        transcript.join("\n")
    );
    println!("{}", transcript.join("\n"));
}
