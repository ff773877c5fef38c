//! The checks of this machine: serial ports, the UART console, GPIO chips, disk, clock,
//! journal, roster. Each takes what it looks at as arguments (paths, the service user, the
//! daemon's report), so a test can point it at a fault.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rollcall_daemon::Config;
use rollcall_daemon::config::RosterSource;
use rollcall_daemon::control::StatusReport;
use rollcall_drivers::{ReaderConfig, ReaderKind};

use super::{Finding, Level};

/// Below this much free space on the state directory's file system: a warning.
pub(crate) const DISK_WARN: u64 = 100 * 1024 * 1024;
/// Below this: a failure (a few hours of a busy room's punches).
pub(crate) const DISK_FAIL: u64 = 10 * 1024 * 1024;
/// A roster older than this is worth a look.
const ROSTER_OLD: Duration = Duration::from_secs(14 * 86400);

/// The user rollcalld runs as, as the system's account files describe it.
#[derive(Debug, Clone)]
pub(crate) struct ServiceUser {
    pub name: String,
    /// `None`: no such account.
    pub uid: Option<u32>,
    /// Its primary and supplementary groups (by id), or, without an account, the groups the
    /// package gives it (`dialout`, `gpio`) where they exist.
    pub gids: Vec<u32>,
}

impl ServiceUser {
    /// Looks `name` up in `passwd` and `group` (the files, so tests can give their own).
    pub(crate) fn lookup(name: &str, passwd: &Path, group: &Path) -> Self {
        let passwd = std::fs::read_to_string(passwd).unwrap_or_default();
        let group = std::fs::read_to_string(group).unwrap_or_default();
        let account = passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[0] == name)
                .then(|| (f[2].parse::<u32>().ok(), f[3].parse::<u32>().ok()))
        });
        let mut gids = Vec::new();
        for l in group.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                continue;
            }
            let member = f[3].split(',').any(|m| m == name);
            let package_group = account.is_none() && matches!(f[0], "dialout" | "gpio");
            if (member || package_group)
                && let Ok(gid) = f[2].parse()
            {
                gids.push(gid);
            }
        }
        let (uid, primary) = account.unwrap_or((None, None));
        gids.extend(primary);
        Self {
            name: name.to_owned(),
            uid,
            gids,
        }
    }

    /// Whether this user may read and write a file with this owner and mode.
    fn may_read_write(&self, meta: &std::fs::Metadata) -> bool {
        let mode = meta.mode();
        if self.uid == Some(0) {
            return true;
        }
        if self.uid == Some(meta.uid()) {
            mode & 0o600 == 0o600
        } else if self.gids.contains(&meta.gid()) {
            mode & 0o060 == 0o060
        } else {
            mode & 0o006 == 0o006
        }
    }
}

/// The service user exists (only asked when a reader needs a device file).
pub(crate) fn service_user(user: &ServiceUser) -> Finding {
    match user.uid {
        Some(_) => Finding::ok(format!("service user {} exists", user.name)),
        None => Finding::fail(
            format!("service user {}: no such account", user.name),
            format!(
                "install the rollcall-gateway package (it creates it), or `useradd --system \
                 --groups dialout,gpio {}`",
                user.name
            ),
        ),
    }
}

/// Readers on hardware (not simulated), with what they need.
fn hardware(config: &Config) -> impl Iterator<Item = &ReaderConfig> {
    config
        .readers
        .iter()
        .filter(|r| !rollcall_daemon::config::is_simulated(r))
}

/// Whether any reader needs a device file (so the service user matters).
pub(crate) fn needs_devices(config: &Config) -> bool {
    hardware(config).next().is_some()
}

