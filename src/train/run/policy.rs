//! What is due after each training step — read the losses back, evaluate, save a checkpoint,
//! stop — as one pure function, so `webtune train`, `pretrain`, `demo` and the browser engine
//! follow the same rules.

/// What the user asked of the loop, as of the step that just ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Keep going.
    Run,
    /// Stop after this step and keep the work: a checkpoint to resume from (Ctrl-C, SIGTERM,
    /// the browser's Pause).
    Pause,
    /// Stop after this step without a checkpoint (the browser's Stop).
    Stop,
}

/// The rules of one run's loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepPolicy {
    /// Steps of the whole run.
    pub steps: u32,
    /// The step this invocation stops after (`--stop-after`, `pauseAfter`; else `steps`).
    pub last: u32,
    /// Whether there is held-out data to evaluate.
    pub has_eval: bool,
    /// Evaluate every N steps (always after the run's last step).
    pub eval_every: Option<u32>,
    /// Save a checkpoint every N steps.
    pub save_every: Option<u32>,
    /// Whether a periodic checkpoint is also written at the run's last step (the CLI keeps it;
    /// the browser deletes a finished run's checkpoint, so it skips it).
    pub save_at_end: bool,
}

/// What to do after a step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// Read back every loss not reported yet (before an evaluation, a checkpoint or the end).
    pub readback: bool,
    /// Compute the held-out loss now.
    pub eval: bool,
    /// Save a checkpoint now.
    pub checkpoint: bool,
    /// End the loop after this step.
    pub stop: bool,
}

impl StepPolicy {
    /// What is due after step `s` (1-based) ran, given the user's `control`:
    /// - stop at `last`, or when the user asked (pause or stop);
    /// - evaluate every `eval_every` steps and after the run's last step, when there is data;
    /// - checkpoint every `save_every` steps (at the run's last step only with `save_at_end`),
    ///   and whenever the loop ends before the run is over, unless the user asked for Stop;
    /// - read the losses back whenever any of these happens.
    pub fn after_step(&self, s: u32, control: Control) -> Due {
        let stop = s >= self.last || control != Control::Run;
        let eval = self.has_eval && (self.eval_every.is_some_and(|n| s.is_multiple_of(n)) || s == self.steps);
        let periodic = self.save_every.is_some_and(|n| s.is_multiple_of(n)) && (s < self.steps || self.save_at_end);
        let early_end = stop && s < self.steps && control != Control::Stop;
        let checkpoint = periodic || early_end;
        Due { readback: stop || eval || checkpoint, eval, checkpoint, stop }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> StepPolicy {
        StepPolicy { steps: 10, last: 10, has_eval: true, eval_every: Some(4), save_every: Some(3), save_at_end: true }
    }

    #[test]
    fn a_plain_run_evaluates_and_saves_on_schedule_and_stops_at_the_end() {
        let p = policy();
        let due: Vec<Due> = (1..=10).map(|s| p.after_step(s, Control::Run)).collect();
        let steps = |f: fn(&Due) -> bool| -> Vec<u32> { (1..=10).filter(|&s| f(&due[s as usize - 1])).collect() };
        assert_eq!(steps(|d| d.eval), [4, 8, 10]);
        assert_eq!(steps(|d| d.checkpoint), [3, 6, 9]);
        assert_eq!(steps(|d| d.stop), [10]);
        assert_eq!(steps(|d| d.readback), [3, 4, 6, 8, 9, 10]);
        // 10 is not a multiple of 3: no checkpoint at the end; with save_every 5 there is one...
        let p5 = StepPolicy { save_every: Some(5), ..p };
        assert!(p5.after_step(10, Control::Run).checkpoint);
        // ...unless the caller drops finished runs' checkpoints
        assert!(!StepPolicy { save_at_end: false, ..p5 }.after_step(10, Control::Run).checkpoint);
    }

    #[test]
    fn pausing_or_stopping_early_saves_unless_stopped() {
        let p = policy();
        let paused = p.after_step(5, Control::Pause);
        assert_eq!(paused, Due { readback: true, eval: false, checkpoint: true, stop: true });
        let stopped = p.after_step(5, Control::Stop);
        assert_eq!(stopped, Due { readback: true, eval: false, checkpoint: false, stop: true });
        // --stop-after 7: stop there with a checkpoint, evaluate only if due
        let until7 = StepPolicy { last: 7, ..p };
        assert_eq!(until7.after_step(7, Control::Run), Due { readback: true, eval: false, checkpoint: true, stop: true });
        assert!(!until7.after_step(6, Control::Run).stop);
        // pausing at the run's last step: the run is over, nothing to resume
        assert_eq!(p.after_step(10, Control::Pause), Due { readback: true, eval: true, checkpoint: false, stop: true });
    }

    #[test]
    fn without_eval_data_nothing_is_evaluated() {
        let p = StepPolicy { has_eval: false, eval_every: Some(1), ..policy() };
        assert!((1..=10).all(|s| !p.after_step(s, Control::Run).eval));
        let quiet = StepPolicy { save_every: None, ..p };
        assert!((1..10).all(|s| p.after_step(s, Control::Run).checkpoint == (s % 3 == 0)));
        assert!((1..10).all(|s| quiet.after_step(s, Control::Run) == Due::default()));
    }
}
