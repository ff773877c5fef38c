//! A roster file with ids that are not safe to store or show is refused by the real binary, by
//! `rollcalld validate` (which the unit runs before every start) and by `rollcalld run`, with
//! the key named; nothing is journaled.

use std::path::Path;
use std::process::Command;

use rollcall_tests::rollcalld::GatewayOptions;

const BIN: &str = env!("CARGO_BIN_EXE_rollcalld");

#[test]
fn a_roster_with_unsafe_ids_is_refused_by_validate_and_run() -> anyhow::Result<()> {
    for (roster, key) in [
        ("[cards]\n\"0A\" = \"S0\\u0000X\"\n", "cards.\"0A\""),
        ("[cards]\n\"0B\" = \"line\\nbreak\"\n", "cards.\"0B\""),
        ("[cards]\n\"0C\" = \"\\u001b[31mred\"\n", "cards.\"0C\""),
        ("[cards]\n\"XYZ\" = \"S001\"\n", "XYZ"),
        ("[fingerprints]\n\"one\" = \"S001\"\n", "one"),
    ] {
        let dir = tempfile::tempdir()?;
        // Port 1: nothing listens; the start must fail on the roster before it matters.
        let config = GatewayOptions::new(1).write(dir.path())?;
        let state = dir.path().join("state");
        std::fs::write(state.join("roster.toml"), roster)?;

        let out = Command::new(BIN)
            .args(["validate", "--config"])
            .arg(&config)
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "validate accepted {roster:?}");
        assert!(
            err.contains(key),
            "validate of {roster:?} must name {key}: {err}"
        );

        let out = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_BACKTRACE", "0")
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "run with {roster:?}: {err}");
        assert!(
            err.contains(key),
            "run with {roster:?} must name {key}: {err}"
        );
        assert!(
            !Path::new(&state.join("control.sock")).exists(),
            "nothing may be listening"
        );
    }
    Ok(())
}
