//! The provider conformance suite: what every [`Provider`] must do, written once against the
//! trait and run against each provider's test double (moto for AWS; the GCP and Azure
//! simulators; fixture commands for exec), like `object_store`'s `integration.rs`.
//!
//! A test double plugs in through [`Harness`]: it hands out the provider and fresh principals,
//! and says which of the owner's behaviours it reproduces (moto accepts an Inactive key, so the
//! AWS harness says it does not reject inactive credentials). Scenarios adapt to
//! [`Provider::capabilities`], so one that the owner does not support is skipped, not failed.
//! Each scenario returns every text it saw (errors, Debug output, serialized inspections) so
//! the caller can scan them for secrets together with captured logs.

use super::assert_no_secret;
use async_trait::async_trait;
use rekey::plan::{Located, Principal, ProviderKind, Target};
use rekey::providers::{CredentialStatus, Inspection, Minted, Provider, ProviderError};
use std::time::Duration;

/// What a test double must offer to run the suite.
#[async_trait]
pub trait Harness: Send + Sync {
    fn provider(&self) -> &dyn Provider;

    /// A target whose principal exists at the owner and has no credentials. `name` is unique
    /// within the double (scenarios pass distinct names).
    async fn fresh_principal(&self, name: &str) -> Target;

    /// A target whose principal does not exist.
    fn missing_principal(&self) -> Target;

    /// An id in the owner's format that names no credential.
    fn unknown_credential_id(&self) -> String;

    /// The double refuses a revoked credential when it is used.
    fn rejects_revoked(&self) -> bool {
        true
    }

    /// The double refuses a deactivated credential when it is used (moto does not).
    fn rejects_inactive(&self) -> bool {
        true
    }

    /// How often `verify` is tried while it answers `Rejected` (eventual consistency).
    fn verify_attempts(&self) -> u32 {
        1
    }
}

/// A target of `kind` for `principal`, as the planner would write it (no bindings needed for
/// owner-side operations).
pub fn target(id: &str, kind: ProviderKind, principal: Principal) -> Target {
    Target {
        id: Located::new(id.to_owned()),
        provider: Located::new(kind),
        confidence: Default::default(),
        confirmed: true,
        principal,
        bindings: Vec::new(),
        observed: Vec::new(),
        policy: Default::default(),
        exec: None,
        ssh_key: None,
    }
}

/// Every secret value of a minted credential, to scan outputs for.
pub fn secrets_of(minted: &Minted) -> Vec<String> {
    minted
        .fields
        .values()
        .map(|s| s.expose().to_owned())
        // An id field repeats a public value (an AWS key id) that may rightly appear.
        .filter(|v| *v != minted.id)
        .collect()
}

/// Texts a scenario produced, with the secrets it handled.
#[derive(Default)]
pub struct Transcript {
    pub texts: Vec<String>,
    pub secrets: Vec<String>,
}

impl Transcript {
    fn minted(&mut self, m: &Minted) {
        self.texts.push(format!("{m:?}"));
        self.secrets.extend(secrets_of(m));
    }
    fn error(&mut self, e: &ProviderError) {
        self.texts.push(format!("{e}"));
        self.texts.push(format!("{e:?}"));
    }
    fn inspection(&mut self, i: &Inspection) {
        self.texts.push(format!("{i:?}"));
        self.texts
            .push(serde_json::to_string(i).unwrap_or_else(|e| format!("unserializable: {e}")));
    }

    /// Fails if any text (or `extra`, e.g. captured logs) holds a secret.
    pub fn assert_clean(&self, extra: &[(&str, &str)]) {
        let secrets: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        assert!(
            !secrets.is_empty(),
            "the scenario handled no secret to look for"
        );
        for (i, text) in self.texts.iter().enumerate() {
            assert_no_secret(&format!("output #{i}"), text, &secrets);
        }
        for (what, text) in extra {
            assert_no_secret(what, text, &secrets);
        }
    }
}

async fn inspect(p: &dyn Provider, t: &Target, tr: &mut Transcript) -> Inspection {
    let i = p
        .inspect(t)
        .await
        .unwrap_or_else(|e| panic!("inspect {}: {e}", t.id.as_str()));
    tr.inspection(&i);
    i
}

fn status_of(i: &Inspection, id: &str) -> Option<CredentialStatus> {
    i.credentials.iter().find(|c| c.id == id).map(|c| c.status)
}

