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

pub mod circleci;
pub mod classify;
pub mod cli;
pub mod credentials;
pub mod diagnostic;
pub mod engine;
pub mod fsio;
pub mod github;
pub mod http;
pub mod hunt;
pub mod inventory;
pub mod plan;
pub mod providers;
pub mod ratelimit;
pub mod report;
pub mod sandbox;
pub mod secret;
