//! Phase timestamps of a hunt on stderr, for profiling its serial parts: with
//! `REKEY_HUNT_PHASES=1`, each [`mark`] prints the milliseconds since the first mark, the
//! process's CPU milliseconds so far, the calling thread's own CPU milliseconds, and the
//! thread that reached it, and the process's resident memory (where peak RSS comes from).
//! Off (one cached check) otherwise.
//!
//! CPU times are the figures to compare on a loaded machine: wall-clock there says more about
//! the other processes than about the hunt.

use std::sync::OnceLock;
use std::time::Instant;

fn start() -> Option<Instant> {
    static START: OnceLock<Option<Instant>> = OnceLock::new();
    *START.get_or_init(|| {
        std::env::var_os("REKEY_HUNT_PHASES")
            .is_some_and(|v| v == "1")
            .then(Instant::now)
    })
}

/// Milliseconds of CPU time of `clock` (the process's or the calling thread's).
#[cfg(unix)]
fn cpu_ms(clock: libc::clockid_t) -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec; the clock ids are the POSIX constants.
    let rc = unsafe { libc::clock_gettime(clock, &mut t) };
    if rc != 0 {
        return f64::NAN;
    }
    t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6
}

#[cfg(unix)]
fn cpu() -> (f64, f64) {
    (
        cpu_ms(libc::CLOCK_PROCESS_CPUTIME_ID),
        cpu_ms(libc::CLOCK_THREAD_CPUTIME_ID),
    )
}

#[cfg(not(unix))]
fn cpu() -> (f64, f64) {
    (f64::NAN, f64::NAN)
}

/// Resident memory of the process in MB (Linux: `/proc/self/statm`), NaN elsewhere.
fn resident_mb() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |pages| pages * 4096.0 / 1e6)
}

/// Prints `what` with the time since the first mark, the CPU times and the resident memory,
/// when phases are asked for.
pub fn mark(what: &str) {
    if let Some(t) = start() {
        let thread = std::thread::current();
        let (process, own) = cpu();
        eprintln!(
            "phase {:>8.1} ms  cpu {:>8.1} ms  thread cpu {:>7.1} ms  rss {:>6.1} MB  {:<10} {what}",
            t.elapsed().as_secs_f64() * 1e3,
            process,
            own,
            resident_mb(),
            thread.name().unwrap_or("-")
        );
    }
}
