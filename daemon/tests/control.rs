//! The control socket takes commands of a bounded length: a client sending an endless line gets
//! an error and is hung up on, and rollcalld keeps answering everyone else.

use std::path::Path;
use std::time::Duration;

use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::rollcalld::{GatewayOptions, Rollcalld};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_rollcalld");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_command_line_is_refused_and_nothing_else_stops() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start()?;
    let config = GatewayOptions::new(broker.port()).write(dir.path())?;
    let gw = Rollcalld::start(Path::new(BIN), &config).await?;
    let socket = dir.path().join("state/control.sock");

    // Exactly the limit (newline included) is a command like any other: an unknown one here.
    let (read, mut write) = tokio::net::UnixStream::connect(&socket).await?.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut at_limit = "x".repeat(4095);
    at_limit.push('\n');
    write.write_all(at_limit.as_bytes()).await?;
    let reply = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await??;
    assert!(
        reply
            .as_deref()
            .is_some_and(|r| r.starts_with("error: commands are")),
        "{reply:?}"
    );

    // Eight megabytes without a newline: refused once past the limit, then hung up on.
    let (read, mut write) = tokio::net::UnixStream::connect(&socket).await?.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'y'; 64 * 1024];
        for _ in 0..128 {
            if write.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut lines = BufReader::new(read).lines();
    let reply = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await??;
    assert_eq!(
        reply.as_deref(),
        Some("error: a command is at most 4096 bytes")
    );
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await??,
        None,
        "the connection is closed"
    );
    writer.abort();

    // Everyone else is still answered.
    let reply = gw.command("card door-card 0000000001").await?;
    assert!(reply.contains("student=S001"), "{reply}");
    Ok(())
}
