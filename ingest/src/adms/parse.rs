//! The terminal's bytes, read by pure functions: query strings, ATTLOG and OPERLOG bodies,
//! command results, the heartbeat's `INFO`, and the server's answers written out. No I/O, no
//! clock; nothing here panics on any input (a terminal's bytes are outside input), and what
//! cannot be read is returned as a value ([`BadLine`]), never an error that drops a whole body.
//!
//! Tolerance, firmware by firmware (see `../shared/reference/zkteco-adms.md`): keys in any case
//! (`SN`, `sn`, `Stamp`, `stamp`); paths in any case, with or without a trailing `/` or an
//! `.aspx` suffix; lines ended by `\n` or `\r\n`; fields separated by tabs or by runs of spaces;
//! dates as `YYYY-MM-DD` or `YYYY/MM/DD`, a `T` or a space before the time, seconds optional;
//! extra trailing fields (Android firmwares) ignored; bytes that are not UTF-8 replaced.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

/// Longest PIN kept (the terminals' own limit is 9 to 24 characters by model).
pub const MAX_PIN_LEN: usize = 64;

/// A query string's pairs, decoded; keys compared without case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Splits on `&`, decodes `%XX` and `+` (invalid escapes kept as written).
    pub fn parse(q: &str) -> Query {
        Query(
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (percent_decode(k), percent_decode(v)),
                    None => (percent_decode(p), String::new()),
                })
                .collect(),
        )
    }

    /// The first value of `key` (any case), trimmed.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim())
    }
}

/// `%XX` and `+` decoded; bytes that are not UTF-8 replaced.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Which table an upload carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Table {
    /// Attendance records.
    AttLog,
    /// User and enrolment changes, operations.
    OperLog,
    /// Anything else (ATTPHOTO, BIODATA, ...), by its name as sent.
    Other(String),
}

/// What a request asks, from its method, path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `GET /iclock/cdata?options=all`: start-up handshake.
    Handshake,
    /// `POST /iclock/cdata?table=..`: an upload.
    Upload {
        /// What the terminal uploads: attendance logs, operation logs (users, enrolments), or
        /// another table by name.
        table: Table,
        /// The terminal's cursor after this upload (`Stamp=`, opaque).
        stamp: Option<String>,
    },
    /// `GET /iclock/getrequest` (or a bare `GET /iclock/cdata`): heartbeat and command poll.
    Poll {
        /// The `INFO=` counters some firmwares add.
        info: Option<Info>,
    },
    /// `POST /iclock/devicecmd`: command results.
    CommandResults,
    /// `GET /iclock/ping`: keep-alive during long uploads (push v2.4+).
    Ping,
    /// Anything else.
    Unknown,
}

/// Classifies a request. `get` is true for GET (and HEAD), false for POST and the rest.
pub fn request(get: bool, path: &str, q: &Query) -> Request {
    let p = path.trim_end_matches('/').to_ascii_lowercase();
    let p = p
        .strip_suffix(".aspx")
        .or_else(|| p.strip_suffix(".php"))
        .unwrap_or(&p);
    match (p, get) {
        ("/iclock/cdata", true) if q.get("options").is_some() => Request::Handshake,
        ("/iclock/cdata", true) | ("/iclock/getrequest", _) => Request::Poll {
            info: q.get("INFO").map(Info::parse),
        },
        ("/iclock/cdata", false) => Request::Upload {
            table: match q.get("table") {
                Some(t) if t.eq_ignore_ascii_case("ATTLOG") => Table::AttLog,
                Some(t) if t.eq_ignore_ascii_case("OPERLOG") => Table::OperLog,
                Some(t) => Table::Other(t.chars().take(32).collect()),
                None => Table::Other(String::new()),
            },
            stamp: q
                .get("Stamp")
                .or_else(|| q.get("AttLogStamp"))
                .filter(|s| !s.is_empty())
                .map(|s| s.chars().take(64).collect()),
        },
        ("/iclock/devicecmd", false) => Request::CommandResults,
        ("/iclock/ping", _) => Request::Ping,
        _ => Request::Unknown,
    }
}

/// The counters of a heartbeat's `INFO=firmware,users,fingerprints,records,ip,...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    /// Firmware version text.
    pub firmware: String,
    /// Users enrolled.
    pub users: Option<u64>,
    /// Fingerprint templates.
    pub fingerprints: Option<u64>,
    /// Attendance records held in the terminal's log.
    pub records: Option<u64>,
    /// The terminal's own IP address.
    pub ip: Option<String>,
}

