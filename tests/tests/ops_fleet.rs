//! The operator's views against the real system: PostgreSQL, Mosquitto, rollcall-ingest and a
//! rollcalld gateway, all started here.
//!
//! * The live fleet page (`/fleet` on ingest's metrics port) in headless Chromium: the room, its
//!   gateway online with its readers, clock and backlog, today's session with how many punched;
//!   device ids, names and rooms that carry markup shown as text, never run; the gateway killed
//!   -9 turns offline on the page (the broker publishes its last will); a screenshot of the page
//!   is a real, non-blank image of the window's size.
//! * The Grafana dashboard and the alert rules query only metric names the two services
//!   actually expose (their `/metrics`), so neither can drift from the code.
//!
//! chromium and promtool come with scripts/install-deps.sh; without chromium these tests fail.

mod ingest_common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ingest_common::{Db, Schema, ins};
use rollcall_tests::chromium::Chromium;
use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::rollcalld::{GatewayOptions, Rollcalld, parse_reply};
use tokio_postgres::Client;

const DEVICE: &str = "room-101"; // GatewayOptions' default device id
/// A registered device whose id, name and room are markup: the page must show them as text.
const HOSTILE_DEVICE: &str = "<img src=x onerror=alert(1)>";
const HOSTILE_NAME: &str = "\"><script>alert(2)</script>";
const HOSTILE_ROOM: &str = "R<b>9</b>";

