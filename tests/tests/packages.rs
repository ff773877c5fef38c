//! The Debian packages (issue 10 point 4): `scripts/package.sh --no-build` packages the debug
//! binaries this run already has (the aarch64 ones `scripts/test.sh` builds before the tests, the
//! host ones cargo built for them), so no release build is added to the test run; releases use
//! `scripts/package.sh --release`. Checked with `dpkg-deb`: control fields, every file with its
//! path, owner and mode, binaries of the package's architecture, conffiles, maintainer scripts
//! identical to `daemon/debian/` and `ingest/debian/` and valid shell; both units as packaged pass
//! `systemd-analyze verify` with no warning at all (it reports unknown keys and bad values as
//! warnings and still exits 0, so its output must be empty).
//!
//! The maintainer scripts are also run, with the commands they call (`getent`, `useradd`,
//! `systemctl`, ...) replaced by stubs that keep a small model of users and groups and log every
//! call: the user, its groups and /etc/rollcall are made as `rollcall provision` expects them, a
//! second run changes nothing, the service is never enabled or started by the package, and
//! purge keeps the user and the gateway's state.
//!
//! cargo-deb, dpkg-deb and systemd-analyze come from scripts/install-deps.sh; without them these
//! tests fail. Without the aarch64 build the packaging test is skipped, and fails under CI.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const ARM: &str = "aarch64-unknown-linux-gnu";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds tests/")
        .to_path_buf()
}

/// target/, where this test binary lives (target/debug/deps/<test>).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .nth(3)
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// Runs a command, failing the test with its output unless it succeeds; answers stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (scripts/install-deps.sh installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    run(Command::new("dpkg-deb").args(args).arg(deb))
}

/// One package as built: its control fields, its files (path -> "mode owner/group"), its
/// control archive's members, and its contents unpacked.
#[derive(Debug)]
struct Package {
    deb: PathBuf,
    fields: BTreeMap<String, String>,
    files: BTreeMap<String, String>,
    control: BTreeMap<String, String>,
    root: PathBuf,
    control_dir: PathBuf,
}

impl Package {
    fn open(deb: &Path, scratch: &Path) -> Package {
        let fields = dpkg_deb(&["--field"], deb)
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let files = listing(&dpkg_deb(&["--contents"], deb));
        let control_tar = Command::new("dpkg-deb")
            .arg("--ctrl-tarfile")
            .arg(deb)
            .output()
            .expect("dpkg-deb --ctrl-tarfile");
        assert!(control_tar.status.success());
        std::fs::create_dir_all(scratch).unwrap();
        let tar_path = scratch.join("control.tar");
        std::fs::write(&tar_path, &control_tar.stdout).unwrap();
        let control = listing(&run(Command::new("tar").arg("-tvf").arg(&tar_path)));
        let root = scratch.join("root");
        let control_dir = scratch.join("DEBIAN");
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));
        run(Command::new("dpkg-deb")
            .arg("-e")
            .arg(deb)
            .arg(&control_dir));
        Package {
            deb: deb.to_path_buf(),
            fields,
            files,
            control,
            root,
            control_dir,
        }
    }

    fn field(&self, name: &str) -> &str {
        self.fields.get(name).unwrap_or_else(|| {
            panic!(
                "{}: no {name} field in {:?}",
                self.deb.display(),
                self.fields
            )
        })
    }

    /// Asserts the file is there with this mode string (`-rwxr-xr-x`), owned by root (0/0).
    fn has(&self, path: &str, mode: &str) {
        let found = self.files.get(path).unwrap_or_else(|| {
            panic!(
                "{}: no {path}; it holds {:#?}",
                self.deb.display(),
                self.files
            )
        });
        assert_eq!(
            found,
            &format!("{mode} 0/0"),
            "{}: {path}",
            self.deb.display()
        );
    }
}

/// `tar -tv` / `dpkg-deb --contents` lines: path (without the leading `.`) -> "mode owner/group".
fn listing(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let path = cols.get(5)?.trim_start_matches('.').trim_end_matches('/');
            Some((path.to_string(), format!("{} {}", cols[0], cols[1])))
        })
        .filter(|(path, _)| !path.is_empty())
        .collect()
}

