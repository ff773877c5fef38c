//! The byte pump shared by the request/response simulators (EF01, PN532): read what the host
//! wrote, let the simulated device answer, write the answer back.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Feeds every chunk the host writes on `io` to `answer` and writes back what it returns, until
/// `shutdown` or until the host closes the line.
pub(crate) async fn pump<T: AsyncRead + AsyncWrite + Unpin>(
    mut io: T,
    shutdown: CancellationToken,
    mut answer: impl FnMut(&[u8]) -> Vec<u8>,
) -> std::io::Result<()> {
    let mut buf = [0u8; 512];
    loop {
        let n = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            n = io.read(&mut buf) => n?,
        };
        if n == 0 {
            return Ok(());
        }
        let out = answer(&buf[..n]);
        if !out.is_empty() {
            io.write_all(&out).await?;
            io.flush().await?;
        }
    }
}
