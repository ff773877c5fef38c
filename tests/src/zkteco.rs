//! A ZKTeco PUSH (ADMS / iclock) terminal at the protocol level, behaving as firmware does
//! (`../shared/reference/zkteco-adms.md`): the handshake that sets its cursor from the server's
//! `ATTLOGStamp`, realtime or batched ATTLOG uploads over plain HTTP/1.1 (one connection per
//! request, as the terminals do), records kept and re-sent after any answer but `OK`, the
//! heartbeat and command poll with `INFO` counters, command results, stamp resets, reboots, and
//! a log of fixed capacity that deletes its oldest records when full.
//!
//! Two dialects: [`Dialect::Classic`] (`iClock Proxy/1.09`, space-separated seven-field lines,
//! `\n`, upper-case keys, `INFO=` on every poll) and [`Dialect::Android`] (tab-separated lines
//! with the extra fields Android firmwares add, `\r\n`, lower-case keys, no `INFO`).
//!
//! HTTPS, as the terminals that support it speak it: [`Terminal::with_tls`] makes every request
//! a TLS connection (rustls, through the `tokio-rustls` rumqttc already re-exports) to a server
//! whose certificate the given CA signed.

use chrono::NaiveDateTime;
use rumqttc::tokio_rustls::{TlsConnector, rustls};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How the firmware writes its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Older black-and-white firmware.
    Classic,
    /// Android-based terminals.
    Android,
}

/// One record in the terminal's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the log since it was created: the cursor counts these.
    pub id: u64,
    /// User id on the terminal.
    pub pin: String,
    /// Local wall clock.
    pub time: NaiveDateTime,
    /// 0 check-in.
    pub status: i32,
    /// 1 fingerprint, 4 card, 15 face.
    pub verify: i32,
}

/// A command the terminal ran, as it reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    /// The server's id.
    pub id: i64,
    /// The command text.
    pub command: String,
}

/// A simulated terminal.
#[derive(Debug)]
pub struct Terminal {
    /// Serial number (`SN=`).
    pub serial: String,
    /// `host:port` of the server.
    pub server: String,
    /// Request dialect.
    pub dialect: Dialect,
    /// Records held, oldest first.
    pub log: VecDeque<Record>,
    /// Records the log holds at most.
    pub capacity: usize,
    /// How many oldest records a full log deletes at once.
    pub delete_when_full: usize,
    /// Records deleted before they were uploaded (what the server cannot see).
    pub lost: u64,
    /// Id of the last record uploaded with an `OK` (the cursor).
    pub cursor: u64,
    /// Records per upload request.
    pub chunk: usize,
    /// Whether the handshake succeeded since the last reboot.
    pub online: bool,
    /// Users pushed by the server: (PIN, name, card).
    pub users: Vec<(String, String, String)>,
    /// Commands run.
    pub ran: Vec<Ran>,
    /// Reboots done.
    pub reboots: u32,
    /// Uploads answered with anything but `OK` (kept, retried).
    pub refusals: u32,
    /// Round-trip time of each ATTLOG upload answered `OK` (the server answers after COMMIT),
    /// with the records it carried.
    pub upload_times: Vec<(Duration, usize)>,
    next_id: u64,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// An HTTP answer: status and body.
pub type Reply = (u16, String);

impl Terminal {
    /// A terminal with an empty log, pointed at `server` (`host:port`).
    pub fn new(serial: &str, server: &str, dialect: Dialect) -> Terminal {
        Terminal {
            serial: serial.into(),
            server: server.into(),
            dialect,
            log: VecDeque::new(),
            capacity: 100_000,
            delete_when_full: 1,
            lost: 0,
            cursor: 0,
            chunk: 500,
            online: false,
            users: Vec::new(),
            ran: Vec::new(),
            reboots: 0,
            refusals: 0,
            upload_times: Vec::new(),
            next_id: 1,
            tls: None,
        }
    }

