//! Learning-rate schedules: hand-derived values, and transformers' schedulers
//! (tests/fixtures/schedules.json, made by tools/make_schedule_fixtures.py).
use std::path::Path;

use webtune::train::schedule::{LrSchedule, Schedule};

fn close(got: f32, want: f64, what: &str) {
    let tol = 1e-6 * want.abs() + 1e-12;
    assert!((got as f64 - want).abs() <= tol, "{what}: got {got}, want {want}");
}

#[test]
fn hand_derived_values() {
    // constant, warmup 4: s/4 below 4, then lr
    let c = LrSchedule::new(Schedule::Constant, 2e-4, 4, 10);
    for (s, want) in [(0, 0.0), (1, 0.5e-4), (2, 1e-4), (3, 1.5e-4), (4, 2e-4), (10, 2e-4), (50, 2e-4)] {
        close(c.lr_at(s), want, &format!("constant s={s}"));
    }
    // constant without warmup is lr from step 0
    close(LrSchedule::new(Schedule::Constant, 1e-3, 0, 0).lr_at(0), 1e-3, "constant no warmup");

    // linear, warmup 2, total 10: s/2, then (10 - s)/8
    let l = LrSchedule::new(Schedule::Linear, 1e-3, 2, 10);
    for (s, want) in [(1, 0.5e-3), (2, 1e-3), (3, 0.875e-3), (6, 0.5e-3), (9, 0.125e-3), (10, 0.0), (12, 0.0)] {
        close(l.lr_at(s), want, &format!("linear s={s}"));
    }

    // cosine, warmup 2, total 10: 0.5 (1 + cos(π (s - 2) / 8))
    let k = LrSchedule::new(Schedule::Cosine, 1e-3, 2, 10);
    let half_sqrt2 = std::f64::consts::FRAC_1_SQRT_2;
    for (s, want) in [
        (1, 0.5e-3),
        (2, 1e-3),
        (4, 0.5e-3 * (1.0 + half_sqrt2)),
        (6, 0.5e-3),
        (8, 0.5e-3 * (1.0 - half_sqrt2)),
        (10, 0.0),
        (14, 0.5e-3), // past total HF's cosine rises again: p = 1.5
    ] {
        close(k.lr_at(s), want, &format!("cosine s={s}"));
    }

    // min_lr floor: decay goes from lr to min_lr; warmup still starts from 0
    let m = LrSchedule { min_lr: 1e-4, ..k };
    close(m.lr_at(1), 0.5e-3, "cosine min_lr warmup");
    close(m.lr_at(6), 1e-4 + 0.9e-3 * 0.5, "cosine min_lr mid");
    close(m.lr_at(10), 1e-4, "cosine min_lr end");
    let lm = LrSchedule { min_lr: 1e-4, ..l };
    close(lm.lr_at(6), 1e-4 + 0.9e-3 * 0.5, "linear min_lr mid");
    close(lm.lr_at(10), 1e-4, "linear min_lr end");
    close(lm.lr_at(20), 1e-4, "linear min_lr past the end");

    // degenerate: total = warmup = 0 (HF's max(1, ..) guards)
    close(LrSchedule::new(Schedule::Linear, 1e-3, 0, 0).lr_at(0), 0.0, "linear total 0");
    close(LrSchedule::new(Schedule::Cosine, 1e-3, 0, 0).lr_at(0), 1e-3, "cosine total 0");
}

/// HF's update number s (1-based) runs at lr_at(s - 1): LambdaLR starts at λ(0).
#[test]
fn matches_transformers_schedulers() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schedules.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert!(cases.len() >= 9);
    for case in cases {
        let kind: Schedule = case["kind"].as_str().unwrap().parse().unwrap();
        let f = |k: &str| case[k].as_f64().unwrap();
        let s = LrSchedule {
            kind,
            lr: f("lr") as f32,
            warmup: f("warmup") as u32,
            total: f("total") as u32,
            min_lr: f("min_lr") as f32,
        };
        let lrs = case["lr_by_update"].as_array().unwrap();
        assert!(lrs.len() > s.total as usize);
        for (i, want) in lrs.iter().enumerate() {
            let update = i as u32 + 1;
            close(s.lr_at(update - 1), want.as_f64().unwrap(), &format!("{s:?} update {update}"));
        }
    }
}

#[test]
fn parse_names() {
    assert_eq!("constant".parse::<Schedule>(), Ok(Schedule::Constant));
    assert_eq!("linear".parse::<Schedule>(), Ok(Schedule::Linear));
    assert_eq!("cosine".parse::<Schedule>(), Ok(Schedule::Cosine));
    for bad in ["Cosine", "", "exp"] {
        let e = bad.parse::<Schedule>().unwrap_err();
        assert!(e.contains("constant, linear, cosine") && e.contains(&format!("{bad:?}")), "{e}");
    }
    assert_eq!(Schedule::Cosine.to_string().parse::<Schedule>(), Ok(Schedule::Cosine));
}