/// Each UART reader's port: present, a character device, readable and writable by the service
/// user.
pub(crate) fn serial_ports(config: &Config, user: &ServiceUser) -> Vec<Finding> {
    hardware(config)
        .filter(|r| r.kind.is_serial())
        .filter_map(|r| r.port.as_deref().map(|p| (r, p)))
        .map(|(r, port)| {
            device_file(
                &format!("serial port {} (reader {})", port.display(), r.id),
                port,
                user,
                "dialout",
                &format!(
                    "check the wiring and that the UART is enabled (/boot/firmware/config.txt: \
                     enable_uart=1, dtoverlay=uart<n> for a second one), or set reader {}'s \
                     port to the device it is on (`ls -l /dev/serial* /dev/ttyAMA* /dev/ttyUSB*`)",
                    r.id
                ),
            )
        })
        .collect()
}

fn device_file(
    what: &str,
    path: &Path,
    user: &ServiceUser,
    group: &str,
    missing_fix: &str,
) -> Finding {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Finding::fail(format!("{what}: missing"), missing_fix.to_owned());
        }
        Err(e) => {
            return Finding::fail(
                format!("{what}: {e}"),
                format!("check the permissions of {}'s directory", path.display()),
            );
        }
    };
    if !meta.file_type().is_char_device() {
        return Finding::fail(
            format!("{what}: not a device (a plain file or directory is in its place)"),
            format!(
                "remove {} (something wrote a file there) and reboot, or fix the path in the config",
                path.display()
            ),
        );
    }
    if !user.may_read_write(&meta) {
        return Finding::fail(
            format!(
                "{what}: permission denied for {} (mode {:04o}, owner {}:{})",
                user.name,
                meta.mode() & 0o777,
                meta.uid(),
                meta.gid()
            ),
            format!(
                "give group {group} read and write (`chgrp {group} {p} && chmod 660 {p}`, made \
                 lasting by a udev rule), and put {u} in it (`usermod -aG {group} {u}`)",
                p = path.display(),
                u = user.name
            ),
        );
    }
    Finding::ok(format!("{what}: present, read/write for {}", user.name))
}

/// The kernel's serial console must not sit on a UART a reader uses: the console's login
/// prompt and kernel messages would be read as frames, and the reader's bytes as keystrokes.
pub(crate) fn uart_console(config: &Config, cmdline: &Path) -> Finding {
    let text = match std::fs::read_to_string(cmdline) {
        Ok(t) => t,
        Err(e) => {
            return Finding::warn(
                format!(
                    "serial console: {} unreadable ({e}), not checked",
                    cmdline.display()
                ),
                "run as root".to_owned(),
            );
        }
    };
    let consoles: Vec<&str> = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("console="))
        .map(|c| c.split(',').next().unwrap_or(c))
        .collect();
    let uarts: Vec<(&str, String)> = hardware(config)
        .filter(|r| r.kind.is_serial())
        .filter_map(|r| r.port.as_deref().map(|p| (r.id.as_str(), uart_names(p))))
        .flat_map(|(id, names)| names.into_iter().map(move |n| (id, n)))
        .collect();
    for console in &consoles {
        let console_names = uart_names(&Path::new("/dev").join(console));
        if let Some((reader, _)) = uarts.iter().find(|(_, n)| console_names.contains(n)) {
            return Finding::fail(
                format!(
                    "serial console on {console}, the UART of reader {reader} ({})",
                    cmdline.display()
                ),
                format!(
                    "remove `console={console},...` from /boot/firmware/cmdline.txt (or \
                     `raspi-config`: Interface Options, Serial Port: login shell No, hardware Yes), \
                     then reboot"
                ),
            );
        }
    }
    if uarts.is_empty() {
        Finding::ok("serial console: no reader on a UART".to_owned())
    } else {
        Finding::ok("serial console: not on a reader's UART".to_owned())
    }
}

/// The names a UART goes by: its own, what a symlink points at, and the Pi's primary UART
/// aliases (`serial0` is `ttyAMA0` or `ttyS0` depending on the model and Bluetooth).
fn uart_names(port: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut add = |p: &Path| {
        if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
            names.push(n.to_owned());
        }
    };
    add(port);
    if let Ok(target) = std::fs::canonicalize(port) {
        add(&target);
    }
    if names
        .iter()
        .any(|n| matches!(n.as_str(), "serial0" | "ttyAMA0" | "ttyS0"))
    {
        names.extend(["serial0", "ttyAMA0", "ttyS0"].map(String::from));
    }
    names
}

