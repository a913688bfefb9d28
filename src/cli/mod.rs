//! The `rekey` command line: the clap definition of every subcommand ([`Cli`], [`command`]) and
//! one module per subcommand owning its arguments, its run function and its rendering. Shared
//! output helpers (the output format, [`Failure`] and its exit codes) are in [`output`]; the
//! binary (`src/main.rs`) only parses, starts logging, dispatches and exits.
//!
//! Exit codes: 0 success, 1 failure, 2 invalid input or usage, 3 hunt findings, 4 incomplete,
//! 5 locked.

pub mod apply;
pub mod auth;
pub mod completions;
pub mod confirm;
pub mod demo;
pub mod hunt;
pub mod inventory;
pub mod man;
pub mod output;
pub mod plan;
pub mod sandbox;
pub mod schema;
pub mod state;
pub mod status;
pub mod validate;

pub use output::{Failure, Output};

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rekey",
    version = VERSION,
    about = "Rotate every secret your CI platform holds, and hunt for abuse of the old ones.",
    long_about = "rekey reads where CircleCI holds secrets (project and context variables, checkout and SSH keys), \
works out which credential each one is and who owns it, and writes a declarative YAML rotation plan that a person \
reviews before anything changes.\n\n\
The flow:\n  \
rekey inventory --org gh/acme --out inventory.json      # or --from-env-inspector circleci-data.json\n  \
rekey plan --inventory inventory.json --out plan.yaml\n  \
$EDITOR plan.yaml                                        # fill every REVIEW-REQUIRED, confirm groupings\n  \
rekey validate plan.yaml\n\n\
Secrets never appear in rekey's files, logs or arguments: CircleCI returns only masked values (xxxx + last four), \
and rekey keeps no more than that. Tokens come from CIRCLECI_TOKEN / GITHUB_TOKEN or the OS keyring (`rekey auth set`).",
    after_help = "Exit codes: 0 success, 1 failure, 2 invalid input or usage, 3 hunt findings, 4 run incomplete but resumable, 5 locked (another run holds the state; nothing was changed)."
)]
pub struct Cli {
    /// Output format: human tables, or one JSON document on stdout for machines.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

// One value per process, parsed once: boxing the largest arguments would save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Record where secrets live in CircleCI: live from the API, or from Env-Inspector output.
    #[command(
        long_about = "Record where secrets live in CircleCI, as a normalized inventory (JSON) that `rekey plan` reads.\n\n\
Live: lists the organization's projects (those the token's user follows, or all of a circleci/ org with --org-id), \
their environment variables, checkout keys and additional SSH keys, and the organization's contexts with their \
variables. Requests run concurrently, honour 429 Retry-After and retry 5xx; a project or context that cannot be read \
is recorded as an error entry and the rest is still inventoried.\n\n\
Import: reads circleci-data.json as CircleCI-Env-Inspector writes it (current or older format).\n\n\
Examples:\n  rekey inventory --org gh/acme --out inventory.json\n  rekey inventory --org gh/acme --project gh/acme/api --project gh/acme/web --out inventory.json\n  rekey inventory --from-env-inspector circleci-data.json --out inventory.json"
    )]
    Inventory(inventory::InventoryArgs),
    /// Classify an inventory and write a rotation plan for review.
    #[command(
        long_about = "Classify every variable of an inventory (AWS key pairs, GCP and Azure credentials, GitHub tokens and \
deploy keys, checkout keys, well-known third-party tokens) and write a YAML rotation plan with a comment per target \
saying what it is and why. The same credential stored in several places becomes one target with several bindings. \
Nothing is dropped: unrecognised variables are listed as `unclassified`, configuration as `ignored`, unreadable \
places as `errors`.\n\n\
Examples:\n  rekey plan --inventory inventory.json --out plan.yaml\n  rekey plan --inventory inventory.json --rules our-rules.yaml --out plan.yaml"
    )]
    Plan(plan::PlanArgs),
    /// Check a plan: syntax, types, and everything a reviewer could get wrong.
    #[command(
        long_about = "Check a plan and report every problem with file:line:column and the offending line: unknown fields, \
wrong types, unparsable durations and timestamps, duplicate target ids, a CircleCI variable bound by two targets, \
provider-specific fields that are missing, unknown hunts, and decisions still marked REVIEW-REQUIRED. \
Exit 2 when the plan is invalid; warnings (such as unconfirmed groupings) do not fail."
    )]
    Validate(validate::ValidateArgs),
    /// Rotate: execute a reviewed plan (or preview it with --dry-run), journaled and resumable.
    #[command(
        long_about = "Execute a reviewed plan, target by target, through the rotation protocol: inspect, (make room), \
mint, verify the new credential, write it to every binding, read it back, (canary), deactivate the old credential, \
wait the grace period, revoke the old credential. Every step is journaled in the state directory before and after its \
side effect, and a minted value waits in an encrypted stash, so a crash loses nothing: `rekey apply --resume RUN_ID` \
(or applying the same plan again) continues where the run stopped. A grace period ends the invocation with the target \
waiting; the next apply after it revokes the old credential.\n\n\
--dry-run reads live state and prints what each target would do, changing nothing anywhere.\n\n\
Examples:\n  rekey apply plan.yaml --dry-run\n  rekey apply plan.yaml --report rotation.md\n  rekey apply --resume r20261128-095300-7f3a\n  rekey status"
    )]
    Apply(apply::ApplyArgs),
    /// Hunt in audit logs (CloudTrail, CircleCI, GitHub, GCP, Azure) for abuse of credentials.
    #[command(
        long_about = "Hunt in audit-log exports for abuse of exposed credentials, with Sigma rules: the built-in pack \
(reconnaissance, access denials, scripted user agents, CircleCI persistence, GitHub git access, GCP errors and key \
creation, Azure sign-in failures) plus any third-party Sigma rules (--rules DIR, loaded unchanged). Beside the rules: \
an address baseline per credential (an address or /24 first seen after --since) and CIDR allow-lists.\n\n\
Records that cannot be read are reported with their file and line (or record number) and skipped.\n\n\
Examples:\n  rekey hunt --cloudtrail logs/ --access-key-id AKIA... --since 2022-12-21T00:00:00Z\n  \
rekey hunt --cloudtrail logs/ --rules sigma/rules/cloud/aws --output json\n  \
rekey hunt --circleci-audit audit.csv --github-audit audit.json --fail-on medium\n  rekey hunt --list",
        after_help = "Exit codes: 0 no finding at --fail-on, 1 failure, 2 invalid input, 3 findings at or above --fail-on."
    )]
    Hunt(hunt::HuntArgs),
    /// Serve rekey's simulators on 127.0.0.1 (a plan's world, or one described in a file).
    Sandbox(sandbox::SandboxArgs),
    /// Show the whole flow on a made-up organization, in process: inventory, plan, dry run,
    /// apply (surviving injected faults), report. Nothing leaves this machine.
    Demo,
    /// List runs and, per target, the step reached and what is pending.
    Status(status::StatusArgs),
    /// Record that a manual step is done (revoking a GitHub token by hand); the next
    /// `apply --resume RUN` finishes the target.
    Confirm(confirm::ConfirmArgs),
    /// Store or remove rekey's own API tokens in the OS keyring.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Inspect and manage the state (a directory or s3://BUCKET/PREFIX): list, show, unlock, migrate.
    State(state::StateArgs),
    /// Print the plan's JSON Schema (the file in plans/ is generated from this).
    #[command(hide = true)]
    Schema,
    /// Print a shell completion script: bash, zsh, fish or powershell.
    #[command(
        long_about = "Print a completion script for the shell, generated from rekey's own definition of its commands.\n\n\
Examples:\n  rekey completions bash > ~/.local/share/bash-completion/completions/rekey\n  \
rekey completions zsh > \"${fpath[1]}/_rekey\"\n  rekey completions fish > ~/.config/fish/completions/rekey.fish\n  \
rekey completions powershell >> $PROFILE"
    )]
    Completions(completions::CompletionsArgs),
    /// Print the manual page (roff), or write one page per subcommand with --dir.
    #[command(
        long_about = "Print rekey's manual page (roff), generated from rekey's own definition of its commands; with \
--dir, write rekey.1 and one page per subcommand (rekey-apply.1, ...) into a directory.\n\n\
Examples:\n  rekey man | man -l -\n  rekey man --dir /usr/local/share/man/man1"
    )]
    Man(man::ManArgs),
}

/// What `--version` says: the version, the git commit and the build date (see `build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("REKEY_GIT_COMMIT"),
    ", built ",
    env!("REKEY_BUILD_DATE"),
    ")"
);

/// The clap definition of the command line, for completions, the man page and tests.
pub fn command() -> clap::Command {
    Cli::command()
}
