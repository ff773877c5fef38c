//! kill -9 of rollcalld during roster apply, at random moments (issue 9 point 7): the real binary
//! is sent a large roster (in parts) and killed after a random delay, twenty times over. After
//! each kill the sealed roster on disk is exactly the old version or the new one, never a mix;
//! after each restart the module's library (reconciled at start-up) holds exactly the stored
//! roster's templates in the stored slots.

mod credentials_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use credentials_support::*;
use rollcall_daemon::credentials::store::{RosterStore, StoredRoster};
use rollcall_protocol::v1::RosterStudent;
use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::rollcalld::{GatewayOptions, Rollcalld};

const CYCLES: u64 = 20;
const STUDENTS: u32 = 240;
const PER_PART: usize = 60;

/// Version `v`'s roster: 240 of 400 students (a window that moves with `v`), each with a card
/// and a template.
fn roster(module: &Module, v: u64) -> Vec<RosterStudent> {
    let mut students: Vec<RosterStudent> = (0..STUDENTS)
        .map(|i| {
            let n = (v as u32 * 53 + i) % 400 + 1;
            student(&format!("S{n:03}"), n, true, vec![module.template(n)])
        })
        .collect();
    students.sort_by(|a, b| a.student.cmp(&b.student));
    students
}

fn stored(state: &Path) -> anyhow::Result<StoredRoster> {
    Ok(RosterStore::open(state, DEVICE)?
        .load()?
        .unwrap_or_default())
}

/// Waits until the module holds exactly the stored roster's templates, slot for slot.
async fn module_matches(module: &Module, state: &Path) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let want: BTreeMap<u16, Vec<u8>> = stored(state)?
            .module_slots()
            .into_iter()
            .map(|(slot, _, _, data)| (slot, data.to_vec()))
            .collect();
        let got = module.library();
        if got == want {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "module holds {} slots, the stored roster {} ({} differ)",
                got.len(),
                want.len(),
                want.iter().filter(|(s, t)| got.get(s) != Some(t)).count()
                    + got.keys().filter(|s| !want.contains_key(s)).count()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_roster_apply_leaves_the_old_roster_or_the_new_one() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let broker = Mosquitto::start()?;
    let mut centre = Centre::start(broker.port()).await?;
    let module = Module::start(model(1000))?;
    let mut opts = GatewayOptions::new(broker.port());
    opts.roster_from_centre = true;
    opts.readers = Some(format!(
        "[[reader]]\nid = \"door-card\"\nkind = \"simulated-card\"\n{}",
        module.reader("door-finger")
    ));
    let config = opts.write(dir.path())?;
    let mut sent: BTreeMap<u64, Vec<RosterStudent>> = BTreeMap::new();
    sent.insert(0, Vec::new());
    let (mut kept_old, mut kept_new) = (0, 0);
    for version in 1..=CYCLES {
        let mut gw = Rollcalld::start(Path::new(BIN), &config).await?;
        // Where it stands after the restart (parts queued by the broker while it was dead may
        // complete an update now: let the acks settle).
        centre.ack_where(Duration::from_secs(20), |_| true).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = stored(&state)?;
        assert_eq!(
            Some(&before.students),
            sent.get(&before.version),
            "stored roster of version {} differs from what was sent",
            before.version
        );
        module_matches(&module, &state)
            .await
            .map_err(|e| anyhow::anyhow!("after restart {version}: {e}; log:\n{}", gw.log()))?;

        let next = roster(&module, version);
        sent.insert(version, next.clone());
        let parts = next.chunks(PER_PART).count() as u32;
        for (i, chunk) in next.chunks(PER_PART).enumerate() {
            centre
                .send(&update(
                    version,
                    None,
                    i as u32,
                    parts,
                    chunk.to_vec(),
                    vec![],
                ))
                .await?;
        }
        // Half the kills land while the parts arrive and the roster is stored, half while the
        // module is being loaded.
        let delay = rand::random::<u64>() % if version % 2 == 0 { 60 } else { 700 };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        gw.kill9();
        module.flush();

        let after = stored(&state)?;
        assert!(
            after.version == before.version || after.version == version,
            "kill after {delay} ms: stored version {} is neither {} nor {version}",
            after.version,
            before.version
        );
        assert_eq!(
            Some(&after.students),
            sent.get(&after.version),
            "kill after {delay} ms: stored roster of version {} is a mix",
            after.version
        );
        if after.version == version {
            kept_new += 1;
        } else {
            kept_old += 1;
        }
    }
    let gw = Rollcalld::start(Path::new(BIN), &config).await?;
    centre.ack_where(Duration::from_secs(20), |_| true).await?;
    module_matches(&module, &state)
        .await
        .map_err(|e| anyhow::anyhow!("after the last restart: {e}; log:\n{}", gw.log()))?;
    println!("{CYCLES} kills: {kept_old} kept the old roster, {kept_new} the new one");
    Ok(())
}
