//! The signals that end a run: Ctrl-C (SIGINT), SIGTERM (a shutdown, `timeout`, a container
//! stop, a job scheduler) and SIGHUP (a closed terminal, a lost SSH session). The first of them
//! asks the run to stop after its current step and keep its work (a checkpoint and the output,
//! `Control::Pause`); a second one quits at once, which loses only the steps since the last
//! checkpoint, because every file is written under a temporary name and renamed. The exit code
//! names the signal: 128 + its number (130, 143, 129), as a shell reports a process it killed.

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use webtune::train::Control;

/// Signals received so far.
static RECEIVED: AtomicU32 = AtomicU32::new(0);
/// The first one's number (0 = none yet).
static FIRST: AtomicI32 = AtomicI32::new(0);

const SIGINT: i32 = 2;
#[cfg(unix)]
const HANDLED: [i32; 3] = [SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP];

/// A signal that stopped the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal(pub i32);

impl Signal {
    /// How messages name it.
    pub fn name(self) -> &'static str {
        match self.0 {
            SIGINT => "Ctrl-C",
            15 => "SIGTERM",
            1 => "SIGHUP",
            _ => "a signal",
        }
    }

    /// The process's exit code after it: 128 + the signal's number.
    pub fn exit_code(self) -> i32 {
        128 + self.0
    }
}

/// The first signal received, if any.
pub fn received() -> Option<Signal> {
    (RECEIVED.load(Ordering::SeqCst) > 0).then(|| Signal(FIRST.load(Ordering::SeqCst)))
}

/// What the user asks of the loop: after a signal, stop after this step and keep the work.
pub fn control() -> Control {
    if received().is_some() {
        Control::Pause
    } else {
        Control::Run
    }
}

fn on_signal(sig: i32) {
    if RECEIVED.fetch_add(1, Ordering::SeqCst) == 0 {
        FIRST.store(sig, Ordering::SeqCst);
        let s = Signal(sig);
        let again = if sig == SIGINT { "Ctrl-C again" } else { "a second signal" };
        let by = if sig == SIGINT { String::new() } else { format!(" by {}", s.name()) };
        crate::say!("\ninterrupted{by}: finishing this step, then saving a checkpoint and the output ({again} quits at once)");
    } else {
        crate::say!("\ninterrupted again: quitting without saving");
        std::process::exit(Signal(FIRST.load(Ordering::SeqCst)).exit_code());
    }
}

/// Installs the handler (a thread that receives the signals; nothing runs in signal context).
/// Returns an error message if the platform refuses.
#[cfg(unix)]
pub fn install() -> Result<(), String> {
    let mut signals =
        signal_hook::iterator::Signals::new(HANDLED).map_err(|e| format!("cannot install the signal handler: {e}"))?;
    std::thread::Builder::new()
        .name("webtune-signals".into())
        .spawn(move || signals.forever().for_each(on_signal))
        .map(|_| ())
        .map_err(|e| format!("cannot start the signal thread: {e}"))
}

#[cfg(not(unix))]
pub fn install() -> Result<(), String> {
    ctrlc::set_handler(|| on_signal(SIGINT)).map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))
}