/// ELF e_machine of a binary: 0xB7 aarch64, 0x3E x86_64.
fn elf_machine(path: &Path) -> u16 {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..4],
        b"\x7fELF",
        "{} is not an ELF file",
        path.display()
    );
    u16::from_le_bytes([bytes[18], bytes[19]])
}

fn host_deb_arch() -> String {
    run(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_string()
}

fn host_elf_machine() -> u16 {
    match std::env::consts::ARCH {
        "x86_64" => 0x3e,
        "aarch64" => 0xb7,
        other => panic!("no ELF machine known for {other}"),
    }
}

/// Checks what both packages share: fields, the directories and docs cargo-deb adds, nothing
/// else than `expected` besides them, binaries for `machine`, scripts as in the tree.
fn check_common(
    p: &Package,
    name: &str,
    arch: &str,
    machine: u16,
    expected: &[(&str, &str)],
    scripts: &Path,
) {
    assert_eq!(p.field("Package"), name);
    assert_eq!(p.field("Architecture"), arch);
    assert_eq!(
        p.field("Version"),
        format!("{}-1", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(p.field("Section"), "net");
    assert_eq!(p.field("Priority"), "optional");
    assert!(!p.field("Description").is_empty());
    // Depends: the C library (and libgcc's unwinder), nothing else: no OpenSSL, no PostgreSQL
    // client library; rustls and aws-lc-rs are linked in.
    for dep in p.field("Depends").split(',').map(str::trim) {
        assert!(
            dep.starts_with("libc6") || dep.starts_with("libgcc-s1"),
            "{name} {arch}: unexpected dependency {dep:?} in {:?}",
            p.field("Depends")
        );
    }
    assert!(
        p.field("Depends").contains("libc6"),
        "{:?}",
        p.field("Depends")
    );

    for (path, mode) in expected {
        p.has(path, mode);
    }
    let copyright = format!("/usr/share/doc/{name}/copyright");
    p.has(&copyright, "-rw-r--r--");
    // Nothing else but the directories leading to these files: nothing in /usr/local, no state.
    for (path, mode) in &p.files {
        let listed = expected.iter().any(|(e, _)| e == path) || *path == copyright;
        let parent_dir = mode.starts_with('d')
            && (expected
                .iter()
                .any(|(e, _)| e.starts_with(&format!("{path}/")))
                || copyright.starts_with(&format!("{path}/")));
        assert!(
            listed || parent_dir,
            "{name} {arch}: unexpected {path} ({mode})"
        );
        if mode.starts_with('d') {
            assert_eq!(mode, "drwxr-xr-x 0/0", "{name}: directory {path}");
        }
    }
    for (path, _) in expected
        .iter()
        .filter(|(path, _)| path.starts_with("/usr/bin/"))
    {
        let bin = p.root.join(path.trim_start_matches('/'));
        assert_eq!(
            elf_machine(&bin),
            machine,
            "{name} {arch}: {path}'s architecture"
        );
    }

    // Maintainer scripts: exactly the tree's (cargo-deb adds nothing), executable, valid sh.
    for script in ["postinst", "prerm", "postrm"] {
        assert_eq!(
            p.control
                .get(&format!("/{script}"))
                .map(|m| m.split(' ').next().unwrap()),
            Some("-rwxr-xr-x"),
            "{name}: {script} in the control archive: {:?}",
            p.control
        );
        let packaged = std::fs::read_to_string(p.control_dir.join(script)).unwrap();
        let source = std::fs::read_to_string(scripts.join(script)).unwrap();
        assert_eq!(
            packaged,
            source,
            "{name}: {script} differs from {}",
            scripts.display()
        );
        run(Command::new("sh").arg("-n").arg(p.control_dir.join(script)));
    }
    assert!(p.control.contains_key("/control"), "{:?}", p.control);
}

/// `systemd-analyze verify` on the unit as packaged, its /usr/bin paths pointed at the
/// package's own binaries (it checks they exist and are executable, not their architecture).
fn verify_unit(p: &Package, unit: &str, scratch: &Path) {
    let packaged = std::fs::read_to_string(p.root.join("lib/systemd/system").join(unit)).unwrap();
    let in_tree = std::fs::read_to_string(workspace().join("systemd").join(unit)).unwrap();
    assert_eq!(
        packaged, in_tree,
        "{unit} as packaged differs from systemd/{unit}"
    );
    assert!(
        packaged.contains("ExecStart=/usr/bin/"),
        "{unit}: ExecStart in /usr/bin"
    );
    assert!(
        !packaged.contains("/usr/local"),
        "{unit}: a /usr/local path in a packaged unit"
    );
    let bin = format!("{}/usr/bin/", p.root.display());
    let dir = scratch.join("units");
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join(unit);
    std::fs::write(&copy, packaged.replace("/usr/bin/", &bin)).unwrap();
    let out = analyze(&copy);
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify {unit} ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn analyze(unit: &Path) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
        .expect("systemd-analyze (Debian's systemd package; scripts/install-deps.sh installs it)")
}

#[test]
fn systemd_analyze_reports_what_the_unit_check_relies_on() {
    // The check above passes only on empty output: make sure this systemd-analyze does speak up
    // here (in a container too) about a misspelt key and a missing binary.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("typo.service");
    std::fs::write(&unit, "[Service]\nExecStart=/bin/true\nTyep=notify\n").unwrap();
    let out = analyze(&unit);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unknown key 'Tyep'"),
        "{out:?}"
    );
    std::fs::write(&unit, "[Service]\nExecStart=/nonexistent/rollcalld\n").unwrap();
    let out = analyze(&unit);
    assert!(!out.status.success(), "{out:?}");
}

#[test]
fn packages_hold_the_binaries_units_config_and_scripts_for_their_architectures() {
    let target = target_dir();
    // The binaries this run already has: the aarch64 ones scripts/test.sh builds before the
    // tests, the host ones cargo built for the ingest and provisioning tests. None is built here
    // (a `cargo build -p` of one package may resolve features differently from the workspace
    // build and rebuild half of it); packaging checks the packages, not the code in them.
    let arm = ["rollcalld", "rollcall", "rollcall-ingest"].map(|b| {
        (
            target.join(ARM).join("debug").join(b),
            format!("cargo build --workspace --target {ARM}"),
        )
    });
    let host_bins = ["rollcall", "rollcall-ingest"].map(|b| {
        (
            target.join("debug").join(b),
            "cargo build --workspace".to_string(),
        )
    });
    if let Some((missing, how)) = arm.iter().chain(&host_bins).find(|(b, _)| !b.is_file()) {
        rollcall_tests::skip(
            "the Debian packages test",
            &format!("{} is not built", missing.display()),
            &format!("scripts/test.sh builds it before the tests: {how}"),
        );
        return;
    }

    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("debian");
    run(Command::new(workspace().join("scripts/package.sh"))
        .args(["--no-build", "--fast", "--out"])
        .arg(&out)
        .env("CARGO_TARGET_DIR", &target));
    let version = format!("{}-1", env!("CARGO_PKG_VERSION"));
    let host = host_deb_arch();
    let open = |name: &str, arch: &str| {
        let deb = out.join(format!("{name}_{version}_{arch}.deb"));
        assert!(
            deb.is_file(),
            "{} not built; {out:?} holds {:?}",
            deb.display(),
            std::fs::read_dir(&out).map(|d| d.count())
        );
        let dir = scratch.path().join(format!("{name}-{arch}"));
        Package::open(&deb, &dir)
    };

    let gateway = open("rollcall-gateway", "arm64");
    let gateway_files = [
        ("/usr/bin/rollcalld", "-rwxr-xr-x"),
        ("/usr/bin/rollcall", "-rwxr-xr-x"),
        ("/lib/systemd/system/rollcalld.service", "-rw-r--r--"),
        ("/lib/udev/rules.d/60-rollcall-gpio.rules", "-rw-r--r--"),
        ("/etc/rollcall/rollcalld.example.toml", "-rw-r--r--"),
        ("/usr/share/doc/rollcall-gateway/README.md", "-rw-r--r--"),
    ];
    check_common(
        &gateway,
        "rollcall-gateway",
        "arm64",
        0xb7,
        &gateway_files,
        &workspace().join("daemon/debian"),
    );
    assert_eq!(gateway.field("Conflicts"), "rollcall-ingest");
    let conffiles = std::fs::read_to_string(gateway.control_dir.join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/rollcall/rollcalld.example.toml");
    assert_eq!(
        std::fs::read(gateway.root.join("etc/rollcall/rollcalld.example.toml")).unwrap(),
        std::fs::read(workspace().join("daemon/rollcalld.example.toml")).unwrap()
    );
    verify_unit(
        &gateway,
        "rollcalld.service",
        &scratch.path().join("gateway"),
    );

    let ingest_files = [
        ("/usr/bin/rollcall-ingest", "-rwxr-xr-x"),
        ("/usr/bin/rollcall", "-rwxr-xr-x"),
        ("/lib/systemd/system/rollcall-ingest.service", "-rw-r--r--"),
        ("/etc/rollcall/ingest.example.toml", "-rw-r--r--"),
        ("/usr/share/doc/rollcall-ingest/README.md", "-rw-r--r--"),
        (
            "/usr/share/doc/rollcall-ingest/README.rollcall.md",
            "-rw-r--r--",
        ),
    ];
    for (arch, machine) in [("arm64", 0xb7), (host.as_str(), host_elf_machine())] {
        let ingest = open("rollcall-ingest", arch);
        check_common(
            &ingest,
            "rollcall-ingest",
            arch,
            machine,
            &ingest_files,
            &workspace().join("ingest/debian"),
        );
        assert_eq!(ingest.field("Conflicts"), "rollcall-gateway");
        let conffiles = std::fs::read_to_string(ingest.control_dir.join("conffiles")).unwrap();
        assert_eq!(conffiles.trim(), "/etc/rollcall/ingest.example.toml");
        verify_unit(
            &ingest,
            "rollcall-ingest.service",
            &scratch.path().join(format!("ingest-{arch}")),
        );
        if machine == host_elf_machine() {
            // The example configuration is one the packaged binary accepts.
            let example = ingest.root.join("etc/rollcall/ingest.example.toml");
            let said = run(Command::new(ingest.root.join("usr/bin/rollcall-ingest"))
                .args(["validate", "--config"])
                .arg(&example));
            assert!(said.contains("valid"), "{said}");
        }
    }
}

/// A sandbox for a maintainer script: stubs for every command it may call, keeping users,
/// groups and the group owning each path `chown` was given in files, and logging each call to
/// `log`. `stat -c %G` answers root for a path never chowned, as dpkg leaves a directory it
/// unpacked.
#[derive(Debug)]
struct Sandbox {
    dir: tempfile::TempDir,
}

const STUB: &str = r#"#!/bin/sh
# A maintainer script's command, stubbed: logs the call, keeps users and groups under $STATE.
name=$(basename "$0")
echo "$name $*" >> "$STATE/log"
last() { for a in "$@"; do l=$a; done; echo "$l"; }
case "$name" in
getent) [ -e "$STATE/$1/$2" ]; exit $? ;;
groupadd) touch "$STATE/group/$(last "$@")" ;;
useradd) touch "$STATE/passwd/$(last "$@")" ;;
usermod) echo "$3" >> "$STATE/member/$4" ;;
id) echo "$2 $(cat "$STATE/member/$2" 2>/dev/null | tr '\n' ' ')" ;;
chown) echo "${1#*:}" > "$STATE/owner/$(echo "$2" | tr / _)" ;;
stat) f="$STATE/owner/$(echo "$3" | tr / _)"; if [ -f "$f" ]; then cat "$f"; else echo root; fi ;;
esac
exit 0
"#;

