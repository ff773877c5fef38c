//! What the credentials tests share: the test playing the centre over a real Mosquitto, an EF01
//! module simulator on a pseudo-terminal that outlives rollcalld restarts, rosters, and a scan
//! of files for bytes that must not be there in clear.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use rollcall_protocol::topic::{self, Kind};
use rollcall_protocol::v1::credentials::FORMAT_EF01;
use rollcall_protocol::v1::{
    Action, CardCredential, Command, Enrolment, FingerCredential, RosterAck, RosterStudent,
    RosterUpdate, Secret,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use uuid::Uuid;

pub const BIN: &str = env!("CARGO_BIN_EXE_rollcalld");
pub const DEVICE: &str = "room-101";
pub const SITE: &str = "test-site";

/// The test in the centre's place: reads roster acks and enrolments, sends rosters and commands.
pub struct Centre {
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<RosterAck>,
    enrolments: mpsc::UnboundedReceiver<Enrolment>,
}

impl Centre {
    pub async fn start(port: u16) -> anyhow::Result<Self> {
        let mut opts = MqttOptions::new(
            format!("centre-{}", Uuid::now_v7().simple()),
            "127.0.0.1",
            port,
        );
        opts.set_max_packet_size(8 << 20, 8 << 20);
        let (client, mut events) = AsyncClient::new(opts, 1000);
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let (enrol_tx, enrolments) = mpsc::unbounded_channel();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.topic.ends_with("/roster-ack") {
                            if let Ok(a) = RosterAck::decode(&p.payload) {
                                let _ = ack_tx.send(a);
                            }
                        } else if p.topic.ends_with("/enrol")
                            && let Ok(e) = Enrolment::decode(&p.payload)
                        {
                            let _ = enrol_tx.send(e);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        client
            .subscribe(
                topic::build(SITE, DEVICE, Kind::RosterAck),
                QoS::AtLeastOnce,
            )
            .await?;
        client
            .subscribe(topic::build(SITE, DEVICE, Kind::Enrol), QoS::AtLeastOnce)
            .await?;
        tokio::time::timeout(Duration::from_secs(10), ready).await??;
        Ok(Self {
            client,
            acks,
            enrolments,
        })
    }

    pub async fn send(&self, update: &RosterUpdate) -> anyhow::Result<()> {
        self.client
            .publish(
                topic::build(SITE, DEVICE, Kind::Roster),
                QoS::AtLeastOnce,
                false,
                update.encode(),
            )
            .await?;
        Ok(())
    }

    /// Publishes any bytes on one of the device's topics (hostile input).
    pub async fn publish_raw(&self, kind: Kind, payload: Vec<u8>) -> anyhow::Result<()> {
        self.client
            .publish(
                topic::build(SITE, DEVICE, kind),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await?;
        Ok(())
    }

    pub async fn command(&self, action: Action) -> anyhow::Result<()> {
        let c = Command {
            device_id: DEVICE.into(),
            command_id: Uuid::now_v7(),
            action,
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

    /// The next roster ack that satisfies `want`, within `within`.
    pub async fn ack_where(
        &mut self,
        within: Duration,
        want: impl Fn(&RosterAck) -> bool,
    ) -> anyhow::Result<RosterAck> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let ack = tokio::time::timeout_at(deadline, self.acks.recv())
                .await
                .map_err(|_| anyhow::anyhow!("no matching roster ack within {within:?}"))?
                .ok_or_else(|| anyhow::anyhow!("centre client stopped"))?;
            if want(&ack) {
                return Ok(ack);
            }
        }
    }

    /// Drops the acks received so far.
    pub fn drain_acks(&mut self) {
        while self.acks.try_recv().is_ok() {}
    }

    /// The next enrolment, within `within`.
    pub async fn enrolment(&mut self, within: Duration) -> Option<Enrolment> {
        tokio::time::timeout(within, self.enrolments.recv())
            .await
            .ok()
            .flatten()
    }
}

pub use rollcall_tests::ef01::{Module, model};

pub fn id(n: u32, kind: u8) -> Uuid {
    let mut b = [0u8; 16];
    b[0] = kind;
    b[12..].copy_from_slice(&n.to_be_bytes());
    Uuid::from_bytes(b)
}

/// A 7-byte card UID for student number `n` (PN532-like, so a simulated card reader reads it).
pub fn uid(n: u32) -> Vec<u8> {
    let mut u = vec![0x04, 0x5A, 0xC3];
    u.extend_from_slice(&(n.wrapping_mul(2_654_435_761) | 1).to_be_bytes());
    u
}

pub fn student(name: &str, n: u32, card: bool, fingers: Vec<Vec<u8>>) -> RosterStudent {
    RosterStudent {
        student: name.into(),
        cards: if card {
            vec![CardCredential {
                id: id(n, 1),
                uid: Secret::new(uid(n)),
            }]
        } else {
            vec![]
        },
        fingers: fingers
            .into_iter()
            .enumerate()
            .map(|(i, data)| FingerCredential {
                id: id(n * 8 + i as u32, 2),
                format: FORMAT_EF01.into(),
                data: Secret::new(data),
            })
            .collect(),
    }
}

pub fn update(
    version: u64,
    base: Option<u64>,
    part: u32,
    parts: u32,
    students: Vec<RosterStudent>,
    removed: Vec<String>,
) -> RosterUpdate {
    RosterUpdate {
        device_id: DEVICE.into(),
        version,
        base_version: base,
        part,
        parts,
        students,
        removed,
    }
}

/// A gauge or counter from rollcalld's metrics endpoint.
pub async fn metric(port: u16, series: &str) -> anyhow::Result<Option<i64>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    }))
}

/// Every file under `dir`, recursively.
pub fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(files(&p)),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
    out
}

/// Asserts no file under `dir` holds any of `secrets` (raw, or as hex text) in clear. Templates
/// are checked by 32-byte windows, so a fragment is found too.
pub fn assert_nothing_in_clear(dir: &Path, secrets: &[Vec<u8>]) {
    let mut needles: Vec<Vec<u8>> = Vec::new();
    for s in secrets {
        if s.len() > 32 {
            needles.extend(s.chunks_exact(32).map(<[u8]>::to_vec));
        } else {
            needles.push(s.clone());
            needles.push(hex::encode(s).into_bytes());
            needles.push(hex::encode_upper(s).into_bytes());
        }
    }
    let all = files(dir);
    assert!(!all.is_empty(), "nothing to scan in {}", dir.display());
    for f in all {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_slice()),
                "{} holds a credential in clear",
                f.display()
            );
        }
    }
}