/// Mints, checking the fields the bindings of this provider kind must map are all there.
pub async fn mint(p: &dyn Provider, t: &Target, tr: &mut Transcript) -> Minted {
    let m = p
        .mint(t)
        .await
        .unwrap_or_else(|e| panic!("mint for {}: {e}", t.id.as_str()));
    tr.minted(&m);
    assert!(!m.id.is_empty(), "minted credential has an id");
    if let Some((_, required)) = p.kind().binding_fields() {
        for field in required {
            let value = m.fields.get(*field);
            assert!(
                value.is_some_and(|v| !v.is_empty()),
                "minted credential has a non-empty {field} field"
            );
        }
    }
    m
}

/// `verify`, tried up to the harness's attempts while it answers `Rejected`.
pub async fn verify_eventually(
    h: &dyn Harness,
    t: &Target,
    m: &Minted,
    tr: &mut Transcript,
) -> Result<(), ProviderError> {
    let mut last = None;
    for attempt in 0..h.verify_attempts().max(1) {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        match h.provider().verify(t, m).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tr.error(&e);
                let retry = matches!(e, ProviderError::Rejected(_));
                last = Some(e);
                if !retry {
                    break;
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| ProviderError::Failed("verify never ran".into())))
}

/// The whole life of one credential: mint → listed Active → verify → deactivate → listed
/// Inactive → reactivate → Active → revoke → not listed → (rejected on use) → revoke again Ok.
pub async fn lifecycle(h: &dyn Harness) -> Transcript {
    let mut tr = Transcript::default();
    let p = h.provider();
    let t = h.fresh_principal("lifecycle").await;
    // Per target: an exec target's own commands decide what it supports.
    let caps = p.capabilities_for(&t);

    let before = inspect(p, &t, &mut tr).await;
    assert!(!before.principal.is_empty(), "inspect names the principal");
    assert!(
        before.credentials.is_empty(),
        "a fresh principal has no credential"
    );

    let m = mint(p, &t, &mut tr).await;
    let listed = inspect(p, &t, &mut tr).await;
    assert_eq!(listed.principal, before.principal);
    assert_eq!(status_of(&listed, &m.id), Some(CredentialStatus::Active));

    verify_eventually(h, &t, &m, &mut tr)
        .await
        .unwrap_or_else(|e| panic!("the new credential verifies: {e}"));

    if caps.deactivate {
        p.deactivate(&t, &m.id)
            .await
            .unwrap_or_else(|e| panic!("deactivate: {e}"));
        let i = inspect(p, &t, &mut tr).await;
        assert_eq!(status_of(&i, &m.id), Some(CredentialStatus::Inactive));
        if h.rejects_inactive() {
            let err = p.verify(&t, &m).await.err();
            assert!(
                matches!(err, Some(ProviderError::Rejected(_))),
                "an inactive credential is rejected: {err:?}"
            );
        }
        // Deactivating twice is harmless (a resumed run repeats steps).
        p.deactivate(&t, &m.id)
            .await
            .unwrap_or_else(|e| panic!("deactivate again: {e}"));
    }
    if caps.reactivate {
        p.reactivate(&t, &m.id)
            .await
            .unwrap_or_else(|e| panic!("reactivate: {e}"));
        let i = inspect(p, &t, &mut tr).await;
        assert_eq!(status_of(&i, &m.id), Some(CredentialStatus::Active));
        verify_eventually(h, &t, &m, &mut tr)
            .await
            .unwrap_or_else(|e| panic!("a reactivated credential verifies: {e}"));
    }

    p.revoke(&t, &m.id)
        .await
        .unwrap_or_else(|e| panic!("revoke: {e}"));
    let after = inspect(p, &t, &mut tr).await;
    assert_eq!(
        status_of(&after, &m.id),
        None,
        "a revoked credential is not listed"
    );

    if h.rejects_revoked() {
        match p.verify(&t, &m).await {
            Err(e @ ProviderError::Rejected(_)) => tr.error(&e),
            other => panic!("a revoked credential is Rejected on use, got {other:?}"),
        }
    }
    p.revoke(&t, &m.id)
        .await
        .unwrap_or_else(|e| panic!("revoking a revoked credential is Ok: {e}"));
    tr
}