impl Info {
    /// Reads what is there; a field that is not a number is `None`.
    pub fn parse(s: &str) -> Info {
        let f: Vec<&str> = s.split(',').map(str::trim).collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse().ok());
        Info {
            firmware: f.first().map_or(String::new(), |v| clean(v, 50)),
            users: num(1),
            fingerprints: num(2),
            records: num(3),
            ip: f.get(4).filter(|v| !v.is_empty()).map(|v| clean(v, 64)),
        }
    }
}

/// Text safe to store and log: control characters dropped, at most `max` characters.
pub fn clean(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// One attendance record as the terminal wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttRecord {
    /// The user's id on the terminal.
    pub pin: String,
    /// The terminal's local wall clock, no zone.
    pub time: NaiveDateTime,
    /// 0 check-in, 1 check-out, 4/5 overtime (others exist).
    pub status: Option<i32>,
    /// 1 fingerprint, 0 password, 4 card (2 on some models), 15 face; firmware-dependent.
    pub verify: Option<i32>,
    /// Work code (often 0).
    pub workcode: String,
}

/// A line that is not a record, with why (kept as a dead letter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number in the body.
    pub line: usize,
    /// The line, control characters escaped, at most 200 characters.
    pub text: String,
    /// Why it was not read.
    pub why: &'static str,
}

/// The records of an ATTLOG body, and the lines that are not records. Blank lines are skipped.
pub fn attlog(body: &[u8]) -> (Vec<AttRecord>, Vec<BadLine>) {
    let text = String::from_utf8_lossy(body);
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (n, raw) in text.split('\n').enumerate() {
        let line = raw.trim_matches(|c: char| c == '\r' || c == '\0' || c.is_whitespace());
        if line.is_empty() {
            continue;
        }
        match att_line(line) {
            Ok(r) => ok.push(r),
            Err(why) => bad.push(BadLine {
                line: n + 1,
                text: line
                    .chars()
                    .flat_map(char::escape_debug)
                    .take(200)
                    .collect(),
                why,
            }),
        }
    }
    (ok, bad)
}

fn att_line(line: &str) -> Result<AttRecord, &'static str> {
    // Tabs when there are any (the time then is one field with its space); otherwise runs of
    // spaces, the time being two tokens.
    let (pin, time, rest): (&str, String, Vec<&str>) = if line.contains('\t') {
        let f: Vec<&str> = line.split('\t').map(str::trim).collect();
        let pin = f.first().copied().unwrap_or("");
        let time = f.get(1).copied().unwrap_or("");
        let rest = f.get(2..).map(<[&str]>::to_vec).unwrap_or_default();
        (pin, time.to_string(), rest)
    } else {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 2 {
            return Err("fewer than two fields (PIN and time)");
        }
        // "PIN DATE TIME ..." or "PIN DATETTIME ...".
        if f[1].contains(['T', 't']) || f.len() < 3 {
            (
                f[0],
                f[1].to_string(),
                f.get(2..).map(<[&str]>::to_vec).unwrap_or_default(),
            )
        } else {
            (
                f[0],
                format!("{} {}", f[1], f[2]),
                f.get(3..).map(<[&str]>::to_vec).unwrap_or_default(),
            )
        }
    };
    if pin.is_empty() {
        return Err("empty PIN");
    }
    if pin.chars().count() > MAX_PIN_LEN
        || !pin
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("PIN is not 1-64 of [A-Za-z0-9._-]");
    }
    let time = wall_clock(&time).ok_or("time is not YYYY-MM-DD HH:MM[:SS]")?;
    let int = |i: usize| rest.get(i).and_then(|v| v.parse::<i32>().ok());
    Ok(AttRecord {
        pin: pin.to_string(),
        time,
        status: int(0),
        verify: int(1),
        workcode: rest.get(2).map_or(String::new(), |w| clean(w, 32)),
    })
}

/// A terminal's local time: `YYYY-MM-DD HH:MM:SS`, `/` for `-`, `T` for the space, seconds
/// optional, fractions ignored.
pub fn wall_clock(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    let (d, t) = s.split_once([' ', 'T', 't'])?;
    let d = d.replace('/', "-");
    let mut dp = d.split('-');
    let date = NaiveDate::from_ymd_opt(
        dp.next()?.parse().ok()?,
        dp.next()?.parse().ok()?,
        dp.next()?.parse().ok()?,
    )?;
    if dp.next().is_some() {
        return None;
    }
    let t = t.trim();
    let t = t.split_once('.').map_or(t, |(a, _)| a);
    let mut tp = t.split(':');
    let h: u32 = tp.next()?.parse().ok()?;
    let m: u32 = tp.next()?.parse().ok()?;
    let sec: u32 = match tp.next() {
        Some(x) => x.parse().ok()?,
        None => 0,
    };
    if tp.next().is_some() {
        return None;
    }
    Some(date.and_time(NaiveTime::from_hms_opt(h, m, sec)?))
}

