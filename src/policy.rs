//! What the operator decides and a plan cannot: where rekey may send its own credentials, and
//! what plan commands may see and when they run.
//!
//! A plan is reviewed data; it may arrive in a pull request nobody has reviewed yet, with a
//! dry run as its CI check (DESIGN.md, "Threat model"). So a plan endpoint (`endpoints:`) on
//! a host that is not its provider's official one is refused unless the operator names the
//! host ([`EndpointPolicy`]: `--allow-endpoint HOST` or `REKEY_ALLOW_ENDPOINTS`); plain http
//! goes only to loopback or to a host the operator named; the same holds for `CIRCLECI_HOST`
//! and `GITHUB_API_URL` over plain http. Every check runs before the first request. Plan
//! commands (`exec`) see only an allow-listed environment, widened by name by the operator
//! (`--exec-env NAME`), and a dry run runs none of them unless the operator passes
//! `--dry-run-exec` ([`OperatorPolicy`]).
//!
//! The options are one `clap::Args` struct for every subcommand that reads a plan, so that
//! the command line only flattens them.

use crate::diagnostic::Diagnostic;
use crate::plan::{Endpoints, Plan};

/// Where rekey may send its own credentials besides the official hosts.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EndpointPolicy {
    /// Allow this host for a plan endpoint outside the provider's official hosts, or for
    /// CIRCLECI_HOST / GITHUB_API_URL over plain http (repeatable; a plan alone never can).
    #[arg(
        long = "allow-endpoint",
        value_name = "HOST",
        env = "REKEY_ALLOW_ENDPOINTS",
        value_delimiter = ','
    )]
    pub allow_endpoints: Vec<String>,
}

/// Everything the operator decides about a run of a plan.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OperatorPolicy {
    #[command(flatten)]
    pub endpoints: EndpointPolicy,
    /// Pass this variable of rekey's environment to plan commands (repeatable). Plan commands
    /// get only PATH, HOME, LANG, TMPDIR and these; rekey's own credentials never.
    #[arg(long = "exec-env", value_name = "NAME")]
    pub exec_env: Vec<String>,
    /// Run the plan's exec.inspect commands during a dry run (a dry run runs no plan command
    /// otherwise).
    #[arg(long)]
    pub dry_run_exec: bool,
}

impl OperatorPolicy {
    /// The exec provider these rules make: the operator's variables passed, and no command
    /// run in a dry run unless `--dry-run-exec`.
    pub fn exec_provider(&self, dry_run: bool) -> crate::providers::exec::ExecProvider {
        let exec = crate::providers::exec::ExecProvider::new().passing_env(self.exec_env.clone());
        if dry_run && !self.dry_run_exec {
            exec.not_running()
        } else {
            exec
        }
    }

    /// Refuses `--exec-env` names that would hand a plan command rekey's own credentials.
    pub fn check(&self) -> Result<(), String> {
        for name in &self.exec_env {
            if crate::providers::exec::is_withheld(name) {
                return Err(format!(
                    "--exec-env {name}: rekey's own credentials (AWS_*, AZURE_*, GOOGLE_*, REKEY_*, \
                     CIRCLECI_TOKEN, GITHUB_TOKEN) never reach a plan command\n\
                     help: give the command a credential of its own under another name"
                ));
            }
            if name.is_empty() || name.contains('=') {
                return Err(format!("--exec-env {name:?}: not a variable name"));
            }
        }
        Ok(())
    }
}

/// Which API a plan endpoint addresses, for its official hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    GcpIam,
    GcpToken,
    GcpLogging,
    AzureAuthority,
    AzureGraph,
    AzureManagement,
}

impl Api {
    /// The `endpoints:` field name.
    pub fn from_field(field: &str) -> Option<Api> {
        Some(match field {
            "gcp_iam" => Api::GcpIam,
            "gcp_token" => Api::GcpToken,
            "gcp_logging" => Api::GcpLogging,
            "azure_authority" => Api::AzureAuthority,
            "azure_graph" => Api::AzureGraph,
            "azure_management" => Api::AzureManagement,
            _ => return None,
        })
    }

    /// The provider's own hosts, sovereign clouds included.
    pub fn official_hosts(self) -> &'static [&'static str] {
        match self {
            Api::GcpIam => &["iam.googleapis.com"],
            Api::GcpToken => &["oauth2.googleapis.com", "www.googleapis.com"],
            Api::GcpLogging => &["logging.googleapis.com"],
            Api::AzureAuthority => &[
                "login.microsoftonline.com",
                "login.microsoftonline.us",
                "login.chinacloudapi.cn",
                "login.partner.microsoftonline.cn",
            ],
            Api::AzureGraph => &[
                "graph.microsoft.com",
                "graph.microsoft.us",
                "dod-graph.microsoft.us",
                "microsoftgraph.chinacloudapi.cn",
            ],
            Api::AzureManagement => &[
                "management.azure.com",
                "management.usgovcloudapi.net",
                "management.chinacloudapi.cn",
            ],
        }
    }
}

/// True for a host that never leaves this machine.
fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
    }
}