/// Room R101 with `room-101`, a session open now (S001..S003 on its roll, absent rows
/// pre-created as CampsHub360 does), and the hostile room with a session open 20 minutes
/// without a punch, flagged in rollcall.room_alert. Returns the R101 session id.
async fn seed(c: &Client) -> i64 {
    let section = ins(c, "academics_coursesection", &[]).await;
    let mut students = Vec::new();
    for roll in ["S001", "S002", "S003"] {
        let id = uuid::Uuid::now_v7();
        ins(
            c,
            "students_student",
            &[
                ("id", &format!("'{id}'")),
                ("roll_number", &format!("'{roll}'")),
                ("status", "'ACTIVE'"),
            ],
        )
        .await;
        ins(
            c,
            "academics_courseenrollment",
            &[
                ("student_id", &format!("'{id}'")),
                ("course_section_id", &section),
                ("status", "'ENROLLED'"),
            ],
        )
        .await;
        students.push(id);
    }
    for (device, name, room) in [
        (DEVICE, "door", "R101"),
        (HOSTILE_DEVICE, HOSTILE_NAME, HOSTILE_ROOM),
    ] {
        ins(
            c,
            "attendance_biometric_device",
            &[
                ("device_id", &quote(device)),
                ("device_name", &quote(name)),
                ("room", &quote(room)),
                ("is_enabled", "true"),
                ("status", "'active'"),
                ("device_type", "'fingerprint'"),
            ],
        )
        .await;
    }
    let session: i64 = ins(
        c,
        "attendance_session",
        &[
            ("course_section_id", &section),
            ("scheduled_date", "current_date"),
            (
                "start_datetime",
                "date_trunc('second', now()) - interval '1 minute'",
            ),
            (
                "end_datetime",
                "date_trunc('second', now()) + interval '1 hour'",
            ),
            ("room", "'R101'"),
            ("status", "'open'"),
        ],
    )
    .await
    .parse()
    .unwrap();
    for s in &students {
        ins(
            c,
            "attendance_record",
            &[
                ("session_id", &session.to_string()),
                ("student_id", &format!("'{s}'")),
                ("mark", "'absent'"),
            ],
        )
        .await;
    }
    let quiet: i64 = ins(
        c,
        "attendance_session",
        &[
            ("course_section_id", &section),
            ("scheduled_date", "current_date"),
            ("start_datetime", "now() - interval '20 minutes'"),
            ("actual_start_datetime", "now() - interval '20 minutes'"),
            ("end_datetime", "now() + interval '40 minutes'"),
            ("room", &quote(HOSTILE_ROOM)),
            ("status", "'open'"),
        ],
    )
    .await
    .parse()
    .unwrap();
    c.execute(
        "INSERT INTO rollcall.room_alert (session_id, kind, room, detected_at)
         VALUES ($1, 'no_punches', $2, now())",
        &[&quiet, &HOSTILE_ROOM],
    )
    .await
    .unwrap();
    session
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// rollcall-ingest as a child process, killed when dropped.
struct Ingest {
    child: Child,
    log: PathBuf,
    metrics: u16,
}

impl Ingest {
    fn start(dir: &Path, db_url: &str, broker_url: &str) -> Ingest {
        let metrics = rollcall_tests::free_port().unwrap();
        let config = dir.join("ingest.toml");
        std::fs::write(
            &config,
            format!(
                "node_name = \"fleet\"\n[database]\nurl = \"{db_url}\"\npool_size = 4\nschema_mode = \"existing\"\n\
                 [mqtt]\nurl = \"{broker_url}\"\n[campus]\ntimezone = \"UTC\"\n[ingest]\nlinger_ms = 2\n\
                 [attendance]\ndemo_devices = [\"{DEVICE}\"]\n[jobs]\nenabled = false\n\
                 [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n"
            ),
        )
        .unwrap();
        let log = dir.join("ingest.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(rollcall_tests::binaries::ingest())
            .args(["-c", config.to_str().unwrap(), "run"])
            .env("RUST_LOG", "warn")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("starting rollcall-ingest");
        Ingest {
            child,
            log,
            metrics,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.metrics)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP GET on 127.0.0.1 (the services answer HTTP/1.1 and close).
async fn get(port: u16, path: &str) -> anyhow::Result<String> {
    Ok(get_with_head(port, path).await?.1)
}

/// [`get`] with the response head.
async fn get_with_head(port: u16, path: &str) -> anyhow::Result<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut text)).await??;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP answer: {text}"))?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok((head.to_ascii_lowercase(), body.to_owned()))
}

/// Polls `/fleet.json` until `ok` holds for it.
async fn wait_json(
    ingest: &Ingest,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let last = get(ingest.metrics, "/fleet.json").await;
        if let Ok(body) = &last
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(body)
            && ok(&v)
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen in 45 s; last /fleet.json: {last:?}\ningest log:\n{}",
            ingest.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn gateway_of<'a>(v: &'a serde_json::Value, device: &str) -> Option<&'a serde_json::Value> {
    v["rooms"].as_array()?.iter().find_map(|r| {
        r["gateways"]
            .as_array()?
            .iter()
            .find(|g| g["device_id"] == device)
    })
}

/// Everything running, the gateway online and two students punched in R101.
struct Fleet {
    _db: Db,
    _broker: Mosquitto,
    ingest: Ingest,
    gateway: Rollcalld,
    gateway_metrics: u16,
    session: i64,
    dir: tempfile::TempDir,
}

async fn fleet() -> Fleet {
    let db = ingest_common::db(Schema::Standalone)
        .await
        .expect("standalone database");
    let session = seed(&db.client).await;
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ingest = Ingest::start(dir.path(), &db.url, &broker.url());
    let gateway_metrics = rollcall_tests::free_port().unwrap();
    let mut options = GatewayOptions::new(broker.port());
    options.metrics_port = Some(gateway_metrics);
    let config = options.write(dir.path()).unwrap();
    let gateway = Rollcalld::start(&rollcall_tests::binaries::rollcalld(), &config)
        .await
        .unwrap();
    for line in ["finger door-finger 1", "card door-card 0000000002"] {
        let reply = gateway.command(line).await.unwrap();
        let r = parse_reply(&reply).unwrap_or_else(|| panic!("{line}: {reply}"));
        assert_eq!(r.outcome, "accepted", "{line}: {reply}");
    }
    wait_json(
        &ingest,
        "the gateway online with both punches counted",
        |v| {
            let session = v["rooms"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["sessions"].as_array().into_iter().flatten())
                .find(|s| s["id"] == session);
            gateway_of(v, DEVICE).is_some_and(|g| g["state"] == "online" && g["journal_depth"] == 0)
                && session.is_some_and(|s| s["punched"] == 2)
        },
    )
    .await;
    Fleet {
        _db: db,
        _broker: broker,
        ingest,
        gateway,
        gateway_metrics,
        session,
        dir,
    }
}

