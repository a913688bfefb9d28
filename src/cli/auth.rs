//! `rekey auth`: store, remove and show rekey's own API tokens in the OS keyring (never the
//! token itself).

use super::output::{Failure, Output, print_json};
use crate::credentials::{self, Service};
use crate::report::Table;
use serde_json::json;

#[derive(clap::Subcommand)]
pub enum AuthCommand {
    /// Store a token in the OS keyring, read from a hidden prompt (or stdin when not a terminal).
    Set { service: Service },
    /// Remove a stored token.
    Delete { service: Service },
    /// Show where each token would come from (never the token).
    Status,
}

pub fn run(cmd: AuthCommand, output: Output) -> Result<u8, Failure> {
    match cmd {
        AuthCommand::Set { service } => {
            let value = read_hidden(&format!("{} token (input hidden): ", service.env_var()))?;
            if value.is_empty() {
                return Err(Failure::input("empty token: nothing stored"));
            }
            credentials::store(service, &value).map_err(|e| Failure::runtime(e.to_string()))?;
            eprintln!(
                "Stored in the OS keyring; {} in the environment still takes precedence.",
                service.env_var()
            );
            Ok(0)
        }
        AuthCommand::Delete { service } => {
            credentials::forget(service).map_err(|e| Failure::runtime(e.to_string()))?;
            eprintln!("Removed from the OS keyring.");
            Ok(0)
        }
        AuthCommand::Status => {
            let rows: Vec<(String, &str)> = [Service::Circleci, Service::Github]
                .into_iter()
                .map(|s| {
                    let source = if std::env::var(s.env_var()).is_ok_and(|v| !v.trim().is_empty()) {
                        "environment"
                    } else if credentials::stored(s) {
                        "keyring"
                    } else {
                        "missing"
                    };
                    (format!("{s:?}").to_lowercase(), source)
                })
                .collect();
            match output {
                Output::Json => print_json(&json!(
                    rows.iter()
                        .map(|(s, src)| json!({"service": s, "source": src}))
                        .collect::<Vec<_>>()
                )),
                Output::Table => {
                    let mut table = Table::new(["SERVICE", "TOKEN FROM"]);
                    for (s, src) in rows {
                        table.row([s, src.to_string()]);
                    }
                    print!("{}", table.render());
                }
            }
            Ok(0)
        }
    }
}

/// A hidden prompt on a terminal; a line of stdin otherwise (for automation).
fn read_hidden(prompt: &str) -> Result<crate::secret::Secret, Failure> {
    use std::io::IsTerminal;
    let value = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt)
            .map_err(|e| Failure::runtime(format!("cannot read the token: {e}")))?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| Failure::runtime(format!("cannot read the token: {e}")))?;
        line
    };
    Ok(crate::secret::Secret::new(value.trim()))
}
