//! The matcher on a sample of the FVC data (2 fingers x 8 impressions from each of two
//! databases, in `tests/data/`): the full table is the `eval` example's job.

use rollcall_matcher::{Comparer, Roster, THRESHOLD, Template, VERIFICATION_THRESHOLD, parse};
use std::path::Path;

struct Print {
    db: &'static str,
    finger: u32,
    template: Template,
}

fn sample() -> Vec<Print> {
    let mut prints = Vec::new();
    for db in ["fvc2002-db1", "fvc2004-db2"] {
        for finger in [101, 102] {
            for impression in 1..=8 {
                let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join(format!("tests/data/{db}/{finger}_{impression}.iso"));
                let bytes = std::fs::read(&path).unwrap();
                let record = parse(&bytes).unwrap();
                prints.push(Print {
                    db,
                    finger,
                    template: Template::from_record(&record).unwrap(),
                });
            }
        }
    }
    prints
}

#[test]
fn genuine_pairs_pass_the_threshold_far_more_often_than_impostor_pairs() {
    let prints = sample();
    let mut comparer = Comparer::new();
    let (mut genuine, mut genuine_pass, mut impostor, mut impostor_pass) = (0, 0, 0, 0);
    for (i, a) in prints.iter().enumerate() {
        for b in prints[i + 1..].iter().filter(|b| b.db == a.db) {
            let pass = comparer.compare(&a.template, &b.template) >= VERIFICATION_THRESHOLD;
            if a.finger == b.finger {
                genuine += 1;
                genuine_pass += usize::from(pass);
            } else {
                impostor += 1;
                impostor_pass += usize::from(pass);
            }
        }
    }
    assert_eq!((genuine, impostor), (112, 128));
    let genuine_rate = genuine_pass as f64 / genuine as f64;
    let impostor_rate = impostor_pass as f64 / impostor as f64;
    // Measured on this sample: 92 % of genuine pairs pass, no impostor pair does.
    assert!(genuine_rate >= 0.7, "genuine pairs passing: {genuine_rate}");
    assert!(
        impostor_rate <= 0.03,
        "impostor pairs passing: {impostor_rate}"
    );
}

#[test]
fn comparison_is_close_to_symmetric_and_a_print_matches_itself_best() {
    let prints = sample();
    let mut comparer = Comparer::new();
    let (a, b) = (&prints[0].template, &prints[1].template);
    let (ab, ba) = (comparer.compare(a, b), comparer.compare(b, a));
    assert!((ab - ba).abs() < 0.02, "{ab} vs {ba}");
    let itself = comparer.compare(a, a);
    assert!(itself > ab && itself > THRESHOLD, "{itself}");
}

#[test]
fn search_finds_the_enrolled_student_and_rejects_a_stranger() {
    let prints = sample();
    let mut comparer = Comparer::new();
    let mut roster = Roster::new();
    let stranger = ("fvc2004-db2", 102);
    for student in [
        ("fvc2002-db1", 101),
        ("fvc2002-db1", 102),
        ("fvc2004-db2", 101),
    ] {
        let enrolled = prints
            .iter()
            .filter(|p| (p.db, p.finger) == student)
            .take(3)
            .map(|p| p.template.clone())
            .collect();
        roster.enroll(student, enrolled);
    }
    let mut found = 0;
    for (db, finger) in [
        ("fvc2002-db1", 101),
        ("fvc2002-db1", 102),
        ("fvc2004-db2", 101),
    ] {
        for probe in prints
            .iter()
            .filter(|p| (p.db, p.finger) == (db, finger))
            .skip(3)
        {
            let best = roster.search(&probe.template, &mut comparer).unwrap();
            assert_eq!(*best.student, (db, finger), "probe of {db}/{finger}");
            found += usize::from(best.score >= THRESHOLD);
        }
    }
    // 15 probes; measured: all 15 pass the identification threshold.
    assert!(found >= 12, "{found} of 15 probes identified");
    for probe in prints.iter().filter(|p| (p.db, p.finger) == stranger) {
        let best = roster.search(&probe.template, &mut comparer).unwrap();
        assert!(
            best.score < THRESHOLD,
            "stranger scored {} against {:?}",
            best.score,
            best.student
        );
    }
}

#[test]
fn empty_roster_and_empty_templates_answer_nothing() {
    let mut comparer = Comparer::new();
    let roster: Roster<u32> = Roster::new();
    let probe = sample().swap_remove(0).template;
    assert!(roster.search(&probe, &mut comparer).is_none());
    let empty = Template::new(Vec::new());
    assert_eq!(comparer.compare(&probe, &empty), 0.0);
    assert_eq!(comparer.compare(&empty, &probe), 0.0);
}