/// The value of attribute `name` on the element whose `key` attribute is `value`, in a DOM as
/// Chromium serialises it (attributes in the order the script set them).
fn attr_after<'a>(dom: &'a str, anchor: &str, name: &str) -> Option<&'a str> {
    let at = dom.find(anchor)?;
    let tag_end = at + dom[at..].find('>')?;
    let tag = &dom[at..tag_end];
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_page_shows_rooms_gateways_and_sessions_and_a_killed_gateway_goes_offline() {
    let browser = Chromium::new().expect("chromium (scripts/install-deps.sh installs it)");
    let mut f = fleet().await;
    let page = f.ingest.url("/fleet");
    let (head, html) = get_with_head(f.ingest.metrics, "/fleet").await.unwrap();
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains("content-security-policy: default-src 'none';")
            && head.contains("connect-src 'self'"),
        "the page may load nothing from elsewhere: {head}"
    );
    assert!(
        !html.contains("src=\"") && !html.contains("href=\""),
        "no external asset: {html}"
    );
    let (head, body) = get_with_head(f.ingest.metrics, "/fleet.json")
        .await
        .unwrap();
    assert!(head.contains("content-type: application/json"), "{head}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let g = gateway_of(&json, DEVICE).unwrap();
    assert_eq!(
        g["punches_per_minute"], 0.4,
        "2 punches averaged over 5 minutes: {g}"
    );
    assert_eq!(g["readers"].as_array().map(Vec::len), Some(2), "{g}");
    assert!(g["ntp_synced"].is_boolean(), "{g}");
    assert_eq!(g["roster_version"], serde_json::Value::Null, "{g}");

    let dom = browser.dump_dom(&page).unwrap();
    let row = format!("data-device=\"{DEVICE}\"");
    assert_eq!(
        attr_after(&dom, &row, "data-state"),
        Some("online"),
        "{dom}"
    );
    assert_eq!(attr_after(&dom, &row, "data-depth"), Some("0"), "{dom}");
    for reader in ["door-card", "door-finger"] {
        let anchor = format!("data-reader=\"{reader}\"");
        assert_eq!(
            attr_after(&dom, &anchor, "data-healthy"),
            Some("true"),
            "{dom}"
        );
    }
    let session = format!("data-session=\"{}\"", f.session);
    assert_eq!(
        attr_after(&dom, &session, "data-punched"),
        Some("2"),
        "{dom}"
    );
    assert_eq!(
        attr_after(&dom, &session, "data-on-roll"),
        Some("3"),
        "{dom}"
    );
    assert!(dom.contains("2 / 3"), "punched / on roll shown: {dom}");
    assert!(dom.contains("Room R101"), "{dom}");
    assert!(
        dom.contains("synced") || dom.contains("NOT synced"),
        "{dom}"
    );

    // Markup from the database is text on the page: escaped in the serialised DOM, and no
    // element was made of it.
    assert!(
        dom.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "the hostile device id shown as text: {dom}"
    );
    assert!(
        dom.contains("&lt;script&gt;alert(2)&lt;/script&gt;"),
        "the hostile device name shown as text: {dom}"
    );
    assert!(
        dom.contains("Room R&lt;b&gt;9&lt;/b&gt;"),
        "the hostile room shown as text: {dom}"
    );
    assert!(!dom.contains("<img"), "an element made from data: {dom}");
    assert!(!dom.contains("<b>9"), "an element made from data: {dom}");
    assert!(
        !dom.contains("<script>alert"),
        "an element made from data: {dom}"
    );
    let hostile = dom
        .find("Room R&lt;b&gt;9&lt;/b&gt;")
        .map(|i| &dom[..i])
        .and_then(|before| before.rfind("<section"))
        .map(|i| &dom[i..i + 60])
        .unwrap_or_default();
    assert!(
        hostile.contains("class=\"room alert\""),
        "the room with an open session and no punches is flagged: {hostile}"
    );
    assert!(
        dom.contains("open session, no punches"),
        "the flag says why: {dom}"
    );
    assert!(
        dom.contains("data-state=\"never\""),
        "a registered gateway that never reported says so: {dom}"
    );

    // A screenshot of the page: a real PNG of the window's size with something drawn on it.
    let shot = f.dir.path().join("fleet.png");
    browser.screenshot(&page, &shot, 1280, 900).unwrap();
    assert_screenshot_not_blank(&shot, 1280, 900);
    // Kept for a person to look at: target/tmp/fleet-page.png.
    let _ = std::fs::copy(
        &shot,
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("fleet-page.png"),
    );

    // kill -9: no goodbye; the broker publishes the gateway's last will after its keep-alive
    // (5 s) runs out, ingest records it, and the page shows the gateway offline.
    f.gateway.kill9();
    wait_json(&f.ingest, "the killed gateway offline", |v| {
        gateway_of(v, DEVICE).is_some_and(|g| g["state"] == "offline")
    })
    .await;
    let dom = browser.dump_dom(&page).unwrap();
    assert_eq!(
        attr_after(&dom, &row, "data-state"),
        Some("offline"),
        "{dom}"
    );
    assert!(dom.contains("state offline"), "styled as offline: {dom}");
}

