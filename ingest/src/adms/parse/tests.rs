//! The reference's bytes (`../shared/reference/zkteco-adms.md`), written out here, not built
//! from the parser's own constants.

use super::*;

fn t(s: &str) -> NaiveDateTime {
    wall_clock(s).unwrap()
}

#[test]
fn reference_attlog_line_reads() {
    let (ok, bad) = attlog(b"1\t2026-04-01 08:00:00\t0\t1\t0\t0\t0");
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(
        ok,
        vec![AttRecord {
            pin: "1".into(),
            time: t("2026-04-01 08:00:00"),
            status: Some(0),
            verify: Some(1),
            workcode: "0".into(),
        }]
    );
}

#[test]
fn space_separated_crlf_and_android_extra_fields_read_alike() {
    let body = b"1001 2026-04-01 08:00:00 0 15 0 0 0\r\n\
                 1002\t2026-04-01 08:00:05\t1\t4\t0\t0\t0\t255\t1\t36.6\t0\r\n\
                 \r\n\
                 1003\t2026/04/01T08:00\t0\r\n";
    let (ok, bad) = attlog(body);
    assert!(bad.is_empty(), "{bad:?}");
    let got: Vec<(&str, NaiveDateTime, Option<i32>, Option<i32>)> = ok
        .iter()
        .map(|r| (r.pin.as_str(), r.time, r.status, r.verify))
        .collect();
    assert_eq!(
        got,
        vec![
            ("1001", t("2026-04-01 08:00:00"), Some(0), Some(15)),
            ("1002", t("2026-04-01 08:00:05"), Some(1), Some(4)),
            ("1003", t("2026-04-01 08:00:00"), Some(0), None),
        ]
    );
}

#[test]
fn garbage_lines_are_returned_with_why_and_the_rest_still_read() {
    let body = b"\xff\xfe\x00garbage\n7\t2026-13-40 25:00:00\t0\t1\n\x1b[31m\t2026-04-01 08:00:00\n8\t2026-04-01 09:15:00\t0\t1\n";
    let (ok, bad) = attlog(body);
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].pin, "8");
    assert_eq!(
        bad.iter().map(|b| b.line).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(bad.iter().all(|b| !b.text.contains('\x1b')), "{bad:?}");
}

#[test]
fn no_input_panics_the_attlog_parser() {
    for body in [
        &b""[..],
        b"\t",
        b"\t\t\t",
        b" ",
        b"1",
        b"1\t",
        b"1 2026-04-01",
        b"1\t2026-04-01",
        b"1\t2026-04-01 ",
        b"1\t-- ::",
        b"1\t2026-04-01 08:00:00:00",
        b"1\t99999999999-04-01 08:00:00",
        b"\xf0\x9f\x98",
    ] {
        let _ = attlog(body);
    }
    let long_pin = format!("{}\t2026-04-01 08:00:00", "9".repeat(65));
    assert_eq!(attlog(long_pin.as_bytes()).1.len(), 1);
}

#[test]
fn query_keys_are_read_in_any_case_and_decoded() {
    let q =
        Query::parse("sn=CKJ1234&Table=ATTLOG&stamp=9999&INFO=Ver%206.60%2C2,3,10,192.168.1.201");
    assert_eq!(q.get("SN"), Some("CKJ1234"));
    assert_eq!(q.get("table"), Some("ATTLOG"));
    assert_eq!(q.get("Stamp"), Some("9999"));
    assert_eq!(q.get("INFO"), Some("Ver 6.60,2,3,10,192.168.1.201"));
    assert_eq!(percent_decode("%zz%4"), "%zz%4");
    assert_eq!(percent_decode("a+b%2Bc"), "a b+c");
}

#[test]
fn requests_of_the_reference_classify() {
    let q = |s: &str| Query::parse(s);
    assert_eq!(
        request(
            true,
            "/iclock/cdata",
            &q("SN=X&options=all&pushver=2.4.1&language=69")
        ),
        Request::Handshake
    );
    assert_eq!(
        request(false, "/iclock/cdata", &q("SN=X&table=ATTLOG&Stamp=9999")),
        Request::Upload {
            table: Table::AttLog,
            stamp: Some("9999".into())
        }
    );
    assert_eq!(
        request(
            false,
            "/iclock/cdata.aspx",
            &q("SN=X&table=OPERLOG&OpStamp=1")
        ),
        Request::Upload {
            table: Table::OperLog,
            stamp: None
        }
    );
    assert_eq!(
        request(true, "/iclock/getrequest", &q("SN=X")),
        Request::Poll { info: None }
    );
    assert_eq!(
        request(
            true,
            "/ICLOCK/GETREQUEST/",
            &q("SN=X&INFO=Ver 6.60 Apr 28 2017,12,10,345,192.168.1.201,10,7,12,11,111")
        ),
        Request::Poll {
            info: Some(Info {
                firmware: "Ver 6.60 Apr 28 2017".into(),
                users: Some(12),
                fingerprints: Some(10),
                records: Some(345),
                ip: Some("192.168.1.201".into()),
            })
        }
    );
    assert_eq!(
        request(false, "/iclock/devicecmd", &q("SN=X")),
        Request::CommandResults
    );
    assert_eq!(request(true, "/iclock/ping", &q("SN=X")), Request::Ping);
    assert_eq!(request(true, "/index.html", &q("")), Request::Unknown);
}

#[test]
fn operlog_keeps_users_and_drops_templates() {
    let body = b"USER PIN=1\tName=Asha Rao\tPri=0\tPasswd=\tCard=0012345\tGrp=1\n\
                 FP PIN=1\tFID=6\tSize=1024\tValid=1\tTMP=TWpVek1UQXdNREF3\n\
                 OPLOG 4\t0\t2026-04-01 08:00:00\t0\t0\t0\t0\n";
    assert_eq!(
        operlog(body),
        vec![
            OperLine::User {
                pin: "1".into(),
                name: "Asha Rao".into(),
                card: "0012345".into()
            },
            OperLine::Finger {
                pin: "1".into(),
                fid: "6".into()
            },
            OperLine::Other(
                "OPLOG 4\t0\t2026-04-01 08:00:00\t0\t0\t0\t0"
                    .chars()
                    .filter(|c| !c.is_control())
                    .collect()
            ),
        ]
    );
}

#[test]
fn command_results_read_one_per_line_with_either_separator() {
    let body =
        b"ID=1&Return=0&CMD=CHECK\nID=2\tReturn=-1002\tCMD=DATA\r\nnonsense\nID=x&Return=0\n";
    assert_eq!(
        command_results(body),
        vec![
            CmdResult {
                id: 1,
                code: 0,
                cmd: "CHECK".into()
            },
            CmdResult {
                id: 2,
                code: -1002,
                cmd: "DATA".into()
            },
        ]
    );
}

#[test]
fn handshake_answer_carries_the_kept_stamp_and_no_time_zone() {
    let a = handshake_answer(
        "CKJ1234",
        &Options {
            attlog_stamp: "9999".into(),
            operlog_stamp: "0".into(),
            error_delay_s: 30,
            delay_s: 10,
        },
    );
    assert!(
        a.starts_with("GET OPTION FROM: CKJ1234\r\nATTLOGStamp=9999\r\n"),
        "{a}"
    );
    assert!(
        a.contains("\r\nDelay=10\r\n") && a.contains("\r\nErrorDelay=30\r\n"),
        "{a}"
    );
    assert!(!a.contains("TimeZone"), "{a}");
}
