//! rollcall-ingest over mutual TLS: a broker that requires client certificates, takes the CN as
//! the user name and grants by ACL (devices their own topics, ingest every device's punches and
//! status and every ack); a device's punch reaches the database and its ack comes back, all
//! over TLS.

mod ingest_common;

use ingest_common::service::start;
use ingest_common::*;
use rollcall_ingest::config::SessionClock;
use rollcall_protocol::{topic, v1};
use rollcall_tests::pki::Pki;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use std::time::{Duration, Instant};

struct TlsBroker {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_broker(pki: &Pki) -> TlsBroker {
    let dir = tempfile::tempdir().unwrap();
    let port = rollcall_tests::free_port().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        format!(
            "{}\n{}",
            topic::centre_acl("rollcall-ingest"),
            topic::device_acl()
        ),
    )
    .unwrap();
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let conf = dir.path().join("m.conf");
    std::fs::write(
        &conf,
        format!(
            "{}listener {port} 127.0.0.1\ncafile {p}/ca.pem\ncertfile {p}/server.pem\nkeyfile {p}/server.key\n\
             require_certificate true\nuse_identity_as_username true\nacl_file {acl}\nmax_inflight_messages 0\n\
             set_tcp_nodelay true\nlog_dest file {d}/m.log\n",
            if root { "user root\n" } else { "" },
            p = pki.dir().display(),
            acl = acl.display(),
            d = dir.path().display(),
        ),
    )
    .unwrap();
    let child = std::process::Command::new(rollcall_tests::mosquitto::binary().unwrap())
        .arg("-c")
        .arg(&conf)
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "TLS broker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    TlsBroker {
        child,
        port,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn punches_and_acks_travel_over_mutual_tls_with_per_device_acls() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(pki_dir.path()).unwrap();
    let (icert, ikey) = pki.client("rollcall-ingest").unwrap();
    let (dcert, dkey) = pki.client(DEVICE).unwrap();
    let broker = tls_broker(&pki);
    let db = ingest_common::db(Schema::Standalone).await.unwrap();
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    let toml = format!(
        "node_name = \"tls\"\n[database]\nurl = \"{}\"\nschema_mode = \"existing\"\n[mqtt]\nurl = \"mqtts://127.0.0.1:{}\"\n\
         ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n[jobs]\nenabled = false\n",
        db.url,
        broker.port,
        pki.dir().join("ca.pem").display(),
        icert.display(),
        ikey.display()
    );
    let ingest = start(&toml);

    // The device, over TLS with its own certificate.
    let mut o = MqttOptions::new("sim-tls", "127.0.0.1", broker.port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_transport(Transport::tls(
        std::fs::read(pki.dir().join("ca.pem")).unwrap(),
        Some((
            std::fs::read(&dcert).unwrap(),
            std::fs::read(&dkey).unwrap(),
        )),
        None,
    ));
    let (client, mut el) = AsyncClient::new(o, 100);
    client
        .subscribe(
            topic::build(SITE, DEVICE, topic::Kind::Ack),
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let batch = v1::PunchBatch {
        device_id: DEVICE.into(),
        epoch: 1,
        punches: vec![punch(1, ist("09:01:00"), student(c.students[0]))],
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut next_send = Instant::now();
    let mut acked = 0;
    while acked < 1 {
        assert!(Instant::now() < deadline, "no ack over TLS");
        if Instant::now() >= next_send {
            // Re-sent until acked: ingest may not have subscribed yet.
            client
                .publish(
                    topic::build(SITE, DEVICE, topic::Kind::Punches),
                    QoS::AtLeastOnce,
                    false,
                    batch.encode(),
                )
                .await
                .unwrap();
            next_send = Instant::now() + Duration::from_secs(1);
        }
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            tokio::time::timeout(Duration::from_millis(100), el.poll()).await
            && let Ok(a) = v1::Ack::decode(&p.payload)
        {
            acked = a.up_to_seq;
        }
    }
    assert_eq!(
        record(&db.client, c.session, c.students[0])
            .await
            .unwrap()
            .0,
        "present"
    );
    ingest.shutdown().await;
}
