//! The EF01 template library over a real pseudo-terminal: the driver opens the pty's slave by
//! path through tokio-serial at the module's baud rate, as it opens /dev/ttyAMA0 on a Pi, and the
//! byte-level simulator (or a hostile module written here) answers on the master end.
#![cfg(feature = "linux")]

use std::collections::BTreeSet;
use std::time::Duration;

use rollcall_drivers::ef01::codec::{Packet, PacketKind};
use rollcall_drivers::ef01::sim::{Ef01Sim, Fault, SimHandle, SimModel};
use rollcall_drivers::ef01::{Capture, Confirm, Ef01, Ef01Error, Merge};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::SerialStream;
use tokio_util::sync::CancellationToken;

mod common;
use common::{assert_tty_configurable, open, pty};

/// The module's default speed (readers.md: 9600 x 6).
const BAUD: u32 = 57_600;

/// A simulated module on the master end of a fresh pty; the driver on the slave, opened by path.
/// The cancellation token stops the simulator when the test ends; the last value keeps the pty.
fn start(sim: Ef01Sim) -> (Ef01<SerialStream>, SimHandle, Stop) {
    assert_tty_configurable();
    let (master, path, keep) = pty();
    let handle = SimHandle::new(sim);
    let stop = CancellationToken::new();
    let (serve, token) = (handle.clone(), stop.clone());
    tokio::spawn(async move { serve.serve(master, token).await });
    let dev = Ef01::new(open(&path, BAUD)).with_timeout(Duration::from_millis(500), 1);
    (dev, handle, Stop(stop.drop_guard(), keep))
}

/// Stops the simulator and keeps the pty alive for as long as the test holds it.
struct Stop(
    #[allow(dead_code)] tokio_util::sync::DropGuard,
    #[allow(dead_code)] SerialStream,
);

fn model_with_packet_size(model: SimModel, code: u16) -> SimModel {
    SimModel {
        packet_size_code: code,
        ..model
    }
}

#[tokio::test]
async fn template_downloaded_reads_back_identical_on_both_models_at_every_packet_size() {
    for model in [SimModel::R307, SimModel::R503] {
        for code in 0..=3u16 {
            let (mut dev, sim, _stop) = start(Ef01Sim::new(model_with_packet_size(model, code)));
            let params = dev.read_system_parameters().await.unwrap();
            assert_eq!(params.packet_size(), 32 << code);
            let template = sim.lock().template_for(u32::from(code) + 1);
            assert_eq!(template.len(), model.template_len);

            dev.download_char(1, &template).await.unwrap();
            assert_eq!(
                dev.upload_char(1).await.unwrap(),
                template,
                "{}-byte template in {}-byte packets",
                model.template_len,
                32 << code
            );
            // Through the library too: store, load into the other buffer, read that out.
            dev.store(1, 3).await.unwrap();
            dev.load_char(2, 3).await.unwrap();
            assert_eq!(dev.upload_char(2).await.unwrap(), template);
            assert_eq!(sim.lock().library().get(&3), Some(&template));
        }
    }
}

#[tokio::test]
async fn first_download_asks_the_module_for_its_packet_size() {
    // A module set to 32-byte packets: 128-byte packets (the factory default) would not fill
    // its buffer, and Store would answer "template empty".
    let (mut dev, sim, _stop) = start(Ef01Sim::new(model_with_packet_size(SimModel::R307, 0)));
    let template = sim.lock().template_for(8);
    dev.load_template(12, &template).await.unwrap();
    assert_eq!(sim.lock().library().get(&12), Some(&template));
    let names: Vec<_> = sim.lock().received().iter().map(|i| i.name()).collect();
    assert_eq!(names, ["ReadSysPara", "DownChar", "Store"]);
}

#[tokio::test]
async fn a_template_of_the_wrong_length_is_not_stored() {
    let (mut dev, sim, _stop) = start(Ef01Sim::new(SimModel::R307));
    let r503_template = vec![0x5A; SimModel::R503.template_len];
    dev.download_char(1, &r503_template).await.unwrap();
    let err = dev.store(1, 0).await.unwrap_err();
    assert!(
        matches!(
            err,
            Ef01Error::Module {
                command: "Store",
                code: Confirm::TEMPLATE_EMPTY
            }
        ),
        "{err}"
    );
    assert!(sim.lock().library().is_empty());
    let err = dev.download_char(1, &[]).await.unwrap_err();
    assert!(err.to_string().contains("0 bytes"), "{err}");
}

