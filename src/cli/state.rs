//! `rekey state list | show RUN | unlock RUN | migrate --from A --to B`: the arguments and the
//! rendering; the work is in `crate::engine::state::admin`. Also the lock flags `apply` shares.

use super::output::{Failure, Output, print_json};
use crate::engine::state::admin::{self, Unlocked};
use crate::engine::state::lease::LeaseOptions;
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::PathBuf;

/// The longest lease and wait a flag accepts (the arithmetic holds far more; a person does not).
const MAX_LOCK_DURATION: u64 = 7 * 24 * 3600;

#[derive(Args)]
pub struct StateArgs {
    #[command(subcommand)]
    command: StateCommand,
}

#[derive(Subcommand)]
enum StateCommand {
    /// The runs of a state, newest first.
    List(StateAt),
    /// One run: its plan, targets, journal records, and what the stash holds (ids, never values).
    Show {
        run: String,
        #[command(flatten)]
        at: StateAt,
    },
    /// Remove the lock of an S3 state held for RUN, after a prompt: for a runner that is gone
    /// while its lease still runs (a lease also expires by itself, and the next apply takes it over).
    Unlock {
        run: String,
        #[command(flatten)]
        at: StateAt,
        /// Do not ask (for scripts).
        #[arg(long)]
        yes: bool,
    },
    /// Copy every run of one state to another (a directory to S3, or back); nothing at the
    /// destination is overwritten. Both locks are held while it copies.
    Migrate {
        #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
        from: PathBuf,
        #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
        to: PathBuf,
    },
}

/// `--state-dir` (or `--state`, or `REKEY_STATE`): the state a command reads or changes.
#[derive(Args)]
pub struct StateAt {
    /// The state: a directory, or s3://BUCKET/PREFIX (see README, "State backends").
    #[arg(
        long = "state-dir",
        visible_alias = "state",
        env = "REKEY_STATE",
        default_value = ".rekey",
        value_name = "DIR|s3://BUCKET/PREFIX"
    )]
    pub state_dir: PathBuf,
}

/// `--lock-lease` and `--lock-timeout`, as `apply` takes them.
pub fn lease_options(lease: &str, timeout: &str) -> Result<LeaseOptions, Failure> {
    let parse = |flag: &str, text: &str, min: u64| {
        let secs = crate::plan::PlanDuration::parse(text)
            .map_err(|e| Failure::input(format!("{flag} {text:?}: {e}")))?
            .seconds();
        if secs < min || secs > MAX_LOCK_DURATION {
            return Err(Failure::input(format!(
                "{flag} {text:?}: must be between {min}s and 7d"
            )));
        }
        Ok(std::time::Duration::from_secs(secs))
    };
    Ok(LeaseOptions {
        lease: parse("--lock-lease", lease, 1)?,
        timeout: parse("--lock-timeout", timeout, 0)?,
    })
}

pub fn run(args: StateArgs, output: Output) -> Result<u8, Failure> {
    let fail = |e: crate::engine::EngineError| Failure {
        code: match &e {
            crate::engine::EngineError::NoSuchRun(_) => 2,
            crate::engine::EngineError::Lock(l) if l.is_locked() => 5,
            _ => 1,
        },
        message: e.to_string(),
    };
    match args.command {
        StateCommand::List(at) => {
            let runs = admin::list(&at.state_dir).map_err(fail)?;
            let holder = admin::lock_holder(&at.state_dir).map_err(fail)?;
            match output {
                Output::Json => print_json(&json!({"runs": runs, "lock": holder})),
                Output::Table => {
                    if let Some(h) = &holder {
                        println!("Locked by {h}\n");
                    }
                    if runs.is_empty() {
                        println!("No runs in {}.", at.state_dir.display());
                    }
                    for r in &runs {
                        let targets: Vec<String> =
                            r.targets.iter().map(|(s, n)| format!("{n} {s}")).collect();
                        println!(
                            "{}  {:<10}  {}  {}  {}",
                            r.id,
                            r.status,
                            r.created_at
                                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                            safe(&r.plan_name),
                            targets.join(", ")
                        );
                    }
                }
            }
            Ok(0)
        }
        StateCommand::Show { run, at } => {
            let detail = admin::show(&at.state_dir, &run).map_err(fail)?;
            match output {
                Output::Json => print_json(&json!(detail)),
                Output::Table => {
                    let r = &detail.run;
                    println!(
                        "Run {} ({}), plan {} from {}, sha256 {}",
                        r.id,
                        r.status,
                        safe(&r.plan_name),
                        safe(&r.plan_file),
                        r.plan_sha256
                    );
                    for t in &detail.targets {
                        println!(
                            "  {}: {}{}",
                            safe(&t.target),
                            t.state,
                            t.message
                                .as_deref()
                                .map(|m| format!(" — {}", safe(m)))
                                .unwrap_or_default()
                        );
                    }
                    for s in &detail.stashed {
                        println!(
                            "  stash: {} holds credential {}",
                            safe(&s.target),
                            safe(&s.credential_id)
                        );
                    }
                    println!("Journal:");
                    for e in &detail.events {
                        println!(
                            "  {}  {}  {} {}  {}",
                            e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                            safe(&e.target),
                            e.step,
                            e.phase,
                            safe(&e.detail.to_string())
                        );
                    }
                }
            }
            Ok(0)
        }
        StateCommand::Unlock { run, at, yes } => {
            let outcome = admin::unlock(&at.state_dir, &run, |holder| {
                if yes {
                    return true;
                }
                ask(&format!(
                    "Remove the lock of {} held by {}? Only do this if that runner is gone: \
                     two runs at once may rotate twice. [y/N] ",
                    at.state_dir.display(),
                    holder.map_or_else(|| "an unreadable holder".to_string(), |h| h.to_string())
                ))
            })
            .map_err(fail)?;
            match output {
                Output::Json => print_json(&json!({"unlock": outcome})),
                Output::Table => match &outcome {
                    Unlocked::Removed(_) => println!("Lock removed."),
                    Unlocked::NotLocked => println!("{} is not locked.", at.state_dir.display()),
                    Unlocked::Declined => println!("Left as it was."),
                },
            }
            Ok(match outcome {
                Unlocked::Declined => 1,
                _ => 0,
            })
        }
        StateCommand::Migrate { from, to } => {
            let done = admin::migrate(&from, &to, LeaseOptions::default()).map_err(fail)?;
            match output {
                Output::Json => print_json(&json!(done)),
                Output::Table => println!(
                    "Copied {} run(s), {} journal record(s) and {} stash entr(ies) from {} to {}.",
                    done.runs,
                    done.events,
                    done.stashed,
                    from.display(),
                    to.display()
                ),
            }
            Ok(0)
        }
    }
}

/// Asks on the terminal; anything but y/yes (or no terminal) is no.
fn ask(question: &str) -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        eprintln!("{question}\nno terminal to answer on: pass --yes to remove it from a script");
        return false;
    }
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Text from the state (names, messages) with control characters shown as `?`, so that nothing
/// read from a shared bucket can drive the terminal.
fn safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
