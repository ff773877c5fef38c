//! The real rollcall-ingest binary out of file descriptors: its descriptor limit is lowered
//! (`prlimit --pid`) to just above what it holds, connections to `/metrics` use up the rest so
//! `accept` fails with EMFILE, and once they are gone `/metrics` answers again. Before the fix
//! one failed `accept` ended the endpoint for good.

mod ingest_common;

use ingest_common::service::config;
use rollcall_tests::mosquitto::Mosquitto;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Ingest(Child);

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One scrape: the whole answer, or why there was none.
fn scrape(addr: SocketAddr) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    Ok(answer)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_answers_again_after_running_out_of_descriptors() {
    let db = ingest_common::db(ingest_common::Schema::Standalone)
        .await
        .unwrap();
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = rollcall_tests::free_port().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let cfg = dir.path().join("ingest.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}[metrics]\nlisten = \"{addr}\"\n",
            config(&db.url, &broker.url(), "fds", false)
        ),
    )
    .unwrap();
    let log = dir.path().join("ingest.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(rollcall_tests::binaries::ingest())
        .args(["-c", cfg.to_str().unwrap(), "run"])
        .env("RUST_LOG", "warn")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut ingest = Ingest(child);
    let pid = ingest.0.id();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let deadline = Instant::now() + Duration::from_secs(30);
    while !scrape(addr).is_ok_and(|a| a.starts_with("HTTP/1.1 200")) {
        assert!(
            Instant::now() < deadline,
            "no /metrics in 30 s:\n{}",
            read_log()
        );
        assert!(ingest.0.try_wait().unwrap().is_none(), "{}", read_log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Settled (the scrape's descriptor closed): leave room for two more descriptors only.
    std::thread::sleep(Duration::from_millis(300));
    let limit = open_fds(pid) + 2;
    let st = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .unwrap();
    assert!(st.success(), "prlimit failed");

    // Idle connections (no request): two are accepted, the rest wait in the backlog while
    // every accept fails with EMFILE.
    let held: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !read_log().contains("metrics endpoint cannot accept") {
        assert!(
            Instant::now() < deadline,
            "no accept failure seen; fds {} of {limit}:\n{}",
            open_fds(pid),
            read_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = read_log();
    assert!(
        text.contains("Too many open files") || text.contains("os error 24"),
        "{text}"
    );
    // Let the failure repeat for a while: the process lives, and the log stays quiet.
    std::thread::sleep(Duration::from_secs(2));
    assert!(ingest.0.try_wait().unwrap().is_none(), "{}", read_log());
    assert_eq!(
        read_log().matches("metrics endpoint cannot accept").count(),
        1,
        "one line per 10 s:\n{}",
        read_log()
    );

    drop(held);
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        match scrape(addr) {
            Ok(a) if a.starts_with("HTTP/1.1 200") => break a,
            other => assert!(
                Instant::now() < deadline,
                "/metrics did not come back: {other:?}\n{}",
                read_log()
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        answer.contains("rollcall_ingest_broker_connects_total"),
        "{answer}"
    );
    // And keeps answering.
    for _ in 0..5 {
        assert!(scrape(addr).unwrap().starts_with("HTTP/1.1 200"));
    }
    assert!(ingest.0.try_wait().unwrap().is_none(), "{}", read_log());
}