fn assert_screenshot_not_blank(path: &Path, width: u32, height: u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a PNG of sane size")];
    let info = reader.next_frame(&mut buf).expect("a PNG frame");
    assert_eq!(
        (info.width, info.height),
        (width, height),
        "screenshot size"
    );
    let px = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    let background = pixels[0];
    let different = pixels.iter().filter(|p| *p != &background).count();
    let colours: BTreeSet<&[u8]> = pixels.iter().copied().collect();
    assert!(
        different > pixels.len() / 100 && colours.len() > 8,
        "the screenshot looks blank: {different} of {} pixels differ from the background, \
         {} colours",
        pixels.len(),
        colours.len()
    );
}

/// Metric names a text exposition declares, with the sample names each type produces.
fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let (Some(name), Some(kind)) = (it.next(), it.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "summary" => &["", "_sum", "_count"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

/// `rollcall_*` identifiers in a PromQL expression.
fn queried_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("rollcall_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            out.insert(expr[start..end].to_owned());
        }
        i = end;
    }
    out
}

fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| dashboard_exprs(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alert_rules_query_only_metrics_the_services_expose() {
    let f = fleet().await;
    // A second gateway over TLS with a client certificate, for the certificate gauge.
    let pki = rollcall_tests::pki::Pki::create(f.dir.path()).unwrap();
    let tls_broker = Mosquitto::start_tls(&pki).unwrap();
    let (cert, key) = pki.client("room-tls").unwrap();
    let tls_dir = f.dir.path().join("tls-gateway");
    std::fs::create_dir_all(&tls_dir).unwrap();
    let mut options = GatewayOptions::new(tls_broker.tls_port().unwrap());
    options.device_id = "room-tls".into();
    options.metrics_port = Some(rollcall_tests::free_port().unwrap());
    options.tls = Some((pki.ca(), cert.clone(), key));
    let tls_gateway = Rollcalld::start(
        &rollcall_tests::binaries::rollcalld(),
        &options.write(&tls_dir).unwrap(),
    )
    .await
    .unwrap();
    let tls_metrics = get(options.metrics_port.unwrap(), "/metrics")
        .await
        .unwrap();
    let expiry_line = tls_metrics
        .lines()
        .find(|l| l.starts_with("rollcall_client_cert_expiry_timestamp_seconds{"))
        .unwrap_or_else(|| {
            panic!(
                "no certificate expiry: {tls_metrics}\n{}",
                tls_gateway.log()
            )
        });
    assert!(
        expiry_line.contains(&format!("file=\"{}\"", cert.display())),
        "{expiry_line}"
    );
    let not_after: i64 = expiry_line.rsplit(' ').next().unwrap().parse().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(
        not_after > now + 86_400 && not_after < now + 20 * 366 * 86_400,
        "the test certificate's notAfter, {not_after}, is days to years away from {now}"
    );
    let gateway = get(f.gateway_metrics, "/metrics").await.unwrap();
    let ingest = get(f.ingest.metrics, "/metrics").await.unwrap();
    let mut exposed: BTreeSet<String> = exposed_names(&gateway)
        .into_iter()
        .chain(exposed_names(&tls_metrics))
        .chain(exposed_names(&ingest))
        .collect();
    // The new gauges are there, under the names the rules use.
    for name in [
        "rollcall_clock_synced",
        "rollcall_client_cert_expiry_timestamp_seconds",
        "rollcall_ingest_open_room_alerts",
        "rollcall_ingest_gateways",
        "rollcall_ingest_punches_total",
    ] {
        assert!(exposed.contains(name), "{name} not exposed: {exposed:?}");
    }
    // The seeded room alert is counted once ingest has read the database.
    assert!(
        ingest.contains("rollcall_ingest_open_room_alerts 1"),
        "{ingest}"
    );
    assert!(
        ingest.contains("rollcall_ingest_punches_total{outcome=\"recorded\"} 2"),
        "{ingest}"
    );

    let ops = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ops.join("grafana/rollcall-fleet.json")).unwrap(),
    )
    .expect("the dashboard is valid JSON");
    assert!(dashboard["title"].is_string(), "a dashboard has a title");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    let rules = std::fs::read_to_string(ops.join("prometheus/rollcall-alerts.yml")).unwrap();
    exprs.extend(
        rules
            .lines()
            .filter_map(|l| l.trim().strip_prefix("expr: "))
            .map(str::to_owned),
    );
    let mut queried = BTreeSet::new();
    for e in &exprs {
        queried.extend(queried_names(e));
    }
    assert!(queried.len() >= 15, "{queried:?}");
    // prometheus-client leaves a labelled family out of /metrics until its first sample. Two
    // stay empty here: simulated readers never report a health change, and jobs are off. For
    // them the registration in the service's source is the check.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (name, source, registered) in [
        (
            "rollcall_reader_up",
            "daemon/src/metrics.rs",
            "\"reader_up\"",
        ),
        (
            "rollcall_ingest_job_runs_total",
            "ingest/src/metrics.rs",
            "\"job_runs\"",
        ),
    ] {
        let code = std::fs::read_to_string(root.join(source)).unwrap();
        assert!(
            code.contains(registered),
            "{name}: {source} no longer registers it"
        );
        exposed.insert(name.to_owned());
    }
    let missing: Vec<&String> = queried.iter().filter(|n| !exposed.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "queried but exposed by neither service: {missing:?}\nexposed: {exposed:?}"
    );
}

#[test]
fn queried_names_finds_whole_metric_identifiers_only() {
    let e = "histogram_quantile(0.99, sum by (le) (rate(rollcall_ingest_commit_seconds_bucket[5m]))) > 1 and x_rollcall_no";
    assert_eq!(
        queried_names(e).into_iter().collect::<Vec<_>>(),
        ["rollcall_ingest_commit_seconds_bucket"]
    );
}
