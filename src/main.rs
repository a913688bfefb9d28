//! The `rekey` binary: parse the command line, start logging, run the subcommand, exit with its
//! code (0 success, 1 failure, 2 invalid input or usage, 3 hunt findings, 4 incomplete, 5 locked). Each
//! subcommand lives in `rekey::cli`.

use clap::Parser;
use rekey::cli::{self, Cli, Command};
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: rekey::Allocator = rekey::Allocator;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    if let Err(e) = rekey::secret::forbid_core_dumps() {
        tracing::warn!("cannot turn core dumps off: {e}");
    }
    let output = cli.output;
    let result = match cli.command {
        Command::Inventory(args) => cli::inventory::run(args, output),
        Command::Plan(args) => cli::plan::run(args, output),
        Command::Validate(args) => cli::validate::run(args, output),
        Command::Apply(args) => cli::apply::run(args, output),
        Command::Status(args) => cli::status::run(args, output),
        Command::Confirm(args) => cli::confirm::run(args, output),
        Command::Demo => cli::demo::run(),
        Command::Sandbox(args) => cli::sandbox::run(args, output),
        Command::Hunt(args) => cli::hunt::run(args, output),
        Command::Auth(cmd) => cli::auth::run(cmd, output),
        Command::State(args) => cli::state::run(args, output),
        Command::Schema => cli::schema::run(),
        Command::Completions(args) => cli::completions::run(args),
        Command::Man(args) => cli::man::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("{}", rekey::escape::terminal(&failure.message));
            ExitCode::from(failure.code)
        }
    }
}

/// Logging on stderr: `-v` info, `-vv` debug, `-vvv` trace; RUST_LOG overrides.
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
