//! The EF01 driver against the EF01 simulator over an in-memory pipe: whole flows and faults.

use std::collections::BTreeMap;
use std::time::Duration;

use rollcall_drivers::ef01::sim::{Ef01Sim, Fault, SimHandle, SimModel};
use rollcall_drivers::ef01::{Confirm, Ef01, Ef01Error, Identify};
use tokio::io::DuplexStream;
use tokio_util::sync::CancellationToken;

/// Identifies, skipping the "no finger" a lifted hand leaves between placements.
async fn identify_next(dev: &mut Ef01<DuplexStream>) -> Identify {
    for _ in 0..3 {
        match dev.identify(200).await.unwrap() {
            Identify::NoFinger => continue,
            other => return other,
        }
    }
    Identify::NoFinger
}

fn start(sim: Ef01Sim) -> (Ef01<DuplexStream>, SimHandle, CancellationToken) {
    let (host, module) = tokio::io::duplex(4096);
    let handle = SimHandle::new(sim);
    let stop = CancellationToken::new();
    let serve = handle.clone();
    let token = stop.clone();
    tokio::spawn(async move { serve.serve(module, token).await });
    let dev = Ef01::new(host).with_timeout(Duration::from_millis(300), 2);
    (dev, handle, stop)
}

#[tokio::test]
async fn enrol_then_identify_then_template_round_trip() {
    let (mut dev, sim, _stop) = start(Ef01Sim::new(SimModel::R503));
    let finger = sim.lock().template_for(42);
    {
        let mut s = sim.lock();
        s.place_finger(finger.clone());
        s.place_finger(finger.clone());
    }
    let template = dev.enroll(7, 2, Duration::from_secs(2)).await.unwrap();
    assert_eq!(template, finger, "template read back is the one stored");
    assert_eq!(sim.lock().library().get(&7), Some(&finger));

    sim.lock().place_finger(finger.clone());
    assert_eq!(
        identify_next(&mut dev).await,
        Identify::Match {
            slot: 7,
            score: 150
        }
    );
    let stranger = sim.lock().template_for(43);
    sim.lock().place_finger(stranger);
    assert_eq!(identify_next(&mut dev).await, Identify::NoMatch);
    assert_eq!(identify_next(&mut dev).await, Identify::NoFinger);
    assert_eq!(dev.template_count().await.unwrap(), 1);
}

#[tokio::test]
async fn enrolling_a_known_finger_is_refused() {
    let (mut dev, sim, _stop) = start(Ef01Sim::new(SimModel::R503));
    let finger = sim.lock().template_for(1);
    {
        let mut s = sim.lock();
        s.insert(3, finger.clone());
        s.place_finger(finger.clone());
        s.place_finger(finger.clone());
    }
    let err = dev.enroll(9, 2, Duration::from_secs(1)).await.unwrap_err();
    assert!(
        matches!(err, Ef01Error::AlreadyEnrolled { slot: Some(3) }),
        "{err:?}"
    );
    assert!(!sim.lock().library().contains_key(&9));
}

#[tokio::test]
async fn module_reporting_already_enrolled_on_store() {
    let (mut dev, sim, _stop) = start(Ef01Sim::new(SimModel::R307));
    let template = sim.lock().template_for(5);
    sim.lock().inject(Fault::Code(Confirm::ALREADY_ENROLLED));
    let err = dev.load_template(1, &template).await;
    // The fault answers DownChar itself, so the load fails at its first step.
    assert!(err.is_err());
    dev.load_template(1, &template).await.unwrap();
    sim.lock().inject(Fault::Code(Confirm::ALREADY_ENROLLED));
    let err = dev.store(1, 2).await.unwrap_err();
    assert!(
        matches!(err, Ef01Error::AlreadyEnrolled { slot: None }),
        "{err:?}"
    );
}