/// Each Wiegand reader's GPIO chip: present, a character device, permitted, and with the lines
/// the config names.
pub(crate) fn gpio(config: &Config, user: &ServiceUser) -> Vec<Finding> {
    hardware(config)
        .filter(|r| r.kind == ReaderKind::Wiegand)
        .map(|r| {
            let chip = r
                .chip
                .clone()
                .unwrap_or_else(|| PathBuf::from("/dev/gpiochip0"));
            let what = format!("GPIO chip {} (reader {})", chip.display(), r.id);
            let found = device_file(
                &what,
                &chip,
                user,
                "gpio",
                &format!(
                    "this kernel has no such GPIO chip: on a Pi it is /dev/gpiochip0 (Pi 5: \
                     /dev/gpiochip4 on older kernels; `gpiodetect` lists them); set reader {}'s \
                     chip to one that exists",
                    r.id
                ),
            );
            if found.level != Level::Ok {
                return found;
            }
            let lines = [r.d0_line, r.d1_line].into_iter().flatten().max();
            match (chip_lines(&chip), lines) {
                (Some(n), Some(max)) if max >= n => Finding::fail(
                    format!("{what}: has {n} lines, the config names line {max}"),
                    "set d0_line and d1_line to the BCM GPIO numbers the reader is wired to"
                        .to_owned(),
                ),
                (Some(n), _) => Finding::ok(format!("{what}: present, {n} lines, permitted")),
                (None, _) => found,
            }
        })
        .collect()
}

/// The number of lines of a GPIO chip (GPIO_GET_CHIPINFO_IOCTL), if it answers.
#[allow(unsafe_code)]
fn chip_lines(chip: &Path) -> Option<u32> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct ChipInfo {
        name: [u8; 32],
        label: [u8; 32],
        lines: u32,
    }
    // _IOR(0xB4, 0x01, struct gpiochip_info): read, size 68.
    const GPIO_GET_CHIPINFO_IOCTL: libc::c_ulong = 0x8044_b401;
    let file = std::fs::File::open(chip).ok()?;
    let mut info = ChipInfo {
        name: [0; 32],
        label: [0; 32],
        lines: 0,
    };
    // SAFETY: the fd is open for the call's duration and `info` is a valid, exclusively
    // borrowed gpiochip_info the ioctl fills.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), GPIO_GET_CHIPINFO_IOCTL as _, &mut info) };
    (rc == 0).then_some(info.lines)
}

/// Free space on the state directory's file system, and that a write there lands.
pub(crate) fn disk(state_dir: &Path, free: Option<u64>) -> Finding {
    let label = state_dir.display();
    let Some(free) = free else {
        return Finding::fail(
            format!("disk: {label} cannot be examined (missing?)"),
            format!("create it (`install -d -o rollcall -m 700 {label}`) or fix device.state_dir"),
        );
    };
    let amount = crate::status::bytes(free);
    if let Err(e) = probe_write(state_dir) {
        return Finding::fail(
            format!("disk: writing in {label} fails: {e} ({amount} free)"),
            "free space on that file system (`du -xsh /var/* | sort -h`, `journalctl \
             --vacuum-size=50M`), or remount it read-write; punches are refused until it writes"
                .to_owned(),
        );
    }
    let fix = "free space on that file system (`du -xsh /var/* | sort -h`, `journalctl \
               --vacuum-size=50M`)";
    if free < DISK_FAIL {
        Finding::fail(
            format!("disk: only {amount} free in {label}"),
            fix.to_owned(),
        )
    } else if free < DISK_WARN {
        Finding::warn(format!("disk: {amount} free in {label}"), fix.to_owned())
    } else {
        Finding::ok(format!("disk: {amount} free in {label}, writes land"))
    }
}

