//! Bindings at CircleCI: writing a minted credential to every place of a target, and proving
//! it arrived (read-back). Project variables read back as `xxxx` + last four, which must match
//! the new value; context variables have no value to read, so their `updated_at` must advance.
//! Bindings into project settings (the legacy AWS key pair, additional SSH keys) are written
//! and read back through API v1.1 ([`settings_write`], [`settings_read_back`]).

use crate::circleci::{CircleCiClient, CircleCiError};
use crate::plan::{Binding, Encoding, Place};
use crate::providers::Minted;
use crate::secret::Secret;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    #[error("{place}: {source}")]
    CircleCi {
        place: String,
        source: CircleCiError,
    },
    #[error("{place}: the plan maps field `{field}`, which a {provider} credential does not have")]
    UnknownField {
        place: String,
        field: String,
        provider: String,
    },
    #[error("{place}: a context binding needs `context_id` (CircleCI addresses contexts by id)")]
    NoContextId { place: String },
    /// The masked value CircleCI shows is not the new value's. What the new value ends with is
    /// never said: its last four are a part of the secret.
    #[error("{place}: variable {var} reads back as {got}, which does not match the new value")]
    Mismatch {
        place: String,
        var: String,
        got: String,
    },
    #[error("{place}: variable {var} is missing after the write")]
    Missing { place: String, var: String },
    #[error("{place}: variable {var} was not updated (updated_at did not advance)")]
    NotUpdated { place: String, var: String },
}

/// `project gh/acme/api` or `context aws-prod`: how a binding is named in the journal and
/// reports.
pub fn label(binding: &Binding) -> String {
    let place = binding
        .place()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "binding without a place".into());
    // A project's settings are places of their own beside its variables.
    match (&binding.ssh_hostname, binding.aws_keypair) {
        (Some(host), _) => format!("{place} (SSH key for `{}`)", host.as_str()),
        (None, true) => format!("{place} (legacy AWS key pair)"),
        (None, false) => place,
    }
}

/// The (variable, value) pairs a binding receives: each mapped field that the minted credential
/// has, encoded as the binding says. Fields the credential does not mint (an Azure client id,
/// say) stay as they are.
pub fn values(binding: &Binding, minted: &Minted) -> Vec<(String, Secret)> {
    binding
        .vars
        .iter()
        .filter_map(|(field, var)| {
            let value = minted.fields.get(field.as_str())?;
            let encoding = binding
                .encoding
                .get(field)
                .map(|e| e.value)
                .unwrap_or_default();
            let encoded = match encoding {
                Encoding::Raw => value.clone(),
                Encoding::Base64 => {
                    Secret::new(base64::engine::general_purpose::STANDARD.encode(value.expose()))
                }
            };
            Some((var.value.to_string(), encoded))
        })
        .collect()
}

/// Key of a context variable's timestamp in the journal (`<context id>/<VAR>`).
fn stamp_key(context_id: &str, var: &str) -> String {
    format!("{context_id}/{var}")
}

/// Context variables' `updated_at` before the write, for read-back; empty for projects.
pub async fn timestamps(
    client: &CircleCiClient,
    binding: &Binding,
) -> Result<BTreeMap<String, DateTime<Utc>>, BindingError> {
    let place = label(binding);
    let mut out = BTreeMap::new();
    if let Some(Place::Context(_)) = binding.place() {
        let id = binding
            .context_id
            .as_deref()
            .ok_or(BindingError::NoContextId {
                place: place.clone(),
            })?;
        let stamps =
            client
                .shared_context_stamps(id)
                .await
                .map_err(|source| BindingError::CircleCi {
                    place: place.clone(),
                    source,
                })?;
        for (var, at) in stamps.iter() {
            if binding.vars.values().any(|name| name.as_str() == var) {
                out.insert(stamp_key(id, var), *at);
            }
        }
    }
    Ok(out)
}

