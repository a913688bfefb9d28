//! Bindings at CircleCI: writing a minted credential to every place of a target, and proving
//! it arrived (read-back). Project variables read back as `xxxx` + last four, which must match
//! the new value; context variables have no value to read, so their `updated_at` must advance.

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
    binding
        .place()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "binding without a place".into())
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
            Some((var.value.clone(), encoded))
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
        let stamps = client
            .context_stamps(id)
            .await
            .map_err(|source| BindingError::CircleCi {
                place: place.clone(),
                source,
            })?;
        for (var, at) in stamps {
            if binding.vars.values().any(|name| name.as_str() == var) {
                out.insert(stamp_key(id, &var), at);
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
