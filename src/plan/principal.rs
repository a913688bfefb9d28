//! [`Principal`]: the owner of a credential at its provider, stored as the list of its set
//! fields.
//!
//! A principal has ten optional string fields, and a target sets one or two of them: as ten
//! `Option<Located<String>>` it was 328 bytes of every target (about 60 MB of a 190,000-target
//! plan), almost all of them `None`. Here it is a shared slice of the fields that are set plus
//! `read_only`: 24 bytes. Shared, because the planner gives every target of a rule the rule's
//! principal (`user: REVIEW-REQUIRED`…): a clone counts a reference; `set` makes a new slice.
//!
//! The plan file, the JSON Schema and the error messages are those of [`PrincipalSpec`], the
//! struct with one member per field that the YAML reader deserializes and converts.

use super::located::Located;
use schemars::JsonSchema;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use std::borrow::Cow;
use std::sync::Arc;

/// A string field of a [`Principal`], in the plan's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PrincipalField {
    User,
    AccountId,
    Repository,
    Project,
    ServiceAccount,
    AppId,
    TenantId,
    Title,
    KeyId,
    Service,
}

impl PrincipalField {
    /// Every field, in the plan's order.
    pub const ALL: [PrincipalField; 10] = [
        PrincipalField::User,
        PrincipalField::AccountId,
        PrincipalField::Repository,
        PrincipalField::Project,
        PrincipalField::ServiceAccount,
        PrincipalField::AppId,
        PrincipalField::TenantId,
        PrincipalField::Title,
        PrincipalField::KeyId,
        PrincipalField::Service,
    ];

    /// The field's name in the plan (`service_account`).
    pub fn name(self) -> &'static str {
        match self {
            PrincipalField::User => "user",
            PrincipalField::AccountId => "account_id",
            PrincipalField::Repository => "repository",
            PrincipalField::Project => "project",
            PrincipalField::ServiceAccount => "service_account",
            PrincipalField::AppId => "app_id",
            PrincipalField::TenantId => "tenant_id",
            PrincipalField::Title => "title",
            PrincipalField::KeyId => "key_id",
            PrincipalField::Service => "service",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// The owner of a credential at its provider; which fields are needed depends on the provider.
/// Its fields are documented on [`PrincipalSpec`].
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(from = "PrincipalSpec")]
pub struct Principal {
    /// The string fields that are set, each once, in [`PrincipalField::ALL`] order.
    fields: Arc<[(PrincipalField, Located<String>)]>,
    /// github-deploy-key: whether the key is read-only (default true).
    pub read_only: Option<bool>,
}

macro_rules! accessors {
    ($($name:ident => $field:ident),* $(,)?) => {
        $(
            #[doc = concat!("`principal.", stringify!($name), "`, when set.")]
            pub fn $name(&self) -> Option<&Located<String>> {
                self.get(PrincipalField::$field)
            }
        )*
    };
}

impl Principal {
    /// The field's value, when set.
    pub fn get(&self, field: PrincipalField) -> Option<&Located<String>> {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, value)| value)
    }

    /// Sets (`Some`) or clears (`None`) a field.
    pub fn set(&mut self, field: PrincipalField, value: Option<Located<String>>) {
        let mut fields = self.fields.to_vec();
        let at = fields.partition_point(|(f, _)| *f < field);
        let present = fields.get(at).is_some_and(|(f, _)| *f == field);
        match (value, present) {
            (Some(v), true) => fields[at].1 = v,
            (Some(v), false) => fields.insert(at, (field, v)),
            (None, true) => {
                fields.remove(at);
            }
            (None, false) => {}
        }
        self.fields = fields.into();
    }

    /// This principal with `field` set to `value` (made in memory: no source position).
    pub fn with(mut self, field: PrincipalField, value: impl Into<String>) -> Self {
        self.set(field, Some(Located::new(value.into())));
        self
    }

    accessors! {
        user => User,
        account_id => AccountId,
        repository => Repository,
        project => Project,
        service_account => ServiceAccount,
        app_id => AppId,
        tenant_id => TenantId,
        title => Title,
        key_id => KeyId,
        service => Service,
    }

    /// The value of the field of that name: `None` when the name is unknown or the field unset.
    pub fn field(&self, name: &str) -> Option<&Located<String>> {
        PrincipalField::from_name(name).and_then(|f| self.get(f))
    }

    /// Every string field that is set, with its name, in the plan's order.
    pub fn set_fields(&self) -> impl Iterator<Item = (&'static str, &Located<String>)> {
        self.fields.iter().map(|(f, value)| (f.name(), value))
    }

    /// What the plan writes, in its order: the set fields, and `read_only` (when set) after
    /// `title`.
    pub fn written(&self) -> impl Iterator<Item = (&'static str, Written<'_>)> {
        let split = self
            .fields
            .partition_point(|(f, _)| *f <= PrincipalField::Title);
        let (head, tail) = self.fields.split_at(split);
        fn string((f, value): &(PrincipalField, Located<String>)) -> (&'static str, Written<'_>) {
            (f.name(), Written::Str(value))
        }
        head.iter()
            .map(string)
            .chain(self.read_only.map(|r| ("read_only", Written::Bool(r))))
            .chain(tail.iter().map(string))
    }

    /// The same principal without source positions (a copy of a rule file's values).
    pub fn unlocated(&self) -> Self {
        let fields: Vec<_> = self
            .fields
            .iter()
            .map(|(f, value)| (*f, Located::new(value.value.clone())))
            .collect();
        Principal {
            fields: fields.into(),
            read_only: self.read_only,
        }
    }
}