/// One line of an OPERLOG body. Fingerprint templates (`TMP=`) are never kept: only which user
/// enrolled which finger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperLine {
    /// `USER PIN=.. Name=.. Card=..`: a user created or changed on the terminal.
    User {
        /// PIN.
        pin: String,
        /// Name as typed on the terminal.
        name: String,
        /// Card number, when set.
        card: String,
    },
    /// `FP PIN=.. FID=..`: a finger enrolled (template dropped).
    Finger {
        /// PIN.
        pin: String,
        /// Finger index.
        fid: String,
    },
    /// `OPLOG ...` and anything else: kept as text (at most 200 characters).
    Other(String),
}

/// The lines of an OPERLOG body.
pub fn operlog(body: &[u8]) -> Vec<OperLine> {
    let text = String::from_utf8_lossy(body);
    text.split('\n')
        .map(|l| l.trim_matches(|c: char| c == '\r' || c == '\0'))
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (head, rest) = l.trim_start().split_once([' ', '\t']).unwrap_or((l, ""));
            let kv = |key: &str| -> String {
                rest.split('\t')
                    .flat_map(|f| {
                        // Without tabs, space-separated pairs.
                        if rest.contains('\t') {
                            vec![f]
                        } else {
                            f.split(' ').collect()
                        }
                    })
                    .filter_map(|f| f.trim().split_once('='))
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map_or(String::new(), |(_, v)| clean(v, 64))
            };
            match head.to_ascii_uppercase().as_str() {
                "USER" => OperLine::User {
                    pin: kv("PIN"),
                    name: kv("Name"),
                    card: kv("Card"),
                },
                "FP" => OperLine::Finger {
                    pin: kv("PIN"),
                    fid: kv("FID"),
                },
                _ => OperLine::Other(clean(l, 200)),
            }
        })
        .collect()
}

/// A command's result as the terminal reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdResult {
    /// The id the server gave the command (`C:<id>:`).
    pub id: i64,
    /// The terminal's return code: 0 success, negative an error.
    pub code: i64,
    /// The command word it answers (`DATA`, `REBOOT`, ...).
    pub cmd: String,
}

/// The results in a devicecmd body: one per line, `ID=<id>&Return=<code>&CMD=<cmd>` (some
/// firmwares separate the pairs by tabs). Lines without a numeric ID are skipped.
pub fn command_results(body: &[u8]) -> Vec<CmdResult> {
    let text = String::from_utf8_lossy(body);
    text.split('\n')
        .filter_map(|line| {
            let q = Query::parse(&line.replace(['\t', '\r'], "&"));
            Some(CmdResult {
                id: q.get("ID")?.parse().ok()?,
                code: q.get("Return").and_then(|c| c.parse().ok()).unwrap_or(0),
                cmd: clean(q.get("CMD").unwrap_or(""), 32),
            })
        })
        .collect()
}

/// The handshake's options, answered to `GET /iclock/cdata?options=all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The terminal's ATTLOG cursor as the server kept it (`0`: send everything).
    pub attlog_stamp: String,
    /// Its OPERLOG cursor.
    pub operlog_stamp: String,
    /// Seconds to wait after an error before retrying.
    pub error_delay_s: u32,
    /// Seconds between command polls.
    pub delay_s: u32,
}

/// The handshake answer. No `TimeZone=`: a terminal that reads it in another unit shifts its
/// clock by hours (the reference's first trap); the server never sets a terminal's clock.
pub fn handshake_answer(serial: &str, o: &Options) -> String {
    format!(
        "GET OPTION FROM: {serial}\r\nATTLOGStamp={}\r\nOPERLOGStamp={}\r\nATTPHOTOStamp=None\r\n\
         ErrorDelay={}\r\nDelay={}\r\nTransTimes=00:00;14:05\r\nTransInterval=1\r\n\
         TransFlag=TransData AttLog OpLog EnrollUser ChgUser EnrollFP ChgFP\r\nRealtime=1\r\n\
         Encrypt=0\r\nServerVer=2.4.1\r\nPushProtVer=2.4.1\r\n",
        o.attlog_stamp, o.operlog_stamp, o.error_delay_s, o.delay_s
    )
}

#[cfg(test)]
mod tests;