const STUBBED: &[&str] = &[
    "getent",
    "groupadd",
    "useradd",
    "usermod",
    "id",
    "chown",
    "chmod",
    "mkdir",
    "systemctl",
    "udevadm",
    "userdel",
    "deluser",
    "groupdel",
    "delgroup",
    "rm",
    "install",
    "stat",
];

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        for d in ["bin", "group", "passwd", "member", "owner"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        // Debian's base system has dialout (base-passwd); gpio only on Raspberry Pi OS.
        std::fs::write(dir.path().join("group/dialout"), "").unwrap();
        for name in STUBBED {
            let path = bin.join(name);
            std::fs::write(&path, STUB).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(dir.path().join("log"), "").unwrap();
        Sandbox { dir }
    }

    /// Runs `script args` and answers the commands it called, one line each.
    fn run(&self, script: &str, args: &[&str]) -> Vec<String> {
        std::fs::write(self.dir.path().join("log"), "").unwrap();
        let path = format!("{}:/usr/bin:/bin", self.dir.path().join("bin").display());
        run(Command::new("sh")
            .arg(workspace().join(script))
            .args(args)
            .env("PATH", path)
            .env("STATE", self.dir.path()));
        std::fs::read_to_string(self.dir.path().join("log"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    fn exists(&self, kind: &str, name: &str) -> bool {
        self.dir.path().join(kind).join(name).exists()
    }

    fn groups_of(&self, user: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("member").join(user)).unwrap_or_default()
    }
}

/// The script's own lines (comments and messages aside) never enable or start the service,
/// in the branches the sandbox does not reach either (those run only under a booted systemd).
fn script_never_enables_or_starts(script: &str) {
    let text = std::fs::read_to_string(workspace().join(script)).unwrap();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with("echo") {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(at) = words.iter().position(|w| *w == "systemctl") {
            let verb = words.get(at + 1).copied().unwrap_or_default();
            assert!(
                ["daemon-reload", "try-restart", "stop", "disable"].contains(&verb)
                    && !line.contains("--now"),
                "{script}: systemctl {verb} ({line}): the package never enables or starts a service"
            );
        }
    }
}

fn never_enables_or_starts(calls: &[String], unit: &str) {
    for call in calls {
        assert!(
            !(call.starts_with("systemctl")
                && (call.contains(" enable") || call.contains(" start") || call.contains("--now"))),
            "{unit}: the package must not enable or start the service: {call}"
        );
    }
}

#[test]
fn gateway_postinst_makes_the_user_groups_and_directories_provision_expects() {
    let sandbox = Sandbox::new();
    let calls = sandbox.run("daemon/debian/postinst", &["configure", ""]);
    assert!(
        sandbox.exists("group", "rollcall") && sandbox.exists("passwd", "rollcall"),
        "{calls:#?}"
    );
    assert!(
        sandbox.exists("group", "gpio"),
        "gpio is made where missing: {calls:#?}"
    );
    let useradd = calls
        .iter()
        .find(|c| c.starts_with("useradd "))
        .expect("useradd");
    for part in [
        "--system",
        "--gid rollcall",
        "--home-dir /var/lib/rollcall",
        "--shell /usr/sbin/nologin",
    ] {
        assert!(useradd.contains(part), "{useradd} lacks {part}");
    }
    assert_eq!(
        sandbox.groups_of("rollcall"),
        "dialout\ngpio\n",
        "{calls:#?}"
    );
    // /etc/rollcall as provision.rs writes into it: root:rollcall 0750.
    assert!(
        calls.contains(&"chown root:rollcall /etc/rollcall".to_string()),
        "{calls:#?}"
    );
    assert!(
        calls.contains(&"chmod 0750 /etc/rollcall".to_string()),
        "{calls:#?}"
    );
    if !Path::new("/var/lib/rollcall").exists() {
        assert!(
            calls.contains(&"chown rollcall:rollcall /var/lib/rollcall".to_string()),
            "{calls:#?}"
        );
        assert!(
            calls.contains(&"chmod 0700 /var/lib/rollcall".to_string()),
            "{calls:#?}"
        );
    }
    never_enables_or_starts(&calls, "rollcalld");
    script_never_enables_or_starts("daemon/debian/postinst");

    // Again (a reinstall or upgrade from 0.1.0): nothing is created or added twice.
    let again = sandbox.run("daemon/debian/postinst", &["configure", "0.1.0-1"]);
    assert!(
        !again.iter().any(|c| ["groupadd", "useradd", "usermod"]
            .iter()
            .any(|w| c.starts_with(w))),
        "{again:#?}"
    );
    assert_eq!(sandbox.groups_of("rollcall"), "dialout\ngpio\n");
    never_enables_or_starts(&again, "rollcalld");

    // The gpio group of Raspberry Pi OS is used as it is.
    let pi_os = Sandbox::new();
    std::fs::write(pi_os.dir.path().join("group/gpio"), "").unwrap();
    let calls = pi_os.run("daemon/debian/postinst", &["configure", ""]);
    assert!(
        !calls.iter().any(|c| c == "groupadd --system gpio"),
        "{calls:#?}"
    );
    assert_eq!(pi_os.groups_of("rollcall"), "dialout\ngpio\n");
}

#[test]
fn ingest_postinst_makes_its_user_and_never_starts_the_service() {
    let sandbox = Sandbox::new();
    let calls = sandbox.run("ingest/debian/postinst", &["configure", ""]);
    assert!(sandbox.exists("passwd", "rollcall-ingest"), "{calls:#?}");
    let useradd = calls
        .iter()
        .find(|c| c.starts_with("useradd "))
        .expect("useradd");
    assert!(
        useradd.contains("--shell /usr/sbin/nologin") && useradd.contains("--system"),
        "{useradd}"
    );
    // dpkg unpacked /etc/rollcall root:root before postinst runs: it goes to the service's group.
    assert!(
        calls.contains(&"chown root:rollcall-ingest /etc/rollcall".to_string()),
        "{calls:#?}"
    );
    assert!(
        calls.contains(&"chmod 0750 /etc/rollcall".to_string()),
        "{calls:#?}"
    );
    never_enables_or_starts(&calls, "rollcall-ingest");
    script_never_enables_or_starts("ingest/debian/postinst");
    let again = sandbox.run("ingest/debian/postinst", &["configure", "0.1.0-1"]);
    assert!(
        !again
            .iter()
            .any(|c| ["groupadd", "useradd", "chown", "chmod"]
                .iter()
                .any(|w| c.starts_with(w))),
        "{again:#?}"
    );
}

#[test]
fn removal_disables_the_service_and_purge_keeps_users_keys_and_journal() {
    for (pkg, unit) in [
        ("daemon", "rollcalld.service"),
        ("ingest", "rollcall-ingest.service"),
    ] {
        let sandbox = Sandbox::new();
        let prerm = format!("{pkg}/debian/prerm");
        let calls = sandbox.run(&prerm, &["remove"]);
        assert!(
            calls.contains(&format!("systemctl disable {unit}")),
            "{pkg}: {calls:#?}"
        );
        if Path::new("/run/systemd/system").is_dir() {
            assert!(
                calls.contains(&format!("systemctl stop {unit}")),
                "{pkg}: {calls:#?}"
            );
        }
        // An upgrade leaves it running: the new postinst restarts it.
        assert_eq!(
            sandbox.run(&prerm, &["upgrade", "0.1.0-1"]),
            Vec::<String>::new(),
            "{pkg}"
        );
        let postrm = format!("{pkg}/debian/postrm");
        for step in ["remove", "purge"] {
            let calls = sandbox.run(&postrm, &[step]);
            assert!(
                calls
                    .iter()
                    .all(|c| c.starts_with("systemctl daemon-reload")),
                "{pkg} postrm {step} touches more than systemd: {calls:#?}"
            );
        }
    }
}

#[test]
fn ingest_example_config_is_the_one_ingest_readme_documents() {
    let readme = std::fs::read_to_string(workspace().join("ingest/README.md")).unwrap();
    let block = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("ingest/README.md's configuration block");
    let example = std::fs::read_to_string(workspace().join("ingest/ingest.example.toml")).unwrap();
    let body = example
        .split_once("\n\n")
        .map(|(_header, body)| body)
        .expect("the example's header comment, a blank line, then the configuration");
    assert_eq!(
        body, block,
        "ingest/ingest.example.toml differs from ingest/README.md's block"
    );
}