/// A value of [`Principal::written`].
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
pub enum Written<'a> {
    Str(&'a Located<String>),
    Bool(bool),
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("Principal");
        for (name, value) in self.set_fields() {
            s.field(name, value);
        }
        if let Some(read_only) = self.read_only {
            s.field("read_only", &read_only);
        }
        s.finish()
    }
}

/// Written as [`PrincipalSpec`] writes it: set fields only, `read_only` after `title`.
impl Serialize for Principal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = self.fields.len() + usize::from(self.read_only.is_some());
        let mut s = serializer.serialize_struct("Principal", len)?;
        for (name, value) in self.written() {
            s.serialize_field(name, &value)?;
        }
        s.end()
    }
}

impl JsonSchema for Principal {
    fn schema_name() -> Cow<'static, str> {
        PrincipalSpec::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        PrincipalSpec::schema_id()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        PrincipalSpec::json_schema(generator)
    }
}

// The principal as a plan spells it: what the YAML reader deserializes (its errors name these
// fields) and the JSON Schema describes (from the doc comments, so they stay as committed);
// held as a [`Principal`].
/// The owner of a credential at its provider; which fields are needed depends on the provider.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename = "Principal", deny_unknown_fields)]
pub struct PrincipalSpec {
    /// aws-iam: IAM user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Located<String>>,
    /// aws-iam: expected account id (checked against STS when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<Located<String>>,
    /// github-deploy-key: `owner/repo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<Located<String>>,
    /// circleci-checkout-key: project slug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Located<String>>,
    /// gcp-sa-key: service account email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<Located<String>>,
    /// azure-app-secret: application (object) id of the app registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<Located<String>>,
    /// azure-app-secret: directory (tenant) id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Located<String>>,
    /// github-deploy-key / azure-app-secret: title or display name of the new credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<Located<String>>,
    /// github-deploy-key: whether the key is read-only (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// The credential in use (an AWS access key id…), when the bindings cannot show it: context
    /// variables have no value to compare, so with several keys rekey would not know which is old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<Located<String>>,
    /// exec / github-token: free text naming the owner (for the report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Located<String>>,
}

impl From<PrincipalSpec> for Principal {
    fn from(spec: PrincipalSpec) -> Self {
        let all = [
            (PrincipalField::User, spec.user),
            (PrincipalField::AccountId, spec.account_id),
            (PrincipalField::Repository, spec.repository),
            (PrincipalField::Project, spec.project),
            (PrincipalField::ServiceAccount, spec.service_account),
            (PrincipalField::AppId, spec.app_id),
            (PrincipalField::TenantId, spec.tenant_id),
            (PrincipalField::Title, spec.title),
            (PrincipalField::KeyId, spec.key_id),
            (PrincipalField::Service, spec.service),
        ];
        let set = all.iter().filter(|(_, v)| v.is_some()).count();
        let mut fields = Vec::with_capacity(set);
        fields.extend(all.into_iter().filter_map(|(f, v)| v.map(|v| (f, v))));
        Principal {
            fields: fields.into(),
            read_only: spec.read_only,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_reads_and_writes_like_its_spec() {
        let yaml = "{service: s, read_only: false, user: u, title: t, key_id: k}";
        let p: Principal = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(p.user().map(|v| v.as_str()), Some("u"));
        assert_eq!(p.field("key_id").map(|v| v.as_str()), Some("k"));
        assert_eq!(
            (p.field("nope"), p.project(), p.read_only),
            (None, None, Some(false))
        );
        let names: Vec<&str> = p.set_fields().map(|(n, _)| n).collect();
        assert_eq!(names, ["user", "title", "key_id", "service"]);
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"user":"u","title":"t","read_only":false,"key_id":"k","service":"s"}"#
        );
        let err = serde_saphyr::from_str::<Principal>("{usr: u}").unwrap_err();
        assert!(err.to_string().contains("unknown field `usr`"), "{err}");
    }

    #[test]
    fn set_keeps_the_fields_in_order_and_each_once() {
        let mut p = Principal::default()
            .with(PrincipalField::Service, "s")
            .with(PrincipalField::User, "u")
            .with(PrincipalField::User, "v");
        let set: Vec<(&str, &str)> = p.set_fields().map(|(n, v)| (n, v.as_str())).collect();
        assert_eq!(set, [("user", "v"), ("service", "s")]);
        p.set(PrincipalField::User, None);
        p.set(PrincipalField::Title, None);
        assert_eq!(p, Principal::default().with(PrincipalField::Service, "s"));
        assert_eq!(std::mem::size_of::<Principal>(), 24);
    }
}
