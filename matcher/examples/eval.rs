//! Runs the evaluation protocol of `fingerprint.md` on the FVC ISO templates.
//!
//! ```text
//! cargo run --release -p rollcall-matcher --example eval [FVC_ISO_DIR] [SET_FILTER]
//! ```
//!
//! `FVC_ISO_DIR` defaults to `../shared/reference/fingerprint/fvc-iso` from the workspace root;
//! `SET_FILTER` (for example `fvc2002`) keeps only the databases whose path contains it, which is
//! how parameters were tuned on FVC2002 alone.
//!
//! Per database (10 fingers x 8 impressions): genuine pairs are all 28 pairs of impressions of a
//! finger (280), impostor pairs all 2,880 cross-finger pairs, each compared once. Identification:
//! impressions 1-3 of every finger enrolled, 4-8 searched (50 probes); the reject rate is the
//! share of probes whose true finger does not score above the highest score any probe gave a wrong
//! finger (the threshold with zero false identifications, strangers included).

use anyhow::{Context, Result, bail};
use rollcall_matcher::{Comparer, Roster, THRESHOLD, Template, parse};
use std::path::{Path, PathBuf};
use std::time::Instant;

const DATABASES: [&str; 8] = [
    "fvc2002/DB1_B",
    "fvc2002/DB2_B",
    "fvc2002/DB3_B",
    "fvc2002/DB4_B",
    "fvc2004/DB1_B",
    "fvc2004/DB2_B",
    "fvc2004/DB3_B",
    "fvc2004/DB4_B",
];
const DISTORTED: &str = "fvc2004/DB1_B";
const FINGERS: usize = 10;
const IMPRESSIONS: usize = 8;
const ENROLLED: usize = 3;

/// Time this thread has spent on a CPU, from `/proc/thread-self/schedstat` (Linux): the machine
/// is shared with other builds, and wall time would charge their work to the matcher.
fn cpu_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 * 1e-9)
}

/// A stopwatch of on-CPU time where the system reports it, else wall time.
struct Stopwatch {
    wall: Instant,
    cpu: Option<f64>,
}

impl Stopwatch {
    fn start() -> Self {
        Self {
            wall: Instant::now(),
            cpu: cpu_time(),
        }
    }

    fn seconds(&self) -> f64 {
        match (self.cpu, cpu_time()) {
            (Some(a), Some(b)) => b - a,
            _ => self.wall.elapsed().as_secs_f64(),
        }
    }
}

struct Print {
    finger: usize,
    impression: usize,
    template: Template,
}

fn load(dir: &Path) -> Result<Vec<Print>> {
    let mut prints = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| {
            format!(
                "{}: cannot list (pass the fvc-iso directory as the first argument)",
                dir.display()
            )
        })?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    let mut fingers: Vec<String> = Vec::new();
    for path in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "iso"))
    {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .context("file name")?;
        let (finger, impression) = stem
            .split_once('_')
            .context("name is not <finger>_<impression>.iso")?;
        let impression: usize = impression.parse().context("impression number")?;
        let finger = match fingers.iter().position(|f| f == finger) {
            Some(i) => i,
            None => {
                fingers.push(finger.to_string());
                fingers.len() - 1
            }
        };
        let bytes = std::fs::read(path)?;
        let record = parse(&bytes).with_context(|| format!("{}", path.display()))?;
        let template = Template::from_record(&record)?;
        prints.push(Print {
            finger,
            impression: impression - 1,
            template,
        });
    }
    if fingers.len() != FINGERS || prints.len() != FINGERS * IMPRESSIONS {
        bail!(
            "{}: expected {FINGERS} fingers x {IMPRESSIONS} impressions, found {} prints",
            dir.display(),
            prints.len()
        );
    }
    Ok(prints)
}

#[derive(Default, Clone, Copy)]
struct Rates {
    eer: f64,
    fnmr_at_1: f64,
    fnmr_at_0: f64,
    rank1: f64,
    reject: f64,
}

impl Rates {
    fn mean(all: &[Rates]) -> Rates {
        let n = all.len() as f64;
        let sum = |f: fn(&Rates) -> f64| all.iter().map(f).sum::<f64>() / n;
        Rates {
            eer: sum(|r| r.eer),
            fnmr_at_1: sum(|r| r.fnmr_at_1),
            fnmr_at_0: sum(|r| r.fnmr_at_0),
            rank1: sum(|r| r.rank1),
            reject: sum(|r| r.reject),
        }
    }
}

/// Share of scores `>= t`.
fn share_at_or_above(sorted: &[f32], t: f32) -> f64 {
    (sorted.len() - sorted.partition_point(|&s| s < t)) as f64 / sorted.len() as f64
}

