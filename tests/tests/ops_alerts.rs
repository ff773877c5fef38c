//! The alert rules in ops/prometheus: valid for Prometheus (`promtool check rules`) and doing
//! what their unit tests say (`promtool test rules`): each alert fires when it should, after its
//! `for`, with its summary, and healthy series fire nothing. promtool comes with Debian's
//! `prometheus` package (scripts/install-deps.sh installs it); without it these tests fail,
//! they never pass silently.

use std::path::{Path, PathBuf};
use std::process::Command;

fn ops() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/prometheus")
}

fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file());
    match found {
        Some(p) => p,
        None => panic!(
            "promtool not found: the alert rules cannot be checked. Install Debian's prometheus \
             package (scripts/install-deps.sh does)"
        ),
    }
}

fn run(args: &[&str]) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(ops())
        .output()
        .expect("running promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_alert_rules_are_valid_prometheus_rules() {
    let text = run(&["check", "rules", "rollcall-alerts.yml"]);
    assert!(text.contains("SUCCESS: 16 rules found"), "{text}");
}

#[test]
fn every_alert_fires_when_its_unit_tests_say_and_not_before() {
    let text = run(&["test", "rules", "rollcall-alerts.test.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn every_alert_has_a_unit_test_and_a_readme_entry() {
    let rules = std::fs::read_to_string(ops().join("rollcall-alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(ops().join("rollcall-alerts.test.yml")).unwrap();
    let readme = std::fs::read_to_string(ops().join("../../README.md")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 16, "{alerts:?}");
    for a in alerts {
        assert!(
            tests.contains(&format!(
                "alertname: {a}\n        exp_alerts:\n          - "
            )),
            "{a}: no unit test where it fires"
        );
        assert!(
            readme.contains(&format!("`{a}`")),
            "{a}: not explained in README.md's \"Operating the fleet\""
        );
    }
}
