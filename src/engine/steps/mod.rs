//! The rotation protocol's steps (DESIGN.md, "The rotation protocol"), one file per step or
//! pair of steps, each a method of the one [`runner::Runner`] of a target:
//!
//! - [`progress`]: step names, journal details, and a target's progress folded from its events;
//! - [`runner`]: the runner a target's steps share, and the one journal helper
//!   ([`runner::Runner::journaled`]: intent, the side effect between crash points, done);
//! - `inspect` (2), `hunt` (1 and 10b), `mint` (3, 4 and the orphan sweep), `verify` (5),
//!   `write` (6, 7), `canary` (8), `retire` (9, 10, 11, 12).
//!
//! The order of the steps lives in one place, `engine::target::run`.

mod canary;
mod hunt;
pub(super) mod inspect;
mod mint;
pub mod progress;
mod retire;
pub(super) mod runner;
mod verify;
mod write;

pub use progress::{Detail, EventPhase, Progress, Step, StepEvent};
