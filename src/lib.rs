//! # rekey
//!
//! rekey rotates every secret a CI platform holds and hunts for abuse of the old ones. It reads
//! what CircleCI stores (project and context variables, checkout and SSH keys), works out which
//! credential each one is and who owns it, and writes a declarative YAML rotation plan that a
//! person reviews and `apply` executes.
//!
//! The flow, one module per stage:
//!
//! - [`inventory`]: where secrets live — live from the CircleCI API or imported from
//!   CircleCI-Env-Inspector's `circleci-data.json`. Never values.
//! - [`classify`]: rules (data, not code) from variable names and shapes to candidate targets,
//!   grouping one credential's places into one target.
//! - [`plan`]: the plan's types, the YAML writer, loading with located errors, validation.
//! - [`circleci`]: the CircleCI API client; [`http`]: the one retry policy every client uses.
//! - [`sandbox`]: in-process simulators (CircleCI today) for demos, rehearsals and tests.
//! - [`hunt`]: the catalogue of hunting checks a plan may name.
//! - [`report`]: human tables.
//! - [`cli`]: the command line, one module per subcommand (the binary only dispatches).

/// The allocator of the `rekey` binary, and of the benches that stand for it: mimalloc, whose
/// frees are a push on a per-page list. With glibc's malloc, a hunt over Athena's result rows
/// spent about a third of its CPU freeing the answers' cell strings (free coalesces and
/// consolidates; the fetching thread frees 20,000 per page), which made two workers slower than
/// reading the same records from files (README, "Allocator"). The `mimalloc` feature (default)
/// chooses it; without it, the system allocator (for heap profilers that hook malloc).
#[cfg(feature = "mimalloc")]
pub use mimalloc::MiMalloc as Allocator;
#[cfg(not(feature = "mimalloc"))]
pub use std::alloc::System as Allocator;

pub mod circleci;
pub mod classify;
pub mod cli;
pub mod credentials;
pub mod diagnostic;
pub mod engine;
pub mod escape;
pub mod fsio;
pub mod github;
pub mod http;
pub mod hunt;
pub mod inventory;
pub mod plan;
pub mod policy;
pub mod providers;
pub mod ratelimit;
pub mod redact;
pub mod report;
pub mod sandbox;
pub mod secret;