#[tokio::test]
async fn index_table_shows_exactly_the_stored_slots_across_all_four_pages() {
    let (mut dev, sim, _stop) = start(Ef01Sim::new(SimModel::R307));
    assert_eq!(dev.capacity().await.unwrap(), 1000);
    assert_eq!(dev.read_index_table().await.unwrap(), BTreeSet::new());
    let slots = [0u16, 7, 8, 255, 256, 511, 512, 767, 768, 999];
    for &slot in &slots {
        let template = sim.lock().template_for(u32::from(slot));
        dev.load_template(slot, &template).await.unwrap();
    }
    assert_eq!(dev.read_index_table().await.unwrap(), BTreeSet::from(slots));
    assert_eq!(dev.template_count().await.unwrap(), slots.len() as u16);

    // Storing into an occupied slot replaces its template; the count does not change.
    let other = sim.lock().template_for(5000);
    dev.load_template(7, &other).await.unwrap();
    dev.load_char(1, 7).await.unwrap();
    assert_eq!(dev.upload_char(1).await.unwrap(), other);
    assert_eq!(dev.template_count().await.unwrap(), slots.len() as u16);

    // Slot 1000 is past a 1000-slot library: 0x0B.
    let err = dev.store(1, 1000).await.unwrap_err();
    assert!(
        matches!(
            err,
            Ef01Error::Module {
                code: Confirm::BAD_PAGE,
                ..
            }
        ),
        "{err}"
    );
    // An empty slot does not load: 0x0C.
    let err = dev.load_char(1, 1).await.unwrap_err();
    assert!(
        matches!(
            err,
            Ef01Error::Module {
                code: Confirm::BAD_TEMPLATE,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_200_slot_library_reads_one_index_page() {
    let (mut dev, sim, _stop) = start(Ef01Sim::new(SimModel::R503));
    assert_eq!(dev.capacity().await.unwrap(), 200);
    let template = sim.lock().template_for(1);
    dev.load_template(199, &template).await.unwrap();
    assert_eq!(dev.read_index_table().await.unwrap(), BTreeSet::from([199]));
    let pages: Vec<_> = sim
        .lock()
        .received()
        .iter()
        .filter(|i| i.name() == "ReadIndexTable")
        .cloned()
        .collect();
    assert_eq!(
        pages,
        [rollcall_drivers::ef01::Instruction::ReadIndexTable { page: 0 }]
    );
    let err = dev.store(1, 200).await.unwrap_err();
    assert!(
        matches!(
            err,
            Ef01Error::Module {
                code: Confirm::BAD_PAGE,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn delete_ranges_then_empty_the_library() {
    let (mut dev, sim, _stop) = start(Ef01Sim::new(SimModel::R307));
    let filled: Vec<u16> = (0..20).chain([300, 998, 999]).collect();
    {
        let mut s = sim.lock();
        for &slot in &filled {
            let t = s.template_for(u32::from(slot));
            s.insert(slot, t);
        }
    }
    dev.delete(5, 10).await.unwrap(); // 5..=14
    dev.delete(300, 1).await.unwrap();
    dev.delete(400, 50).await.unwrap(); // empty slots: nothing to do, still OK
    let left: BTreeSet<u16> = (0..5).chain(15..20).chain([998, 999]).collect();
    assert_eq!(dev.read_index_table().await.unwrap(), left);

    // A range reaching past slot 999 is refused whole (0x10) and deletes nothing.
    let err = dev.delete(995, 10).await.unwrap_err();
    assert!(
        matches!(
            err,
            Ef01Error::Module {
                code: Confirm::DELETE_FAILED,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(dev.template_count().await.unwrap(), left.len() as u16);
    dev.delete(998, 2).await.unwrap();
    assert_eq!(dev.template_count().await.unwrap(), left.len() as u16 - 2);

    dev.empty_library().await.unwrap();
    assert_eq!(dev.read_index_table().await.unwrap(), BTreeSet::new());
    assert_eq!(dev.template_count().await.unwrap(), 0);
    assert!(sim.lock().library().is_empty());
}

#[tokio::test]
async fn enrolment_two_captures_merge_check_store_upload() {
    let (mut dev, sim, _stop) = start(Ef01Sim::new(SimModel::R503));
    let finger = sim.lock().template_for(42);
    let capacity = dev.capacity().await.unwrap();

    assert_eq!(dev.capture(1).await.unwrap(), Capture::NoFinger);
    sim.lock().place_finger(finger.clone());
    assert_eq!(dev.capture(1).await.unwrap(), Capture::Captured);
    assert!(!dev.finger_present().await.unwrap(), "the student lifted");
    sim.lock().place_finger(finger.clone());
    assert_eq!(dev.capture(2).await.unwrap(), Capture::Captured);
    assert_eq!(dev.register_model().await.unwrap(), Merge::Merged);
    assert_eq!(
        dev.search(1, 0, capacity).await.unwrap(),
        None,
        "not enrolled yet"
    );
    dev.store(1, 17).await.unwrap();
    assert_eq!(dev.upload_char(1).await.unwrap(), finger);
    assert_eq!(sim.lock().library().get(&17), Some(&finger));

    // The same finger again: the duplicate check finds it in slot 17.
    assert!(
        !dev.finger_present().await.unwrap(),
        "lifted after the second capture"
    );
    for _ in 0..2 {
        sim.lock().place_finger(finger.clone());
    }
    assert_eq!(dev.capture(1).await.unwrap(), Capture::Captured);
    assert!(!dev.finger_present().await.unwrap());
    assert_eq!(dev.capture(2).await.unwrap(), Capture::Captured);
    assert_eq!(dev.register_model().await.unwrap(), Merge::Merged);
    assert_eq!(
        dev.search(1, 0, capacity)
            .await
            .unwrap()
            .map(|(slot, _)| slot),
        Some(17)
    );
}

#[tokio::test]
async fn a_second_capture_of_another_finger_is_refused_at_the_merge() {
    let (mut dev, sim, _stop) = start(Ef01Sim::new(SimModel::R307));
    let (a, b) = {
        let s = sim.lock();
        (s.template_for(1), s.template_for(2))
    };
    sim.lock().place_finger(a);
    assert_eq!(dev.capture(1).await.unwrap(), Capture::Captured);
    assert!(!dev.finger_present().await.unwrap());
    sim.lock().place_finger(b);
    assert_eq!(dev.capture(2).await.unwrap(), Capture::Captured);
    assert_eq!(dev.register_model().await.unwrap(), Merge::Mismatch);
    assert!(sim.lock().library().is_empty());

    // An unusable image is an ordinary outcome too.
    sim.lock().inject(Fault::Code(Confirm::IMAGE_FAILED));
    assert_eq!(
        dev.capture(1).await.unwrap(),
        Capture::BadImage(Confirm::IMAGE_FAILED)
    );
}

#[tokio::test]
async fn a_truncated_or_corrupt_upload_is_an_error_and_the_next_command_works() {
    let (mut dev, sim, _stop) = start(Ef01Sim::new(SimModel::R503));
    let template = sim.lock().template_for(3);
    dev.download_char(1, &template).await.unwrap();

    // Ack (12 bytes) and two whole 128-byte data packets (139 bytes each), then silence.
    sim.lock().inject(Fault::Truncate(12 + 2 * 139 + 20));
    let err = dev.upload_char(1).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("data stopped after 256 bytes without an end-of-data packet"),
        "{err}"
    );
    assert_eq!(dev.template_count().await.unwrap(), 0);

    sim.lock().inject(Fault::BadChecksum); // the end-of-data packet's
    let err = dev.upload_char(1).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("corrupt data packet after 1408 bytes"),
        "{err}"
    );
    assert_eq!(dev.template_count().await.unwrap(), 0);

    sim.lock()
        .inject(Fault::GarbageBefore(vec![0x00, 0xEF, 0x13, 0x55]));
    assert_eq!(
        dev.upload_char(1).await.unwrap(),
        template,
        "garbage skipped"
    );
}

/// A module that answers the first command (UpChar) with OK and then does what `after` does.
async fn hostile_module<F, Fut>(after: F) -> (Ef01<SerialStream>, Stop)
where
    F: FnOnce(SerialStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    assert_tty_configurable();
    let (mut master, path, keep) = pty();
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        // Wait for the UpChar command (13 bytes), answer OK, then misbehave.
        let mut command = [0u8; 13];
        if master.read_exact(&mut command).await.is_err() {
            return;
        }
        let ok = Packet::new(PacketKind::Ack, vec![0x00]).encode();
        if master.write_all(&ok).await.is_err() {
            return;
        }
        tokio::select! {
            () = after(master) => {}
            () = token.cancelled() => {}
        }
    });
    let dev = Ef01::new(open(&path, BAUD)).with_timeout(Duration::from_millis(300), 0);
    (dev, Stop(stop.drop_guard(), keep))
}

#[tokio::test]
async fn a_module_streaming_data_without_end_cannot_make_the_host_allocate_without_limit() {
    let (mut dev, _stop) = hostile_module(|mut master| async move {
        let packet = Packet::new(PacketKind::Data, vec![0xAB; 256]).encode();
        while master.write_all(&packet).await.is_ok() {}
    })
    .await;
    let err = dev.upload_char(1).await.unwrap_err();
    assert!(err.to_string().contains("more than 4096 bytes"), "{err}");
}

#[tokio::test]
async fn a_module_trickling_data_is_given_up_on() {
    // One byte every 50 ms: each packet within the 300 ms reply timeout, the whole far too slow.
    let (mut dev, _stop) = hostile_module(|mut master| async move {
        let packet = Packet::new(PacketKind::Data, vec![0xCD]).encode();
        while master.write_all(&packet).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let err = dev.upload_char(1).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("no end-of-data packet within 2.4s"),
        "{err}"
    );
}

#[tokio::test]
async fn a_module_sending_garbage_after_its_ack_gives_an_error_not_a_panic() {
    let (mut dev, _stop) = hostile_module(|mut master| async move {
        let mut x: u32 = 0x1234_5678;
        let garbage: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        for _ in 0..50 {
            if master.write_all(&garbage).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let err = dev.upload_char(1).await.unwrap_err();
    assert!(
        matches!(
            err,
            Ef01Error::Protocol {
                command: "UpChar",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_module_answering_an_ack_inside_the_data_is_refused() {
    let (mut dev, _stop) = hostile_module(|mut master| async move {
        let mut bytes = Packet::new(PacketKind::Data, vec![1; 128]).encode();
        bytes.extend(Packet::new(PacketKind::Ack, vec![0x00]).encode());
        let _ = master.write_all(&bytes).await;
        std::future::pending::<()>().await;
    })
    .await;
    let err = dev.upload_char(1).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("Ack packet inside the data after 128 bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn a_paced_module_takes_at_least_the_line_time() {
    // The benchmark's pacing (serve_at_baud) checked from below only: bytes cannot cross a
    // 57600-baud line faster than 5760 a second.
    assert_tty_configurable();
    let (master, path, _keep) = pty();
    let sim = SimHandle::new(Ef01Sim::new(SimModel::R307));
    let stop = CancellationToken::new();
    let (serve, token) = (sim.clone(), stop.clone());
    tokio::spawn(async move { serve.serve_at_baud(master, BAUD, token).await });
    let mut dev = Ef01::new(open(&path, BAUD));
    dev.read_system_parameters().await.unwrap();
    let template = sim.lock().template_for(1);
    let before = sim.lock().line_bytes();
    let started = std::time::Instant::now();
    dev.load_template(0, &template).await.unwrap();
    let took = started.elapsed();
    let after = sim.lock().line_bytes();
    let bytes = (after.0 - before.0) + (after.1 - before.1);
    // DownChar 13 + ack 12 + 4 data packets of 139 + Store 15 + ack 12.
    assert_eq!(bytes, 13 + 12 + 4 * 139 + 15 + 12);
    let line_time = Duration::from_secs_f64(bytes as f64 * 10.0 / f64::from(BAUD));
    assert!(took >= line_time, "{took:?} < {line_time:?}");
    stop.cancel();
}
