//! Stopping work from outside: [`request`] sets one process-wide flag that
//! every run's control reads ([`crate::executor::Control::aborted`]), so the
//! devices stop at their next action or wait (within the executor's 50 ms
//! tick) and the call returns [`Error::Interrupted`]. Long loops of calls
//! (training steps, bench sweeps) check it between calls with [`check`].
//!
//! The CLI sets it from SIGINT and SIGTERM ([`stop_on_signals`]); a library
//! caller may call [`request`] from any thread, and [`clear`] it before new
//! work.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Ask every run in this process to stop.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Forget a stop asked for before (for new work after an interrupted call).
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}

/// `Err(Error::Interrupted)` once a stop was asked for.
pub fn check() -> Result<()> {
    match requested() {
        true => Err(Error::Interrupted),
        false => Ok(()),
    }
}

/// SIGINT (Ctrl-C) and SIGTERM (what mpirun sends its ranks when it is
/// interrupted) [`request`] a stop; a second signal while the first is
/// being honoured ends the process at once with status 130. For binaries:
/// a library should leave its host's signals alone.
#[cfg(unix)]
pub fn stop_on_signals() -> Result<()> {
    extern "C" fn on_signal(_: libc::c_int) {
        // Only async-signal-safe work here: an atomic swap, and _exit.
        if REQUESTED.swap(true, Ordering::SeqCst) {
            // SAFETY: _exit is async-signal-safe and never returns.
            unsafe { libc::_exit(130) };
        }
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value;
        // the handler only touches an atomic and calls _exit.
        let r = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            act.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut())
        };
        if r != 0 {
            return Err(Error::Other(format!(
                "installing the handler of signal {sig}: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

/// Elsewhere the default handlers stay (the process ends on Ctrl-C).
#[cfg(not(unix))]
pub fn stop_on_signals() -> Result<()> {
    Ok(())
}