    /// The same terminal speaking HTTPS, trusting only the CA certificate (PEM) at `ca`; the
    /// server's certificate must name the host of `server` (an IP address or a DNS name).
    pub fn with_tls(mut self, ca: &Path) -> std::io::Result<Terminal> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let bad = |e: &dyn std::fmt::Display| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{}: {e}", ca.display()),
            )
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        self.tls = Some(Arc::new(config));
        Ok(self)
    }

    fn key(&self, k: &'static str) -> String {
        match self.dialect {
            Dialect::Classic => k.to_string(),
            Dialect::Android => k.to_ascii_lowercase(),
        }
    }

    /// A finger, card or face at the terminal: the record is written to the log (deleting the
    /// oldest when full).
    pub fn punch(&mut self, pin: &str, time: NaiveDateTime, verify: i32) {
        if self.log.len() >= self.capacity {
            for _ in 0..self.delete_when_full.max(1) {
                if let Some(old) = self.log.pop_front()
                    && old.id > self.cursor
                {
                    self.lost += 1;
                }
            }
        }
        self.log.push_back(Record {
            id: self.next_id,
            pin: pin.into(),
            time,
            status: 0,
            verify,
        });
        self.next_id += 1;
    }

    /// Records not yet uploaded with an `OK`.
    pub fn pending(&self) -> usize {
        self.log.iter().filter(|r| r.id > self.cursor).count()
    }

    fn line(&self, r: &Record) -> String {
        let t = r.time.format("%Y-%m-%d %H:%M:%S");
        match self.dialect {
            Dialect::Classic => format!("{} {t} {} {} 0 0 0\n", r.pin, r.status, r.verify),
            Dialect::Android => format!(
                "{}\t{t}\t{}\t{}\t0\t0\t0\t255\t0\t36.5\t0\r\n",
                r.pin, r.status, r.verify
            ),
        }
    }

    fn user_agent(&self) -> &'static str {
        match self.dialect {
            Dialect::Classic => "iClock Proxy/1.09",
            Dialect::Android => "iClock Proxy/2.4.1 (Android)",
        }
    }

    /// One HTTP/1.1 request on its own connection.
    pub async fn request(
        &self,
        method: &str,
        path_query: &str,
        body: &[u8],
    ) -> std::io::Result<Reply> {
        let head = format!(
            "{method} {path_query} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\nAccept: */*\r\nConnection: close\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            self.server,
            self.user_agent(),
            body.len()
        );
        let fut = async {
            let s = tokio::net::TcpStream::connect(&self.server).await?;
            match &self.tls {
                None => exchange(s, head.as_bytes(), body).await,
                Some(tls) => {
                    let host = self.server.rsplit_once(':').map_or(&*self.server, |h| h.0);
                    let name = rustls::pki_types::ServerName::try_from(host.to_string())
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                    let s = TlsConnector::from(tls.clone()).connect(name, s).await?;
                    exchange(s, head.as_bytes(), body).await
                }
            }
        };
        let buf = tokio::time::timeout(Duration::from_secs(30), fut)
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 30 s")
            })??;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        Ok((status, body))
    }

    fn is_ok(reply: &Reply) -> bool {
        reply.0 == 200 && reply.1.trim_start().starts_with("OK")
    }

    /// The start-up handshake: the server's `ATTLOGStamp` becomes the cursor (`0` or `None`:
    /// everything is sent again). Returns the answer.
    pub async fn handshake(&mut self) -> std::io::Result<Reply> {
        let q = format!(
            "/iclock/cdata?{}={}&options=all&pushver=2.4.1&language=69",
            self.key("SN"),
            self.serial
        );
        let reply = self.request("GET", &q, b"").await?;
        if reply.0 == 200 && reply.1.starts_with("GET OPTION FROM") {
            for line in reply.1.lines() {
                if let Some(v) = line.trim().strip_prefix("ATTLOGStamp=") {
                    self.cursor = v.trim().parse().unwrap_or(0);
                }
            }
            self.online = true;
        }
        Ok(reply)
    }

    /// Uploads pending records in chunks until none is left or one is refused; returns how many
    /// were acknowledged. A refused chunk stays pending (retried at the next call).
    pub async fn upload(&mut self) -> std::io::Result<usize> {
        let mut sent = 0;
        loop {
            let chunk: Vec<Record> = self
                .log
                .iter()
                .filter(|r| r.id > self.cursor)
                .take(self.chunk)
                .cloned()
                .collect();
            let Some(last) = chunk.last().map(|r| r.id) else {
                return Ok(sent);
            };
            let t0 = Instant::now();
            let reply = self.post_records(&chunk, last).await?;
            if !Self::is_ok(&reply) {
                self.refusals += 1;
                return Ok(sent);
            }
            self.upload_times.push((t0.elapsed(), chunk.len()));
            self.cursor = last;
            sent += chunk.len();
        }
    }

    async fn post_records(&self, recs: &[Record], stamp: u64) -> std::io::Result<Reply> {
        let body: String = recs.iter().map(|r| self.line(r)).collect();
        let q = format!(
            "/iclock/cdata?{}={}&{}=ATTLOG&{}={stamp}",
            self.key("SN"),
            self.serial,
            self.key("table"),
            self.key("Stamp")
        );
        self.request("POST", &q, body.as_bytes()).await
    }

    /// The heartbeat: polls for a command and runs it (posting its result). Returns the answer.
    pub async fn poll(&mut self) -> std::io::Result<Reply> {
        let mut q = format!("/iclock/getrequest?{}={}", self.key("SN"), self.serial);
        if self.dialect == Dialect::Classic {
            q.push_str(&format!(
                "&INFO=Ver%206.60%20Apr%2028%202017,{},0,{},127.0.0.1,10,7,0,0,111",
                self.users.len(),
                self.log.len()
            ));
        }
        let reply = self.request("GET", &q, b"").await?;
        if reply.0 == 200
            && let Some(rest) = reply.1.trim().strip_prefix("C:")
            && let Some((id, cmd)) = rest.split_once(':')
            && let Ok(id) = id.parse::<i64>()
        {
            let cmd = cmd.trim().to_string();
            self.run(id, &cmd).await?;
        }
        Ok(reply)
    }

    async fn run(&mut self, id: i64, cmd: &str) -> std::io::Result<()> {
        self.ran.push(Ran {
            id,
            command: cmd.into(),
        });
        let word = cmd.split_whitespace().next().unwrap_or("").to_string();
        let mut code = 0;
        if cmd.starts_with("DATA QUERY ATTLOG") {
            let field = |k: &str| {
                cmd.split(['\t'])
                    .flat_map(|f| f.split_once(k))
                    .map(|(_, v)| v.trim().to_string())
                    .next()
                    .and_then(|v| NaiveDateTime::parse_from_str(&v, "%Y-%m-%d %H:%M:%S").ok())
            };
            match (field("StartTime="), field("EndTime=")) {
                (Some(from), Some(to)) => {
                    let recs: Vec<Record> = self
                        .log
                        .iter()
                        .filter(|r| r.time >= from && r.time <= to)
                        .cloned()
                        .collect();
                    for c in recs.chunks(self.chunk.max(1)) {
                        let stamp = self.cursor;
                        let reply = self.post_records(c, stamp).await?;
                        if !Self::is_ok(&reply) {
                            code = -1;
                        }
                    }
                }
                _ => code = -1002,
            }
        } else if let Some(args) = cmd.strip_prefix("DATA UPDATE USERINFO ") {
            let get = |k: &str| {
                args.split('\t')
                    .find_map(|f| f.strip_prefix(k))
                    .unwrap_or("")
                    .to_string()
            };
            self.users.push((get("PIN="), get("Name="), get("Card=")));
        } else if cmd == "REBOOT" {
            // Answered before the restart, as firmware does.
            self.post_result(id, 0, &word).await?;
            self.reboot();
            return Ok(());
        } else if cmd != "INFO" && cmd != "CHECK" {
            code = -1002;
        }
        self.post_result(id, code, &word).await
    }

    async fn post_result(&self, id: i64, code: i64, word: &str) -> std::io::Result<()> {
        let q = format!("/iclock/devicecmd?{}={}", self.key("SN"), self.serial);
        let body = format!("ID={id}&Return={code}&CMD={word}\n");
        self.request("POST", &q, body.as_bytes()).await?;
        Ok(())
    }

    /// Power cycle: the log stays (flash), the session does not; the cursor comes back from
    /// the server at the next handshake.
    pub fn reboot(&mut self) {
        self.online = false;
        self.reboots += 1;
    }

    /// An administrator resets the stamp (or firmware loses it): everything is sent again.
    pub fn reset_stamp(&mut self) {
        self.cursor = 0;
    }

    /// What firmware does in a loop, once: handshake when needed, upload what is pending, poll.
    /// Returns whether every request of the cycle was answered OK; a refusal or error answer
    /// is a value (the records stay), only a broken connection is an error.
    pub async fn cycle(&mut self) -> std::io::Result<bool> {
        if !self.online {
            self.handshake().await?;
            if !self.online {
                self.refusals += 1;
                return Ok(false);
            }
        }
        let before = self.refusals;
        self.upload().await?;
        let polled = self.poll().await?;
        Ok(self.refusals == before && polled.0 == 200)
    }

    /// Cycles until nothing is pending and the last cycle succeeded, or `within` passes.
    pub async fn sync(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if matches!(self.cycle().await, Ok(true)) && self.online && self.pending() == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
}

/// Writes one request and reads the answer to the end of the connection. A TLS server that
/// closes without `close_notify` after a complete answer is an end, not an error.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    head: &[u8],
    body: &[u8],
) -> std::io::Result<Vec<u8>> {
    s.write_all(head).await?;
    s.write_all(body).await?;
    s.flush().await?;
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf).await {
        Ok(_) => Ok(buf),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => Ok(buf),
        Err(e) => Err(e),
    }
}
