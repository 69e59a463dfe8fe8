//! Learning-rate schedules: Hugging Face transformers' `get_constant_schedule_with_warmup`,
//! `get_linear_schedule_with_warmup` and `get_cosine_schedule_with_warmup` (0.5 cycles), with
//! their formulas exactly, plus an optional floor `min_lr` on the decay (as
//! `get_cosine_with_min_lr_schedule_with_warmup`).

/// The shape of the schedule after warmup.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
}

impl std::str::FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Schedule, String> {
        match s {
            "constant" => Ok(Schedule::Constant),
            "linear" => Ok(Schedule::Linear),
            "cosine" => Ok(Schedule::Cosine),
            _ => Err(format!("unknown learning-rate schedule {s:?}: expected one of constant, linear, cosine")),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Schedule::Constant => "constant",
            Schedule::Linear => "linear",
            Schedule::Cosine => "cosine",
        })
    }
}

/// A learning-rate schedule: peak `lr`, `warmup` steps, `total` steps, floor `min_lr` (0 = HF's
/// schedules exactly).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    pub kind: Schedule,
    pub lr: f32,
    pub warmup: u32,
    pub total: u32,
    pub min_lr: f32,
}

impl LrSchedule {
    /// A schedule with `min_lr` 0.
    pub fn new(kind: Schedule, lr: f32, warmup: u32, total: u32) -> LrSchedule {
        LrSchedule { kind, lr, warmup, total, min_lr: 0.0 }
    }

    /// The learning rate at step `s` (1-based), `lr · λ(s)` computed in f64, with HF's λ:
    /// - warmup, s < warmup (every kind): λ = s / max(1, warmup) — a linear ramp from lr/warmup
    ///   at s = 1 to the full lr at s = warmup;
    /// - then, with p = (s − warmup) / max(1, total − warmup) and r = min_lr / lr:
    ///   - constant: λ = 1 (min_lr is not used);
    ///   - linear: λ = max(0, (total − s) / max(1, total − warmup)) · (1 − r) + r;
    ///   - cosine: λ = max(0, 0.5 · (1 + cos(π · 2 · 0.5 · p)) · (1 − r) + r).
    ///
    /// So linear and cosine reach min_lr at s = total. Past `total`, linear stays at min_lr and
    /// cosine follows the formula (it rises again, as HF's does). s = 0 gives λ(0) (0 with warmup).
    ///
    /// Which step's lr an update uses: HF's `LambdaLR` starts at λ(0) and `scheduler.step()`
    /// (called after each `optimizer.step()`) moves it to λ(s), so HF's update number s
    /// (1-based) runs at `lr_at(s − 1)`: λ(0) = 0 for the first update when warmup > 0. To
    /// reproduce a transformers run exactly, give update s the lr `lr_at(s − 1)`.
    pub fn lr_at(&self, step: u32) -> f32 {
        let s = step as f64;
        let (w, n) = (self.warmup as f64, self.total as f64);
        let lambda = if step < self.warmup {
            s / w.max(1.0)
        } else {
            let rate = if self.lr != 0.0 { self.min_lr as f64 / self.lr as f64 } else { 0.0 };
            match self.kind {
                Schedule::Constant => 1.0,
                Schedule::Linear => {
                    let f = (0.0f64).max((n - s) / (1.0f64).max(n - w));
                    f * (1.0 - rate) + rate
                }
                Schedule::Cosine => {
                    let progress = (s - w) / (1.0f64).max(n - w);
                    let f = 0.5 * (1.0 + (std::f64::consts::PI * 0.5 * 2.0 * progress).cos());
                    (0.0f64).max(f * (1.0 - rate) + rate)
                }
            }
        };
        (self.lr as f64 * lambda) as f32
    }
}