/// EER, FNMR at FMR <= 1 %, and FNMR at FMR = 0, accepting a pair when its score is `>= t`.
fn verification(genuine: &mut [f32], impostor: &mut [f32]) -> (f64, f64, f64) {
    genuine.sort_by(f32::total_cmp);
    impostor.sort_by(f32::total_cmp);
    let mut thresholds: Vec<f32> = genuine.iter().chain(impostor.iter()).copied().collect();
    thresholds.push(f32::INFINITY);
    thresholds.sort_by(f32::total_cmp);
    thresholds.dedup();
    let (mut eer, mut gap) = (1.0, f64::INFINITY);
    let (mut at1, mut at0) = (1.0f64, 1.0f64);
    for &t in &thresholds {
        let fmr = share_at_or_above(impostor, t);
        let fnmr = 1.0 - share_at_or_above(genuine, t);
        if (fmr - fnmr).abs() < gap {
            gap = (fmr - fnmr).abs();
            eer = (fmr + fnmr) / 2.0;
        }
        if fmr <= 0.01 {
            at1 = at1.min(fnmr);
        }
        if fmr == 0.0 {
            at0 = at0.min(fnmr);
        }
    }
    (eer, at1, at0)
}

struct DbResult {
    name: &'static str,
    genuine: Vec<f32>,
    impostor: Vec<f32>,
    rates: Rates,
    comparisons: usize,
    seconds: f64,
    max_impostor: f32,
    /// FMR and FNMR at the crate's roster threshold.
    fmr: f64,
    fnmr: f64,
}

fn evaluate(name: &'static str, prints: &[Print], comparer: &mut Comparer) -> DbResult {
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    let start = Stopwatch::start();
    for (i, a) in prints.iter().enumerate() {
        for b in &prints[i + 1..] {
            let s = comparer.compare(&a.template, &b.template);
            if a.finger == b.finger {
                genuine.push(s)
            } else {
                impostor.push(s)
            }
        }
    }
    let seconds = start.seconds();
    let comparisons = genuine.len() + impostor.len();
    let max_impostor = impostor.iter().copied().fold(0.0, f32::max);
    let (eer, fnmr_at_1, fnmr_at_0) = verification(&mut genuine, &mut impostor);
    let rates_at = |t: f32| {
        (
            share_at_or_above(&impostor, t),
            1.0 - share_at_or_above(&genuine, t),
        )
    };
    let (fmr, fnmr) = rates_at(THRESHOLD);

    let mut roster = Roster::new();
    for finger in 0..FINGERS {
        let enrolled = prints
            .iter()
            .filter(|p| p.finger == finger && p.impression < ENROLLED)
            .map(|p| p.template.clone())
            .collect();
        roster.enroll(finger, enrolled);
    }
    let probes: Vec<&Print> = prints.iter().filter(|p| p.impression >= ENROLLED).collect();
    let mut correct = 0;
    let mut mate_scores = Vec::new();
    let mut worst_non_mate = 0.0f32;
    for probe in &probes {
        let best = roster
            .search(&probe.template, comparer)
            .expect("roster is not empty");
        let right = *best.student == probe.finger;
        correct += usize::from(right);
        let non_mate = if right { best.runner_up } else { best.score };
        worst_non_mate = worst_non_mate.max(non_mate);
        mate_scores.push(if right { best.score } else { 0.0 });
    }
    let accepted = mate_scores.iter().filter(|&&s| s > worst_non_mate).count();
    let rates = Rates {
        eer,
        fnmr_at_1,
        fnmr_at_0,
        rank1: correct as f64 / probes.len() as f64,
        reject: 1.0 - accepted as f64 / probes.len() as f64,
    };
    DbResult {
        name,
        genuine,
        impostor,
        rates,
        comparisons,
        seconds,
        max_impostor,
        fmr,
        fnmr,
    }
}

fn pct(x: f64) -> String {
    format!("{:6.2} %", 100.0 * x)
}

