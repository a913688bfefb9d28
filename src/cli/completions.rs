//! `rekey completions SHELL`: a completion script for the shell, generated from the clap
//! definition ([`super::command`]), so it always knows every subcommand and flag.

use super::output::Failure;
use clap_complete::Shell;

#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, powershell (or elvish).
    shell: Shell,
}

pub fn run(args: CompletionsArgs) -> Result<u8, Failure> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut super::command(), "rekey", &mut script);
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, &script)
        .and_then(|()| std::io::Write::flush(&mut stdout))
        .map_err(|e| Failure::runtime(format!("cannot write the completion script: {e}")))?;
    Ok(0)
}