/// Writes every value of the credential to the binding's variables.
pub async fn write(
    client: &CircleCiClient,
    binding: &Binding,
    minted: &Minted,
) -> Result<(), BindingError> {
    if let Some(result) = settings_write(client, binding, minted).await {
        return result;
    }
    let place = label(binding);
    let err = |source| BindingError::CircleCi {
        place: place.clone(),
        source,
    };
    for (var, value) in values(binding, minted) {
        match binding.place() {
            Some(Place::Project(slug)) => {
                client
                    .set_project_var(slug, &var, &value)
                    .await
                    .map_err(err)?;
            }
            Some(Place::Context(_)) => {
                let id = binding
                    .context_id
                    .as_deref()
                    .ok_or(BindingError::NoContextId {
                        place: place.clone(),
                    })?;
                client
                    .set_context_var(id, &var, &value)
                    .await
                    .map_err(err)?;
            }
            None => {
                return Err(BindingError::NoContextId {
                    place: place.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Proves the write arrived: masked last four for project variables, an advanced `updated_at`
/// for context variables (compared with `before`).
pub async fn read_back(
    client: &CircleCiClient,
    binding: &Binding,
    minted: &Minted,
    before: &BTreeMap<String, DateTime<Utc>>,
) -> Result<(), BindingError> {
    if let Some(result) = settings_read_back(client, binding, minted).await {
        return result;
    }
    let place = label(binding);
    let err = |source| BindingError::CircleCi {
        place: place.clone(),
        source,
    };
    let expected = values(binding, minted);
    match binding.place() {
        Some(Place::Project(slug)) => {
            let live = client.project_masks(slug).await.map_err(err)?;
            for (var, value) in expected {
                // A part of the secret: wiped after the comparison.
                let want = zeroize::Zeroizing::new(
                    crate::inventory::Masked::new(value.expose())
                        .last_four()
                        .to_string(),
                );
                match live.get(&var) {
                    None => return Err(BindingError::Missing { place, var }),
                    Some(got) if *got != *want => {
                        return Err(BindingError::Mismatch {
                            place,
                            var,
                            got: format!("xxxx{got}"),
                        });
                    }
                    Some(_) => {}
                }
            }
        }
        Some(Place::Context(_)) => {
            let id = binding
                .context_id
                .as_deref()
                .ok_or(BindingError::NoContextId {
                    place: place.clone(),
                })?;
            let live: BTreeMap<String, Option<DateTime<Utc>>> = client
                .list_context_env_vars(id)
                .await
                .map_err(err)?
                .into_iter()
                .map(|v| (v.variable, v.updated_at.or(v.created_at)))
                .collect();
            for (var, _) in expected {
                match live.get(&var) {
                    None => return Err(BindingError::Missing { place, var }),
                    Some(now) => {
                        let was = before.get(&stamp_key(id, &var));
                        let advanced = match (was, now) {
                            (Some(was), Some(now)) => now > was,
                            // A variable that did not exist before and exists now was written.
                            (None, _) => true,
                            (Some(_), None) => false,
                        };
                        if !advanced {
                            return Err(BindingError::NotUpdated { place, var });
                        }
                    }
                }
            }
        }
        None => return Err(BindingError::NoContextId { place }),
    }
    Ok(())
}

/// A binding into project settings: which slot, in which project. `None` for variables.
enum SettingsSlot<'a> {
    AwsKeypair(&'a str),
    SshKey(&'a str, &'a str),
}

fn settings_slot(binding: &Binding) -> Option<SettingsSlot<'_>> {
    let Some(Place::Project(slug)) = binding.place() else {
        return None;
    };
    match (&binding.ssh_hostname, binding.aws_keypair) {
        (Some(host), _) => Some(SettingsSlot::SshKey(slug, host.as_str())),
        (None, true) => Some(SettingsSlot::AwsKeypair(slug)),
        (None, false) => None,
    }
}

fn field<'m>(
    binding: &Binding,
    minted: &'m Minted,
    name: &str,
) -> Result<&'m Secret, BindingError> {
    minted
        .fields
        .get(name)
        .ok_or_else(|| BindingError::UnknownField {
            place: label(binding),
            field: name.to_string(),
            provider: "minted".to_string(),
        })
}

/// Writes a settings binding (`None` when the binding holds variables): the legacy AWS key
/// pair with `PUT …/settings`, an SSH private key with `POST …/ssh-key` for its host (the old
/// key stays beside it until the revoke step deletes it).
pub async fn settings_write(
    client: &CircleCiClient,
    binding: &Binding,
    minted: &Minted,
) -> Option<Result<(), BindingError>> {
    let slot = settings_slot(binding)?;
    let place = label(binding);
    let err = |source| BindingError::CircleCi {
        place: place.clone(),
        source,
    };
    Some(match slot {
        SettingsSlot::AwsKeypair(slug) => {
            let (id, secret) = match (
                field(binding, minted, "access_key_id"),
                field(binding, minted, "secret_access_key"),
            ) {
                (Ok(id), Ok(secret)) => (id, secret),
                (Err(e), _) | (_, Err(e)) => return Some(Err(e)),
            };
            client.set_aws_keypair(slug, id, secret).await.map_err(err)
        }
        SettingsSlot::SshKey(slug, host) => match field(binding, minted, "private_key") {
            Ok(key) => client.add_ssh_key(slug, host, key).await.map_err(err),
            Err(e) => Err(e),
        },
    })
}

/// Proves a settings write arrived: the key pair's access key id ends as the new one does
/// (the secret's last four are compared too, never printed); the new SSH key is listed for its
/// host under its fingerprint (the minted id).
pub async fn settings_read_back(
    client: &CircleCiClient,
    binding: &Binding,
    minted: &Minted,
) -> Option<Result<(), BindingError>> {
    let slot = settings_slot(binding)?;
    let place = label(binding);
    let slug = match slot {
        SettingsSlot::AwsKeypair(slug) | SettingsSlot::SshKey(slug, _) => slug,
    };
    let settings = match client.project_settings(slug).await {
        Ok(s) => s,
        Err(source) => return Some(Err(BindingError::CircleCi { place, source })),
    };
    Some(match slot {
        SettingsSlot::AwsKeypair(_) => {
            let var = "aws.keypair".to_string();
            let (id, secret) = match (
                field(binding, minted, "access_key_id"),
                field(binding, minted, "secret_access_key"),
            ) {
                (Ok(id), Ok(secret)) => (id, secret),
                (Err(e), _) | (_, Err(e)) => return Some(Err(e)),
            };
            let want_id = crate::inventory::Masked::new(id.expose());
            let want_secret = crate::inventory::Masked::new(secret.expose());
            match settings.aws.keypair {
                None => Err(BindingError::Missing { place, var }),
                Some(live) if live.access_key_id.last_four() != want_id.last_four() => {
                    Err(BindingError::Mismatch {
                        place,
                        var: "aws.keypair.access_key_id".into(),
                        got: format!("xxxx{}", live.access_key_id.last_four()),
                    })
                }
                Some(live) if live.secret_access_key.last_four() != want_secret.last_four() => {
                    Err(BindingError::NotUpdated { place, var })
                }
                Some(_) => Ok(()),
            }
        }
        SettingsSlot::SshKey(_, host) => {
            let listed = settings
                .ssh_keys
                .iter()
                .any(|k| k.fingerprint == minted.id && k.hostname == host);
            if listed {
                Ok(())
            } else {
                Err(BindingError::Missing {
                    place,
                    var: format!("SSH key {} for host `{host}`", minted.id),
                })
            }
        }
    })
}

/// The last four characters of the access key id in a project's legacy AWS key pair, for
/// bindings that hold it (`aws_keypair`): how the engine tells which key of the IAM user is
/// in use there.
pub async fn keypair_id_last_four(
    client: &CircleCiClient,
    binding: &Binding,
) -> Result<Option<String>, CircleCiError> {
    let Some(SettingsSlot::AwsKeypair(slug)) = settings_slot(binding) else {
        return Ok(None);
    };
    Ok(client
        .project_settings(slug)
        .await?
        .aws
        .keypair
        .map(|k| k.access_key_id.last_four().to_string()))
}
