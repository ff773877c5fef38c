//! Config tables as the daemon's TOML holds them: every kind parses, and mistakes are named
//! with their key and their fix.

use rollcall_drivers::{CredentialKind, IndicatorConfig, IndicatorKind, ReaderConfig, ReaderKind};

fn reader(text: &str) -> ReaderConfig {
    toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn reader_error(text: &str) -> String {
    let e = reader(text).validate(2).unwrap_err();
    format!("{}: {}", e.key, e.message)
}

#[test]
fn every_reader_kind_parses_and_validates() {
    for (text, kind, credential) in [
        (
            "id = \"a\"\nkind = \"ef01\"\nport = \"/dev/ttyAMA0\"",
            ReaderKind::Ef01,
            CredentialKind::Fingerprint,
        ),
        (
            "id = \"a\"\nkind = \"r503\"\nport = \"/dev/ttyAMA0\"\nbaud = 115200\npassword = 7",
            ReaderKind::Ef01,
            CredentialKind::Fingerprint,
        ),
        (
            "id = \"a\"\nkind = \"as608\"\nsimulate = true",
            ReaderKind::Ef01,
            CredentialKind::Fingerprint,
        ),
        (
            "id = \"a\"\nkind = \"rdm6300\"\nport = \"/dev/ttyAMA2\"",
            ReaderKind::Rdm6300,
            CredentialKind::Card,
        ),
        (
            "id = \"a\"\nkind = \"pn532\"\nport = \"/dev/ttyAMA3\"",
            ReaderKind::Pn532,
            CredentialKind::Card,
        ),
        (
            "id = \"a\"\nkind = \"wiegand\"\nd0_line = 17\nd1_line = 27",
            ReaderKind::Wiegand,
            CredentialKind::Card,
        ),
        (
            "id = \"a\"\nkind = \"wiegand\"\nsimulate = true",
            ReaderKind::Wiegand,
            CredentialKind::Card,
        ),
        (
            "id = \"a\"\nkind = \"simulated-card\"",
            ReaderKind::SimulatedCard,
            CredentialKind::Card,
        ),
        (
            "id = \"a\"\nkind = \"simulated-fingerprint\"",
            ReaderKind::SimulatedFingerprint,
            CredentialKind::Fingerprint,
        ),
    ] {
        let r = reader(text);
        assert_eq!(r.kind, kind, "{text}");
        assert_eq!(r.kind.credential(), credential);
        r.validate(0).unwrap_or_else(|e| panic!("{text}: {e}"));
    }
    assert_eq!(
        reader("id = \"a\"\nkind = \"pn532\"\nsimulate = true").baud_or_default(),
        115_200
    );
}

#[test]
fn mistakes_name_key_and_fix() {
    let e = reader_error("id = \"a\"\nkind = \"ef01\"");
    assert!(
        e.starts_with("reader[2].port: required for kind ef01"),
        "{e}"
    );
    assert!(e.contains("/dev/ttyAMA0"), "{e}");
    let e = reader_error("id = \"a\"\nkind = \"ef01\"\nport = \"/dev/x\"\nbaud = 56000");
    assert!(
        e.starts_with("reader[2].baud:") && e.contains("9600 x N"),
        "{e}"
    );
    let e = reader_error("id = \"a\"\nkind = \"wiegand\"\nd0_line = 4\nd1_line = 4");
    assert!(e.starts_with("reader[2].d1_line:"), "{e}");
    let e = reader_error("id = \"a\"\nkind = \"wiegand\"\nd1_line = 4");
    assert!(e.starts_with("reader[2].d0_line: required"), "{e}");
    let e =
        reader_error("id = \"a\"\nkind = \"wiegand\"\nport = \"/dev/ttyAMA0\"\nsimulate = true");
    assert!(e.starts_with("reader[2].port:"), "{e}");
    let e = reader_error("id = \"a\"\nkind = \"rdm6300\"\nport = \"/dev/x\"\npassword = 1");
    assert!(e.starts_with("reader[2].password:"), "{e}");
    let e = reader_error("id = \"a b\"\nkind = \"simulated-card\"");
    assert!(e.starts_with("reader[2].id:"), "{e}");
    assert!(
        toml::from_str::<ReaderConfig>("id = \"a\"\nkind = \"rdm6300\"\nprot = \"/dev/x\"")
            .is_err()
    );
}

#[test]
fn indicators_parse_and_validate() {
    let ok = [
        ("kind = \"log\"", IndicatorKind::Log),
        (
            "kind = \"gpio\"\ngreen_line = 5\nred_line = 6\nbuzzer_line = 13\nactive_low = true",
            IndicatorKind::Gpio,
        ),
        (
            "kind = \"aura\"\nreader = \"door-finger\"",
            IndicatorKind::Aura,
        ),
    ];
    for (text, kind) in ok {
        let c: IndicatorConfig = toml::from_str(text).unwrap();
        assert_eq!(c.kind, kind);
        c.validate(0).unwrap();
    }
    let err = |text: &str| {
        let c: IndicatorConfig = toml::from_str(text).unwrap();
        let e = c.validate(1).unwrap_err();
        format!("{}: {}", e.key, e.message)
    };
    assert!(err("kind = \"gpio\"").starts_with("indicator[1].green_line:"));
    assert!(err("kind = \"gpio\"\ngreen_line = 5\nred_line = 5").contains("share one GPIO line"));
    assert!(err("kind = \"aura\"").starts_with("indicator[1].reader: required"));
    assert!(err("kind = \"log\"\nred_line = 3").contains("only apply to kind gpio"));
}

#[test]
fn reader_timing_keys_parse_with_units_and_are_checked() {
    use std::time::Duration;
    let r = reader(
        "id = \"a\"\nkind = \"rdm6300\"\nport = \"/dev/ttyAMA2\"\nrepeat_window = \"600ms\"",
    );
    r.validate(0).unwrap();
    assert_eq!(r.repeat_window_or_default(), Duration::from_millis(600));
    let r = reader("id = \"a\"\nkind = \"rdm6300\"\nport = \"/dev/ttyAMA2\"");
    assert_eq!(r.repeat_window_or_default(), Duration::from_millis(1200));

    let w = reader(
        "id = \"g\"\nkind = \"wiegand\"\nd0_line = 17\nd1_line = 27\nmax_bit_interval = \"30ms\"",
    );
    w.validate(0).unwrap();
    assert_eq!(w.wiegand_timing().frame_gap(), Duration::from_millis(60));
    let w = reader("id = \"g\"\nkind = \"wiegand\"\nd0_line = 17\nd1_line = 27");
    assert_eq!(
        w.wiegand_timing().max_bit_interval,
        Duration::from_millis(25)
    );
    reader(
        "id = \"c\"\nkind = \"simulated-card\"\nrepeat_window = \"2s\"\nmax_bit_interval = \"2ms\"",
    )
    .validate(0)
    .unwrap();

    for (text, expected) in [
        (
            "id = \"a\"\nkind = \"rdm6300\"\nport = \"/dev/x\"\nrepeat_window = \"10ms\"",
            "reader[2].repeat_window: 10ms is out of range: use 50ms to 10s",
        ),
        (
            "id = \"a\"\nkind = \"pn532\"\nport = \"/dev/x\"\nrepeat_window = \"1s\"",
            "reader[2].repeat_window: only applies to kind rdm6300, not pn532: remove it",
        ),
        (
            "id = \"g\"\nkind = \"wiegand\"\nd0_line = 1\nd1_line = 2\nmax_bit_interval = \"1s\"",
            "reader[2].max_bit_interval: 1s is out of range: use 500µs to 100ms",
        ),
        (
            "id = \"a\"\nkind = \"rdm6300\"\nport = \"/dev/x\"\nmax_bit_interval = \"20ms\"",
            "reader[2].max_bit_interval: only applies to kind wiegand, not rdm6300: remove it",
        ),
    ] {
        let got = reader_error(text);
        assert!(got.starts_with(expected), "{got}");
    }
    let bad: Result<ReaderConfig, _> =
        toml::from_str("id = \"a\"\nkind = \"rdm6300\"\nrepeat_window = \"soon\"");
    assert!(
        bad.is_err(),
        "a duration without a unit is refused at parse time"
    );
}