fn row(name: &str, r: &Rates, extra: &str) {
    println!(
        "| {name:<22} | {} | {} | {} | {} | {} | {extra}",
        pct(r.eer),
        pct(r.fnmr_at_1),
        pct(r.fnmr_at_0),
        pct(r.rank1),
        pct(r.reject)
    );
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let root = match args.next() {
        Some(dir) => PathBuf::from(dir),
        None => {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/fingerprint/fvc-iso")
        }
    };
    let filter = args.next().unwrap_or_default();
    let mut comparer = Comparer::new();
    let mut all = Vec::new();
    let mut loaded = Vec::new();
    let prep_start = Stopwatch::start();
    for name in DATABASES.iter().filter(|n| n.contains(filter.as_str())) {
        loaded.push((*name, load(&root.join(name))?));
    }
    let templates: usize = loaded.iter().map(|(_, p)| p.len()).sum();
    let minutiae: usize = loaded
        .iter()
        .flat_map(|(_, p)| p)
        .map(|p| p.template.minutiae().len())
        .sum();
    let described: usize = loaded
        .iter()
        .flat_map(|(_, p)| p)
        .map(|p| p.template.descriptor_count())
        .sum();
    let prep = prep_start.seconds();
    println!(
        "| database               |    EER   | FNMR@FMR1% | FNMR@FMR0 |  rank-1  | reject@0FI | max impostor | FMR@T | FNMR@T"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, prints) in &loaded {
        let result = evaluate(name, prints, &mut comparer);
        row(
            result.name,
            &result.rates,
            &format!(
                "{:.3} | {} | {}",
                result.max_impostor,
                pct(result.fmr),
                pct(result.fnmr)
            ),
        );
        all.push(result);
    }
    let rates: Vec<Rates> = all.iter().map(|r| r.rates).collect();
    row("mean of DBs", &Rates::mean(&rates), "");
    let kept: Vec<Rates> = all
        .iter()
        .filter(|r| r.name != DISTORTED)
        .map(|r| r.rates)
        .collect();
    if kept.len() != rates.len() {
        row("mean without 2004 DB1", &Rates::mean(&kept), "");
    }
    pooled_thresholds(&all);
    let comparisons: usize = all.iter().map(|r| r.comparisons).sum();
    let seconds: f64 = all.iter().map(|r| r.seconds).sum();
    println!();
    println!(
        "speed: {comparisons} comparisons in {seconds:.3} s of one core's time = {:.0} comparisons/s ({:.1} us each); template preparation (parse + descriptors) {:.0} us each",
        comparisons as f64 / seconds,
        1e6 * seconds / comparisons as f64,
        1e6 * prep / templates as f64
    );
    println!(
        "templates: {templates}, {:.1} minutiae and {:.1} described minutiae (cylinders) on average",
        minutiae as f64 / templates as f64,
        described as f64 / templates as f64
    );
    roster_timing(&loaded, &mut comparer);
    Ok(())
}

/// Thresholds over all databases' impostor pairs pooled: the score a deployment would fix, with
/// the FNMR it costs on the pooled genuine pairs.
fn pooled_thresholds(all: &[DbResult]) {
    let mut impostor: Vec<f32> = all
        .iter()
        .flat_map(|r| r.impostor.iter().copied())
        .collect();
    let mut genuine: Vec<f32> = all.iter().flat_map(|r| r.genuine.iter().copied()).collect();
    impostor.sort_by(f32::total_cmp);
    genuine.sort_by(f32::total_cmp);
    println!();
    println!(
        "pooled over {} genuine and {} impostor pairs (threshold T = {THRESHOLD}):",
        genuine.len(),
        impostor.len()
    );
    for fmr in [0.01, 0.001, 0.0001] {
        let allowed = (fmr * impostor.len() as f64).floor() as usize;
        let t = impostor[impostor.len() - 1 - allowed];
        let t = f32::from_bits(t.to_bits() + 1);
        println!(
            "  FMR <= {:>6}: score >= {t:.4}, FNMR {}",
            pct(fmr).trim(),
            pct(1.0 - share_at_or_above(&genuine, t))
        );
    }
    println!(
        "  at T: FMR {} FNMR {}",
        pct(share_at_or_above(&impostor, THRESHOLD)),
        pct(1.0 - share_at_or_above(&genuine, THRESHOLD))
    );
}

/// Times searches of a 150-student roster with 3 impressions each, built from the data's fingers
/// (impressions 1-3 and 4-6 of each finger as two students), probed with impressions 7 and 8.
fn roster_timing(loaded: &[(&str, Vec<Print>)], comparer: &mut Comparer) {
    let mut roster = Roster::new();
    let mut probes = Vec::new();
    'fill: for group in 0..2 {
        for (db, prints) in loaded {
            for finger in 0..FINGERS {
                if roster.len() == 150 {
                    break 'fill;
                }
                let impressions = prints
                    .iter()
                    .filter(|p| p.finger == finger && p.impression / ENROLLED == group)
                    .map(|p| p.template.clone())
                    .collect();
                roster.enroll((*db, finger, group), impressions);
            }
        }
    }
    for (_, prints) in loaded {
        probes.extend(
            prints
                .iter()
                .filter(|p| p.impression >= 2 * ENROLLED)
                .map(|p| &p.template),
        );
    }
    let students = roster.len();
    let mut worst = 0.0f64;
    let start = Stopwatch::start();
    for probe in &probes {
        let one = Stopwatch::start();
        std::hint::black_box(roster.search(probe, comparer));
        worst = worst.max(one.seconds());
    }
    let mean = start.seconds() / probes.len() as f64;
    println!(
        "roster search: {students} students x {ENROLLED} impressions, {} probes: mean {:.2} ms, worst {:.2} ms per search",
        probes.len(),
        1e3 * mean,
        1e3 * worst
    );
}
