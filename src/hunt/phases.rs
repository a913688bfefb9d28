//! Phase timestamps of a hunt on stderr, for profiling its serial parts: with
//! `REKEY_HUNT_PHASES=1`, each [`mark`] prints the milliseconds since the first mark and the
//! thread that reached it. Off (one cached check) otherwise.

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

/// Prints `what` with the time since the first mark, when phases are asked for.
pub fn mark(what: &str) {
    if let Some(t) = start() {
        let thread = std::thread::current();
        eprintln!(
            "phase {:>8.1} ms  {:<10} {what}",
            t.elapsed().as_secs_f64() * 1e3,
            thread.name().unwrap_or("-")
        );
    }
}