/// At the owner's limit, `mint` answers `Quota`; the listing shows every credential with its
/// status; after one is revoked, `mint` works again.
pub async fn capacity(h: &dyn Harness) -> Transcript {
    let mut tr = Transcript::default();
    let p = h.provider();
    let caps = p.capabilities();
    let Some(max) = caps.max_credentials else {
        eprintln!(
            "capacity: {} has no credential limit, nothing to check",
            p.kind()
        );
        return tr;
    };
    let t = h.fresh_principal("capacity").await;
    let caps = p.capabilities_for(&t);
    let mut minted = Vec::new();
    for _ in 0..max {
        minted.push(mint(p, &t, &mut tr).await);
    }
    if caps.deactivate {
        p.deactivate(&t, &minted[0].id)
            .await
            .unwrap_or_else(|e| panic!("deactivate: {e}"));
    }
    let i = inspect(p, &t, &mut tr).await;
    assert_eq!(
        i.credentials.len(),
        max,
        "every credential is listed: {i:?}"
    );
    for (n, m) in minted.iter().enumerate() {
        let expected = if n == 0 && caps.deactivate {
            CredentialStatus::Inactive
        } else {
            CredentialStatus::Active
        };
        assert_eq!(
            status_of(&i, &m.id),
            Some(expected),
            "status of credential #{n}"
        );
    }

    match p.mint(&t).await {
        Err(e @ ProviderError::Quota(_)) => tr.error(&e),
        Err(e) => panic!("mint beyond the limit answers Quota, got {e:?}"),
        Ok(extra) => {
            tr.minted(&extra);
            panic!("mint beyond the limit of {max} succeeded ({})", extra.id)
        }
    }

    p.revoke(&t, &minted[0].id)
        .await
        .unwrap_or_else(|e| panic!("revoke: {e}"));
    let again = mint(p, &t, &mut tr).await;
    for m in minted.iter().skip(1).chain([&again]) {
        p.revoke(&t, &m.id)
            .await
            .unwrap_or_else(|e| panic!("cleanup revoke: {e}"));
    }
    tr
}

/// A credential of one principal does not verify as another: not Ok, and not Transient (no
/// amount of retrying makes it right).
pub async fn wrong_principal(h: &dyn Harness) -> Transcript {
    let mut tr = Transcript::default();
    let p = h.provider();
    let owner = h.fresh_principal("owner").await;
    let other = h.fresh_principal("other").await;
    let m = mint(p, &owner, &mut tr).await;
    verify_eventually(h, &owner, &m, &mut tr)
        .await
        .unwrap_or_else(|e| panic!("verifies as its owner: {e}"));
    match p.verify(&other, &m).await {
        Ok(()) => panic!("a credential verified as a principal that does not own it"),
        Err(e) => {
            tr.error(&e);
            assert!(!e.is_transient(), "wrong principal is not transient: {e}");
        }
    }
    p.revoke(&owner, &m.id)
        .await
        .unwrap_or_else(|e| panic!("revoke: {e}"));
    tr
}

/// Missing principals and unknown credentials: `NotFound` where something must exist, `Ok`
/// where the goal (gone) is already reached.
pub async fn missing_things(h: &dyn Harness) -> Transcript {
    let mut tr = Transcript::default();
    let p = h.provider();
    let missing = h.missing_principal();
    for (op, result) in [
        ("inspect", p.inspect(&missing).await.map(|_| ())),
        ("mint", p.mint(&missing).await.map(|_| ())),
    ] {
        match result {
            Err(e @ ProviderError::NotFound(_)) => tr.error(&e),
            other => panic!("{op} of a missing principal answers NotFound, got {other:?}"),
        }
    }
    let t = h.fresh_principal("unknown-credential").await;
    let unknown = h.unknown_credential_id();
    let caps = p.capabilities_for(&t);
    if caps.deactivate {
        match p.deactivate(&t, &unknown).await {
            Err(e @ ProviderError::NotFound(_)) => tr.error(&e),
            other => panic!("deactivate of an unknown credential answers NotFound, got {other:?}"),
        }
    }
    if caps.reactivate {
        match p.reactivate(&t, &unknown).await {
            Err(e @ ProviderError::NotFound(_)) => tr.error(&e),
            other => panic!("reactivate of an unknown credential answers NotFound, got {other:?}"),
        }
    }
    p.revoke(&t, &unknown)
        .await
        .unwrap_or_else(|e| panic!("revoke of an unknown credential is Ok: {e}"));
    tr
}
