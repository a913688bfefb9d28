//! The demo's GCP, Azure and exec part: the demo organization's `GCLOUD_SERVICE_KEY` and
//! `ARM_CLIENT_SECRET` (project gh/acme/infra) become real credentials of the GCP and Azure
//! simulators, and `NPM_TOKEN` (project gh/acme/api) a token of a small made-up owner that the
//! `exec` provider drives through a POSIX shell script, so that `rekey demo` rotates one target
//! of each of these providers for real.

use super::Sandbox;
use super::azure::AzureSandbox;
use super::circleci::StoredVar;
use super::gcp::GcpSandbox;
use crate::plan::{
    Binding, Endpoints, ExecCommands, Located, Principal, PrincipalField, ProviderKind, Target,
};
use crate::providers::Provider;
use crate::providers::azure::AzureAppSecretProvider;
use crate::providers::exec::ExecProvider;
use crate::providers::gcp::{GcpAuth, GcpSaKeyProvider, ServiceAccountKey};
use chrono::{Duration, Utc};
use std::path::PathBuf;
use std::sync::Arc;

pub const GCP_PROJECT: &str = "acme-prod";
pub const TENANT: &str = "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b";

/// The made-up owner of `NPM_TOKEN`: credentials are files under `creds/`, a disabled one has
/// a marker under `inactive/`. It speaks the exec protocol (src/providers/exec.rs) with sed.
pub(crate) const OWNER_SCRIPT: &str = r#"#!/bin/sh
# rekey demo: a made-up token owner for the exec provider. Request on stdin, answer on stdout.
set -u
base=$(dirname "$0")
dir="$base/creds"
off="$base/inactive"
op=$1
input=$(cat)
field() { printf '%s' "$input" | sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"; }
case "$op" in
  inspect)
    printf '{"principal":"npm (demo owner)","credentials":['
    sep=""
    for f in "$dir"/*; do
      [ -e "$f" ] || continue
      id=$(basename "$f"); st=active; [ -e "$off/$id" ] && st=inactive
      printf '%s{"id":"%s","status":"%s"}' "$sep" "$id" "$st"; sep=","
    done
    printf ']}' ;;
  mint)
    id="tok-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
    v="npm_$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')"
    printf '%s' "$v" > "$dir/$id"
    printf '{"id":"%s","fields":{"value":"%s"}}' "$id" "$v" ;;
  verify)
    id=$(field id); v=$(field value)
    { [ -f "$dir/$id" ] && [ ! -e "$off/$id" ] && [ "$(cat "$dir/$id")" = "$v" ]; } || exit 4 ;;
  deactivate)
    id=$(field id); [ -f "$dir/$id" ] || exit 3; : > "$off/$id" ;;
  revoke)
    id=$(field id); [ -f "$dir/$id" ] || exit 3; rm -f "$dir/$id" "$off/$id" ;;
  *) echo "unknown operation $op" >&2; exit 2 ;;
esac
"#;

/// The simulators and the exec owner, started, their credentials bound in the demo org.
pub struct CloudDemo {
    pub gcp: GcpSandbox,
    pub azure: AzureSandbox,
    pub service_account: String,
    pub app_object: String,
    owner_dir: PathBuf,
}

impl CloudDemo {
    /// Starts the simulators and puts their credentials in `circleci`'s demo organization.
    pub async fn start(circleci: &Sandbox) -> std::io::Result<CloudDemo> {
        let gcp = GcpSandbox::start(GCP_PROJECT).await?;
        let service_account = gcp.with_state(|s| s.add_account("ci-deployer"));
        let (_, key_json) = gcp
            .with_state(|s| s.create_key(&service_account))
            .map_err(std::io::Error::other)?;
        // Old enough that max_age does not skip it.
        gcp.with_state(|s| s.backdate(Duration::days(400)));

        let azure = AzureSandbox::start(TENANT).await?;
        let (app_object, app_id) = azure.with_state(|s| s.add_app("acme-terraform"));
        let (_, client_secret) = azure
            .with_state(|s| s.add_password(&app_object, Some("circleci"), None))
            .ok_or_else(|| std::io::Error::other("azure app"))?;
        azure.with_state(|s| s.backdate(Duration::days(400)));

        let owner_dir =
            std::env::temp_dir().join(format!("rekey-demo-owner-{}", std::process::id()));
        std::fs::create_dir_all(owner_dir.join("creds"))?;
        std::fs::create_dir_all(owner_dir.join("inactive"))?;
        let script = owner_dir.join("owner.sh");
        std::fs::write(&script, OWNER_SCRIPT)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700))?;
        }
        let npm_token = format!(
            "npm_{}",
            super::Rng::from_entropy().string(super::fake::HEX, 36)
        );
        std::fs::write(owner_dir.join("creds").join("tok-0ld"), &npm_token)?;

        let long_ago = Utc::now() - Duration::days(700);
        let var = |value: &str| StoredVar {
            value: value.to_owned(),
            created_at: long_ago,
            updated_at: long_ago,
        };
        circleci.with_state(|state| {
            if let Some(p) = state.project_by_slug_mut("gh/acme/infra") {
                p.env_vars
                    .insert("GCLOUD_SERVICE_KEY".into(), var(key_json.expose()));
                p.env_vars
                    .insert("ARM_CLIENT_SECRET".into(), var(client_secret.expose()));
                p.env_vars.insert("ARM_CLIENT_ID".into(), var(&app_id));
                p.env_vars.insert("ARM_TENANT_ID".into(), var(TENANT));
            }
            if let Some(p) = state.project_by_slug_mut("gh/acme/api") {
                p.env_vars.insert("NPM_TOKEN".into(), var(&npm_token));
            }
        });
        Ok(CloudDemo {
            gcp,
            azure,
            service_account,
            app_object,
            owner_dir,
        })
    }

    /// The plan's `endpoints:` for these simulators.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            gcp_iam: Some(Located::new(self.gcp.iam_url())),
            gcp_token: Some(Located::new(self.gcp.token_url())),
            azure_authority: Some(Located::new(self.azure.authority_url())),
            azure_graph: Some(Located::new(self.azure.graph_url())),
            azure_management: Some(Located::new(self.azure.management_url())),
            ..Endpoints::default()
        }
    }

    /// The providers, with rekey's own credentials at each simulator.
    pub fn providers(&self) -> std::io::Result<Vec<Arc<dyn Provider>>> {
        let endpoints = self.endpoints();
        let key = self
            .gcp
            .admin_key_json()
            .ok_or_else(|| std::io::Error::other("no GCP admin key"))?;
        let key = ServiceAccountKey::parse(key.expose()).map_err(std::io::Error::other)?;
        let gcp = GcpSaKeyProvider::new(&endpoints, GcpAuth::KeyFile(Box::new(key)))
            .map_err(std::io::Error::other)?;
        let azure = AzureAppSecretProvider::new(&endpoints, self.azure.admin_identity())
            .map_err(std::io::Error::other)?;
        Ok(vec![
            Arc::new(gcp),
            Arc::new(azure),
            Arc::new(ExecProvider::new()),
        ])
    }

    /// One reviewed target per provider, as a person would write them.
    pub fn targets(&self) -> Vec<Target> {
        let binding = |project: &str, field: &str, var: &str| Binding {
            project: Some(Located::new(project.into())),
            context: None,
            context_id: None,
            vars: crate::plan::compact::FieldMap::from([(
                Located::new(field.into()),
                Located::new(var.into()),
            )]),
            encoding: Default::default(),
            aws_keypair: false,
            ssh_hostname: None,
        };
        let target = |id: &str, kind: ProviderKind, principal: Principal, b: Binding| Target {
            id: Located::new(id.to_owned()),
            provider: Located::new(kind),
            confidence: Default::default(),
            confirmed: true,
            principal,
            bindings: vec![b],
            observed: Vec::new(),
            policy: Default::default(),
            exec: None,
            ssh_key: None,
        };
        let script = self.owner_dir.join("owner.sh").display().to_string();
        let cmd = |op: &str| Located::new(vec![script.clone(), op.to_owned()]);
        let mut exec = target(
            "npm-publish",
            ProviderKind::Exec,
            Principal::default().with(PrincipalField::Service, "npm"),
            binding("gh/acme/api", "value", "NPM_TOKEN"),
        );
        exec.exec = Some(Box::new(ExecCommands {
            mint: cmd("mint"),
            verify: cmd("verify"),
            revoke: cmd("revoke"),
            inspect: Some(cmd("inspect")),
            deactivate: Some(cmd("deactivate")),
            timeout: None,
        }));
        vec![
            target(
                "gcp-ci-deployer",
                ProviderKind::GcpSaKey,
                Principal::default()
                    .with(PrincipalField::ServiceAccount, self.service_account.clone()),
                binding("gh/acme/infra", "key_json", "GCLOUD_SERVICE_KEY"),
            ),
            target(
                "azure-terraform",
                ProviderKind::AzureAppSecret,
                Principal::default()
                    .with(PrincipalField::AppId, self.app_object.clone())
                    .with(PrincipalField::TenantId, TENANT)
                    .with(PrincipalField::Title, "circleci"),
                binding("gh/acme/infra", "client_secret", "ARM_CLIENT_SECRET"),
            ),
            exec,
        ]
    }

    /// For each binding, whether it holds the owner's one live credential.
    pub fn bindings_work(&self, circleci: &Sandbox) -> Vec<(String, bool)> {
        let state = circleci.state();
        let get = |slug: &str, var: &str| {
            state
                .project_by_slug(slug)
                .and_then(|p| p.env_vars.get(var))
                .map(|v| v.value.clone())
                .unwrap_or_default()
        };
        let key_json = get("gh/acme/infra", "GCLOUD_SERVICE_KEY");
        let key_id = serde_json::from_str::<serde_json::Value>(&key_json)
            .ok()
            .and_then(|v| v["private_key_id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let keys = self.gcp.with_state(|s| s.keys_of(&self.service_account));
        let gcp_ok = !key_id.is_empty()
            && keys.len() == 1
            && keys
                .iter()
                .all(|(name, disabled)| name.ends_with(&key_id) && !disabled);
        let secret = get("gh/acme/infra", "ARM_CLIENT_SECRET");
        let azure_ok = self.azure.with_state(|s| {
            s.passwords_of(&self.app_object).len() == 1 && s.accepts(&self.app_object, &secret)
        });
        let token = get("gh/acme/api", "NPM_TOKEN");
        let live: Vec<String> = std::fs::read_dir(self.owner_dir.join("creds"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        let exec_ok = live.len() == 1 && live.iter().all(|v| *v == token);
        vec![
            (
                "GCLOUD_SERVICE_KEY in project gh/acme/infra (gcp-sa-key)".into(),
                gcp_ok,
            ),
            (
                "ARM_CLIENT_SECRET in project gh/acme/infra (azure-app-secret)".into(),
                azure_ok,
            ),
            ("NPM_TOKEN in project gh/acme/api (exec)".into(), exec_ok),
        ]
    }
}

impl Drop for CloudDemo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.owner_dir);
    }
}