impl EndpointPolicy {
    /// True when the operator named `host` (a bare host; an entry given as a URL counts by
    /// its host).
    fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.allow_endpoints.iter().any(|entry| {
            let entry = entry.trim();
            let named = url::Url::parse(entry)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| entry.to_owned());
            named.trim_end_matches('.').eq_ignore_ascii_case(host)
        })
    }

    /// Whether rekey may send credentials to `url`: an operator-named host, loopback, or
    /// https to one of `official` (`None`: any https host, for addresses that come from the
    /// operator's own environment). `Err` says why not and which flag would change it.
    pub fn check_url(&self, url: &str, official: Option<&[&str]>) -> Result<(), String> {
        let parsed = url::Url::parse(url.trim()).map_err(|e| format!("not a URL: {e}"))?;
        let Some(host) = parsed.host() else {
            return Err("the URL names no host".into());
        };
        let host_text = parsed.host_str().unwrap_or_default().to_owned();
        let scheme = parsed.scheme();
        if scheme != "https" && scheme != "http" {
            return Err(format!("scheme `{scheme}` is not http or https"));
        }
        if self.allows(&host_text) || is_loopback(&host) {
            return Ok(());
        }
        if scheme == "http" {
            return Err(format!(
                "plain http to {host_text}, which is not loopback: rekey's credentials would \
                 cross the network in clear\nhelp: use https, or name the host with \
                 --allow-endpoint {host_text} if it is yours"
            ));
        }
        match official {
            Some(hosts)
                if !hosts
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(host_text.trim_end_matches('.'))) =>
            {
                Err(format!(
                    "{host_text} is not one of the provider's hosts ({}): a plan alone cannot \
                     send rekey's credentials elsewhere\nhelp: if this host is yours, pass \
                     --allow-endpoint {host_text} (or REKEY_ALLOW_ENDPOINTS={host_text})",
                    hosts.join(", ")
                ))
            }
            _ => Ok(()),
        }
    }

    /// Every plan endpoint the policy refuses, located in the plan's text.
    pub fn plan_diagnostics(&self, file: &str, text: &str, plan: &Plan) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for (field, value) in plan.endpoints.all() {
            let (Some(value), Some(api)) = (value, Api::from_field(field)) else {
                continue;
            };
            if let Err(why) = self.check_url(value, Some(api.official_hosts())) {
                let (message, help) = split_help(&why);
                let mut d = Diagnostic::error(
                    file,
                    text,
                    value.pos.line,
                    value.pos.column,
                    format!("endpoints.{field}: {message}"),
                );
                if let Some(help) = help {
                    d = d.with_help(help);
                }
                out.push(d);
            }
        }
        out
    }

    /// The plan's endpoints, unlocated (a stored plan on resume, a plan read by `hunt`).
    pub fn check_endpoints(&self, endpoints: &Endpoints) -> Result<(), String> {
        for (field, value) in endpoints.all() {
            let (Some(value), Some(api)) = (value, Api::from_field(field)) else {
                continue;
            };
            self.check_url(value, Some(api.official_hosts()))
                .map_err(|why| format!("endpoints.{field}: {why}"))?;
        }
        Ok(())
    }

    /// `CIRCLECI_HOST` and `GITHUB_API_URL`, when set: the operator's own, so any https host
    /// goes (a server install, GitHub Enterprise), plain http only to loopback or a named host.
    pub fn check_environment(&self) -> Result<(), String> {
        for name in ["CIRCLECI_HOST", "GITHUB_API_URL"] {
            let Ok(value) = std::env::var(name) else {
                continue;
            };
            if value.trim().is_empty() {
                continue;
            }
            self.check_url(&value, None)
                .map_err(|why| format!("{name}: {why}"))?;
        }
        Ok(())
    }
}

/// A reason and its `help:` line, as [`EndpointPolicy::check_url`] writes them.
fn split_help(text: &str) -> (&str, Option<&str>) {
    match text.split_once("\nhelp: ") {
        Some((message, help)) => (message, Some(help)),
        None => (text, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> EndpointPolicy {
        EndpointPolicy {
            allow_endpoints: allow.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn official_loopback_and_named_hosts_only() {
        let p = policy(&[]);
        let azure = Some(Api::AzureAuthority.official_hosts());
        assert!(
            p.check_url("https://login.microsoftonline.com", azure)
                .is_ok()
        );
        assert!(p.check_url("http://127.0.0.1:8080/x", azure).is_ok());
        assert!(p.check_url("http://[::1]:8080/x", azure).is_ok());
        let e = p.check_url("https://evil.example/t", azure).unwrap_err();
        assert!(e.contains("--allow-endpoint evil.example"), "{e}");
        let e = p.check_url("http://evil.example/t", azure).unwrap_err();
        assert!(e.contains("plain http"), "{e}");
        // Look-alikes are not the official host.
        assert!(
            p.check_url("https://login.microsoftonline.com.evil.example", azure)
                .is_err()
        );
        assert!(
            p.check_url("https://login.microsoftonline.com@evil.example", azure)
                .is_err()
        );
        let named = policy(&["evil.example", "https://other.example/"]);
        assert!(named.check_url("http://EVIL.example./t", azure).is_ok());
        assert!(named.check_url("https://other.example/t", azure).is_ok());
        // The operator's environment: any https host, plain http only to loopback.
        assert!(p.check_url("https://ghe.corp.example/api/v3", None).is_ok());
        assert!(p.check_url("http://ghe.corp.example/api/v3", None).is_err());
        assert!(p.check_url("ftp://127.0.0.2/", None).is_err());
        assert!(p.check_url("ftp://host.example/", None).is_err());
    }

    #[test]
    fn exec_env_never_widens_to_rekeys_credentials() {
        let ok = OperatorPolicy {
            exec_env: vec!["NPM_TOKEN_ADMIN".into()],
            ..Default::default()
        };
        assert!(ok.check().is_ok());
        for name in [
            "AWS_SECRET_ACCESS_KEY",
            "GITHUB_TOKEN",
            "REKEY_STASH_KEY",
            "azure_client_secret",
        ] {
            let bad = OperatorPolicy {
                exec_env: vec![name.into()],
                ..Default::default()
            };
            assert!(bad.check().is_err(), "{name}");
        }
    }
}