#[tokio::test]
async fn library_full_is_reported() {
    let model = SimModel {
        library_size: 2,
        ..SimModel::R307
    };
    let (mut dev, sim, _stop) = start(Ef01Sim::new(model));
    let (a, b, c) = {
        let s = sim.lock();
        (s.template_for(1), s.template_for(2), s.template_for(3))
    };
    dev.load_template(0, &a).await.unwrap();
    dev.load_template(1, &b).await.unwrap();
    let err = dev.load_template(1, &c).await;
    assert!(err.is_ok(), "overwriting a slot is not 'full': {err:?}");
    sim.lock().inject(Fault::Code(Confirm::LIBRARY_FULL));
    let err = dev.empty_library().await.unwrap_err();
    assert!(
        matches!(
            err,
            Ef01Error::Module {
                code: Confirm::LIBRARY_FULL,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn reconcile_makes_library_match_roster() {
    let (mut dev, sim, _stop) = start(Ef01Sim::new(SimModel::R307));
    let t = |n| sim.lock().template_for(n);
    {
        let mut s = sim.lock();
        let t = s.template_for(1);
        s.insert(1, t); // on roster: kept
        let t = s.template_for(2);
        s.insert(2, t); // revoked: deleted
        let t = s.template_for(300);
        s.insert(300, t); // revoked, second index page: deleted
    }
    let roster = BTreeMap::from([(1u16, t(1)), (5u16, t(5)), (700u16, t(700))]);
    let done = dev.reconcile(&roster).await.unwrap();
    assert_eq!(done.deleted, vec![2, 300]);
    assert_eq!(done.loaded, vec![5, 700]);
    assert_eq!(sim.lock().library(), &roster);
    assert_eq!(dev.template_count().await.unwrap(), 3);
    assert_eq!(dev.reconcile(&roster).await.unwrap(), Default::default());
}

#[tokio::test]
async fn faults_on_replies_are_survived() {
    let (mut dev, sim, _stop) = start(Ef01Sim::new(SimModel::R503));
    {
        let mut s = sim.lock();
        s.inject(Fault::BadChecksum);
        s.inject(Fault::GarbageBefore(vec![0x00, 0xEF, 0x42, 0x55]));
        s.inject(Fault::Truncate(7));
        s.inject(Fault::NoReply);
    }
    // First reply corrupt (re-sent), second has garbage first (fine), third truncated and
    // fourth missing: with 2 retries per command, every call still succeeds.
    assert_eq!(dev.template_count().await.unwrap(), 0);
    assert_eq!(dev.template_count().await.unwrap(), 0);
    assert_eq!(dev.template_count().await.unwrap(), 0);
    assert!(dev.corrupt_frames() >= 2);
}

#[tokio::test]
async fn stuck_module_times_out_then_recovers() {
    let (mut dev, sim, _stop) = start(Ef01Sim::new(SimModel::R503));
    sim.lock().set_stuck(true);
    let err = dev.handshake().await.unwrap_err();
    assert!(
        matches!(err, Ef01Error::Timeout { attempts: 3, .. }),
        "{err:?}"
    );
    sim.lock().set_stuck(false);
    dev.handshake().await.unwrap();
}

#[tokio::test]
async fn password_must_be_verified_first() {
    let mut module = Ef01Sim::new(SimModel::R503);
    module.set_password(0x1234_5678);
    let (mut dev, _sim, _stop) = start(module);
    let err = dev.template_count().await.unwrap_err();
    assert!(
        matches!(
            err,
            Ef01Error::Module {
                code: Confirm::PASSWORD_REQUIRED,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(dev.verify_password(1).await.is_err());
    dev.verify_password(0x1234_5678).await.unwrap();
    assert_eq!(dev.template_count().await.unwrap(), 0);
}

#[tokio::test]
async fn soft_reset_waits_for_0x55() {
    let (mut dev, sim, _stop) = start(Ef01Sim::new(SimModel::R503));
    dev.soft_reset().await.unwrap();
    let names: Vec<_> = sim.lock().received().iter().map(|i| i.name()).collect();
    assert_eq!(names, ["SoftReset", "HandShake"]);
}

#[tokio::test(start_paused = true)]
async fn module_powering_on_ignores_commands_until_its_ready_byte() {
    let (host, module) = tokio::io::duplex(4096);
    let sim = SimHandle::powering_on(SimModel::R503);
    let stop = CancellationToken::new();
    let (serve, token) = (sim.clone(), stop.clone());
    tokio::spawn(async move { serve.serve(module, token).await });
    let mut dev = Ef01::new(host).with_timeout(Duration::from_millis(100), 0);
    let start = tokio::time::Instant::now();
    let err = dev.handshake().await.unwrap_err();
    assert!(
        matches!(err, Ef01Error::Timeout { .. }),
        "deaf while booting: {err:?}"
    );
    assert!(
        sim.lock().received().is_empty(),
        "a booting module executes nothing"
    );
    dev.wait_ready(Duration::from_secs(2)).await.unwrap();
    let took = start.elapsed();
    assert!(
        took >= SimModel::R503.boot_time
            && took < SimModel::R503.boot_time + Duration::from_millis(150),
        "ready right after the boot time: {took:?}"
    );
    dev.handshake().await.unwrap();
    dev.get_echo().await.unwrap();
    assert!(!sim.lock().is_booting());

    // A power cycle loses the verified password but keeps the library.
    let t = sim.lock().template_for(9);
    sim.lock().insert(4, t);
    sim.power_cycle();
    dev.wait_ready(Duration::from_secs(2)).await.unwrap();
    assert_eq!(sim.lock().library().len(), 1);
}

#[tokio::test]
async fn random_code_comes_from_the_module() {
    let (mut dev, sim, _stop) = start(Ef01Sim::new(SimModel::R503));
    let a = dev.random_code().await.unwrap();
    let b = dev.random_code().await.unwrap();
    assert_ne!(a, b);
    let names: Vec<_> = sim.lock().received().iter().map(|i| i.name()).collect();
    assert_eq!(names, ["GetRandomCode", "GetRandomCode"]);
}

#[tokio::test]
async fn aura_led_reaches_module() {
    let (mut dev, sim, _stop) = start(Ef01Sim::new(SimModel::R503));
    dev.aura(2, 0x40, 4, 3).await.unwrap();
    assert_eq!(sim.lock().aura(), Some([2, 0x40, 4, 3]));
    let (mut dev, _sim, _stop) = start(Ef01Sim::new(SimModel::R307));
    let err = dev.aura(2, 0x40, 4, 3).await.unwrap_err();
    assert!(
        matches!(
            err,
            Ef01Error::Module {
                code: Confirm::UNSUPPORTED,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn enrol_times_out_without_a_finger() {
    let (mut dev, _sim, _stop) = start(Ef01Sim::new(SimModel::R503));
    let err = dev
        .enroll(1, 2, Duration::from_millis(250))
        .await
        .unwrap_err();
    assert!(matches!(err, Ef01Error::NoFingerInTime(_)), "{err:?}");
}