fn probe_write(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(format!(".rollcall-doctor-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&[0u8; 64 * 1024])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// The kernel's view of the clock (what rollcalld stamps on punches).
pub(crate) fn clock(synced: bool, offset_ms: Option<i64>) -> Finding {
    if synced {
        Finding::ok(format!(
            "clock: NTP synchronised{}",
            offset_ms.map_or(String::new(), |ms| format!(" (estimated error {ms} ms)"))
        ))
    } else {
        Finding::warn(
            "clock: not NTP synchronised (punches say so; the centre may correct them)".into(),
            "`timedatectl set-ntp true`; let UDP 123 reach an NTP server (`timedatectl \
             timesync-status`); a Pi without a battery clock needs the network at boot"
                .into(),
        )
    }
}

/// The journal: through the running daemon if it answers, else by opening a copy.
pub(crate) async fn journal(config: &Config, report: Option<&StatusReport>) -> Finding {
    if let Some(r) = report {
        let what = format!(
            "journal: open in rollcalld, {} unacked of {}",
            r.depth, r.capacity
        );
        return if r.capacity > 0 && r.depth.saturating_mul(10) >= r.capacity.saturating_mul(9) {
            Finding::warn(
                format!("{what}: nearly full"),
                "restore the link to the centre; punches are refused when it is full".into(),
            )
        } else {
            Finding::ok(what)
        };
    }
    let path = config.journal_path();
    if !path.exists() {
        return Finding::ok(format!(
            "journal: {} not created yet (rollcalld creates it at start)",
            path.display()
        ));
    }
    let capacity = config.journal.capacity;
    let opened = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        // A copy: opening may repair the file, and the original stays as rollcalld left it.
        let dir = std::env::temp_dir().join(format!("rollcall-doctor-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let copy = dir.join("journal.redb");
        let opened = std::fs::copy(&path, &copy)
            .map_err(anyhow::Error::from)
            .and_then(|_| Ok(rollcall_daemon::journal::Journal::open(&copy, capacity)?.depth()));
        let _ = std::fs::remove_dir_all(&dir);
        opened
    })
    .await;
    let label = config.journal_path().display().to_string();
    match opened {
        Ok(Ok(depth)) => Finding::ok(format!(
            "journal: {label} opens (a copy), {depth} unacked punches"
        )),
        Ok(Err(e)) => Finding::fail(
            format!("journal: {label}: {e:#}"),
            "follow what the error says; a damaged journal is moved aside by rollcalld at start \
             and its punches recovered with `rollcall journal salvage`"
                .into(),
        ),
        Err(e) => Finding::fail(format!("journal: {label}: {e}"), "report this bug".into()),
    }
}

/// The roster: its version (from the daemon) and how long since it last changed.
pub(crate) fn roster(config: &Config, report: Option<&StatusReport>, now: SystemTime) -> Finding {
    let file = match (config.roster.source, &config.roster.path) {
        (RosterSource::File, Some(p)) => p.clone(),
        _ => config.device.state_dir.join("roster.sealed"),
    };
    let version = report.map(|r| r.roster_version);
    let age = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| now.duration_since(t).ok());
    let from_centre = config.roster.source == RosterSource::Centre;
    match (age, version) {
        (None, Some(0) | None) if from_centre => Finding::warn(
            "roster: none from the centre yet: nobody is recognised".into(),
            "check the link (above) and that the centre has this device registered and enabled \
             (`rollcall device`), with students in its room"
                .into(),
        ),
        (None, _) if !from_centre => Finding::fail(
            format!("roster: {} missing", file.display()),
            "write the roster file, or set [roster] source = \"centre\"".into(),
        ),
        (age, version) => {
            let what = format!(
                "roster: version {}{}",
                version.map_or("unknown (daemon not answering)".into(), |v| v.to_string()),
                age.map_or(String::new(), |a| format!(
                    ", last changed {} ago",
                    crate::status::age(a.as_secs())
                ))
            );
            if from_centre && age.is_some_and(|a| a > ROSTER_OLD) {
                Finding::warn(
                    what,
                    "no roster change for two weeks: if students changed since, ask the centre \
                     to resend it (its Resync command)"
                        .into(),
                )
            } else {
                Finding::ok(what)
            }
        }
    }
}

#[cfg(test)]
mod tests;
