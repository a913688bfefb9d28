//! What the simulated AWS account holds: IAM users (name, id, ARN, what they may do) and their
//! access keys (id, secret, status, creation and last use), with IAM's limits — two keys per
//! user, user names unique regardless of case — and the optional propagation delay of new
//! keys. Built with a small builder ([`AwsState::new`], [`AwsState::user`],
//! [`AwsState::with_key`]) and inspected without going through the API ([`AwsState::keys_of`]).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as Days, TimeZone, Utc};

use super::super::{Rng, fake};
use crate::secret::Secret;

/// The user that holds rekey's own credentials, created with every state.
pub const ADMIN_USER: &str = "rekey-admin";

/// IAM's quota of access keys per user (Active and Inactive keys both count).
pub const MAX_KEYS_PER_USER: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    Active,
    Inactive,
}

impl KeyStatus {
    /// The spelling on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "Active",
            KeyStatus::Inactive => "Inactive",
        }
    }

    /// Only the exact spellings IAM accepts.
    pub fn parse(s: &str) -> Option<KeyStatus> {
        match s {
            "Active" => Some(KeyStatus::Active),
            "Inactive" => Some(KeyStatus::Inactive),
            _ => None,
        }
    }
}

/// What `GetAccessKeyLastUsed` reports for a key that has been used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastUsed {
    pub at: DateTime<Utc>,
    /// The signing service namespace (`iam`, `sts`, …).
    pub service: String,
    pub region: String,
}

/// An access key as the simulator sees it, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub access_key_id: String,
    pub user_name: String,
    pub status: KeyStatus,
    pub created_at: DateTime<Utc>,
    pub last_used: Option<LastUsed>,
}

/// An IAM user as the simulator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    /// `AIDA…`, the user's unique id.
    pub user_id: String,
    pub arn: String,
    pub created_at: DateTime<Utc>,
    pub access: Access,
}

/// An access key id and its secret. `Debug` shows the id only.
#[derive(Debug, Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

impl AwsCredentials {
    /// Static credentials for the AWS SDK, signing as this key.
    pub fn to_sdk(&self) -> aws_credential_types::Credentials {
        aws_credential_types::Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.expose().to_owned(),
            None,
            None,
            "rekey-aws-sandbox",
        )
    }
}

/// What a user may do through IAM — the two policies that matter to rotation, instead of a
/// policy language. STS `GetCallerIdentity` needs no permission, as in AWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// No identity-based policy: every IAM action is denied (a new IAM user's situation).
    #[default]
    None,
    /// AWS's documented "manage your own access keys" policy: `GetUser`, `ListAccessKeys`,
    /// `GetAccessKeyLastUsed`, `CreateAccessKey`, `UpdateAccessKey` and `DeleteAccessKey` on
    /// the caller's own user only.
    OwnKeys,
    /// `iam:*` on every user.
    Admin,
}

/// When a key created through `CreateAccessKey` starts to authenticate. IAM is eventually
/// consistent: a new key can be refused (`InvalidClientTokenId`) for a few seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Usable at once.
    #[default]
    Immediate,
    /// Refused until this long after its creation.
    Delay(Duration),
    /// Refused for its first `n` uses, accepted from then on.
    Rejections(u32),
}

/// A key to seed a user with.
#[derive(Debug, Clone)]
pub struct KeySpec {
    status: KeyStatus,
    created_at: Option<DateTime<Utc>>,
    last_used: Option<LastUsed>,
    credentials: Option<AwsCredentials>,
}

impl KeySpec {
    pub fn active() -> Self {
        KeySpec {
            status: KeyStatus::Active,
            created_at: None,
            last_used: None,
            credentials: None,
        }
    }

    pub fn inactive() -> Self {
        KeySpec {
            status: KeyStatus::Inactive,
            ..KeySpec::active()
        }
    }

    /// Otherwise a random moment of 2022 before the CircleCI incident window, as most keys
    /// stored in CircleCI were.
    pub fn created_at(mut self, at: DateTime<Utc>) -> Self {
        self.created_at = Some(at);
        self
    }

    /// This id and secret instead of random ones: the key a CircleCI sandbox already holds,
    /// so that one demo spans both simulators.
    pub fn credentials(mut self, credentials: AwsCredentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Otherwise never used.
    pub fn last_used(
        mut self,
        at: DateTime<Utc>,
        service: impl Into<String>,
        region: impl Into<String>,
    ) -> Self {
        self.last_used = Some(LastUsed {
            at,
            service: service.into(),
            region: region.into(),
        });
        self
    }
}

/// Why a state could not be set up as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    #[error("no IAM user named {0}")]
    NoSuchUser(String),
    #[error("IAM user {0} already has {MAX_KEYS_PER_USER} access keys")]
    TooManyKeys(String),
    #[error("invalid IAM user name {0:?}")]
    InvalidUserName(String),
    #[error("access key {0} already exists")]
    DuplicateKey(String),
    #[error("invalid IAM path {0:?}: it must start and end with /")]
    InvalidPath(String),
}

#[derive(Debug, Clone)]
pub(crate) struct StoredUser {
    pub name: String,
    pub user_id: String,
    pub arn: String,
    pub path: String,
    pub created_at: DateTime<Utc>,
    pub access: Access,
}

impl StoredUser {
    fn info(&self) -> UserInfo {
        UserInfo {
            name: self.name.clone(),
            user_id: self.user_id.clone(),
            arn: self.arn.clone(),
            created_at: self.created_at,
            access: self.access,
        }
    }
}

/// A key not yet usable: until `usable_at`, or for `rejections_left` more uses.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub usable_at: Option<Instant>,
    pub rejections_left: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct StoredKey {
    pub id: String,
    /// The owner's name as created (its case preserved).
    pub user: String,
    pub secret: Secret,
    pub status: KeyStatus,
    pub created_at: DateTime<Utc>,
    pub last_used: Option<LastUsed>,
    /// Creation order: `ListAccessKeys` lists in it.
    pub seq: u64,
    pub pending: Option<Pending>,
}

impl StoredKey {
    pub fn info(&self) -> KeyInfo {
        KeyInfo {
            access_key_id: self.id.clone(),
            user_name: self.user.clone(),
            status: self.status,
            created_at: self.created_at,
            last_used: self.last_used.clone(),
        }
    }

    fn credentials(&self) -> AwsCredentials {
        AwsCredentials {
            access_key_id: self.id.clone(),
            secret_access_key: self.secret.clone(),
        }
    }
}

/// Everything the simulated account holds. `Debug` never shows a secret.
#[derive(Debug, Clone)]
pub struct AwsState {
    account_id: String,
    /// By lower-cased name: IAM user names are unique regardless of case.
    users: BTreeMap<String, StoredUser>,
    keys: BTreeMap<String, StoredKey>,
    /// Each user's key ids in creation order, by lower-cased user name: a scan of every key
    /// per request made a world of 10,000 users answer in O(n).
    keys_by_user: HashMap<String, Vec<String>>,
    admin_key_id: String,
    /// The user [`AwsState::with_key`] adds to.
    current_user: String,
    propagation: Propagation,
    /// Every secret ever issued, deleted keys' included, for leak scans.
    issued: Vec<Secret>,
    next_seq: u64,
    rng: Rng,
    /// CloudTrail's event history, answered by LookupEvents (`super::cloudtrail`).
    trail: Vec<super::cloudtrail::TrailEvent>,
}

impl AwsState {
    /// An account (`123456789012`, say) holding only [`ADMIN_USER`], with [`Access::Admin`]
    /// and one active key: rekey's own credentials ([`AwsState::admin_credentials`]).
    pub fn new(account_id: impl Into<String>) -> Self {
        let mut state = AwsState {
            account_id: account_id.into(),
            users: BTreeMap::new(),
            keys: BTreeMap::new(),
            keys_by_user: HashMap::new(),
            admin_key_id: String::new(),
            current_user: ADMIN_USER.to_owned(),
            propagation: Propagation::Immediate,
            issued: Vec::new(),
            next_seq: 0,
            rng: Rng::from_entropy(),
            trail: Vec::new(),
        };
        state.insert_user(ADMIN_USER, Access::Admin);
        let key = state.insert_key(ADMIN_USER, &KeySpec::active(), None);
        state.admin_key_id = key.id;
        state
    }

    /// Declares a user with no permissions (or selects it, if it exists) and makes it the one
    /// [`AwsState::with_key`] and [`AwsState::with_access`] apply to.
    ///
    /// # Panics
    /// When `name` is not a valid IAM user name: a setup mistake, not a runtime condition.
    pub fn user(mut self, name: &str) -> Self {
        if let Err(e) = self.add_user(name, Access::None) {
            panic!("AwsState::user: {e}");
        }
        self.current_user = name.to_owned();
        self
    }

    /// Puts the current user under an IAM path (`/ci/bots/`): its ARN becomes
    /// `arn:aws:iam::<account>:user/ci/bots/<name>`.
    ///
    /// # Panics
    /// When `path` is not a valid IAM path (`/`, or `/` + segments + `/`).
    pub fn with_path(mut self, path: &str) -> Self {
        let user = self.current_user.clone();
        if let Err(e) = self.set_user_path(&user, path) {
            panic!("AwsState::with_path: {e}");
        }
        self
    }

    /// Moves a user to another IAM path (its ARN follows, its id does not change).
    pub fn set_user_path(&mut self, user: &str, path: &str) -> Result<(), SetupError> {
        if !valid_path(path) {
            return Err(SetupError::InvalidPath(path.to_owned()));
        }
        let account = self.account_id.clone();
        let Some(stored) = self.users.get_mut(&user.to_lowercase()) else {
            return Err(SetupError::NoSuchUser(user.to_owned()));
        };
        stored.path = path.to_owned();
        stored.arn = format!("arn:aws:iam::{account}:user{path}{}", stored.name);
        Ok(())
    }

    /// Sets what the current user may do.
    pub fn with_access(mut self, access: Access) -> Self {
        if let Some(user) = self.users.get_mut(&self.current_user.to_lowercase()) {
            user.access = access;
        }
        self
    }

    /// Gives the current user (the admin, before any [`AwsState::user`]) a key; read it back
    /// with [`AwsState::credentials_of`].
    ///
    /// # Panics
    /// When the user already has two keys: AWS can never be in that state.
    pub fn with_key(mut self, spec: KeySpec) -> Self {
        let user = self.current_user.clone();
        if let Err(e) = self.add_key(&user, spec) {
            panic!("AwsState::with_key: {e}");
        }
        self
    }

    pub fn with_propagation(mut self, propagation: Propagation) -> Self {
        self.propagation = propagation;
        self
    }

    pub fn set_propagation(&mut self, propagation: Propagation) {
        self.propagation = propagation;
    }

    /// Creates a user, or changes the access of the one that exists.
    pub fn add_user(&mut self, name: &str, access: Access) -> Result<UserInfo, SetupError> {
        if !valid_user_name(name) {
            return Err(SetupError::InvalidUserName(name.to_owned()));
        }
        if let Some(user) = self.users.get_mut(&name.to_lowercase()) {
            if access != Access::None {
                user.access = access;
            }
            return Ok(user.info());
        }
        Ok(self.insert_user(name, access).info())
    }

    /// Seeds `user` with a key, within IAM's quota.
    pub fn add_key(&mut self, user: &str, spec: KeySpec) -> Result<AwsCredentials, SetupError> {
        let Some(owner) = self.user_named(user) else {
            return Err(SetupError::NoSuchUser(user.to_owned()));
        };
        let owner = owner.name.clone();
        if self.key_count(&owner) >= MAX_KEYS_PER_USER {
            return Err(SetupError::TooManyKeys(owner));
        }
        if let Some(given) = &spec.credentials
            && self.keys.contains_key(&given.access_key_id)
        {
            return Err(SetupError::DuplicateKey(given.access_key_id.clone()));
        }
        Ok(self.insert_key(&owner, &spec, None).credentials())
    }

    /// Sets a key's status behind the API's back (someone acting in the console, say).
    pub fn set_key_status(&mut self, access_key_id: &str, status: KeyStatus) -> bool {
        match self.keys.get_mut(access_key_id) {
            Some(key) => {
                key.status = status;
                true
            }
            None => false,
        }
    }

    /// Deletes a key behind the API's back.
    pub fn remove_key(&mut self, access_key_id: &str) -> bool {
        self.delete_key(access_key_id).is_some()
    }

    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// rekey's own credentials: [`ADMIN_USER`]'s first key.
    pub fn admin_credentials(&self) -> AwsCredentials {
        match self.keys.get(&self.admin_key_id) {
            Some(key) => key.credentials(),
            // Deleted through the API: the id is still the admin's, and no longer works.
            None => AwsCredentials {
                access_key_id: self.admin_key_id.clone(),
                secret_access_key: Secret::new(""),
            },
        }
    }

    pub fn users(&self) -> Vec<UserInfo> {
        self.users.values().map(StoredUser::info).collect()
    }

    pub fn user_info(&self, name: &str) -> Option<UserInfo> {
        self.user_named(name).map(StoredUser::info)
    }

    /// `user`'s keys in creation order, with their status; empty for an unknown user.
    pub fn keys_of(&self, user: &str) -> Vec<KeyInfo> {
        self.stored_keys_of(user)
            .into_iter()
            .map(StoredKey::info)
            .collect()
    }

    pub fn key(&self, access_key_id: &str) -> Option<KeyInfo> {
        self.keys.get(access_key_id).map(StoredKey::info)
    }

    /// A live key's id and secret (the simulator keeps secrets: it has to check signatures).
    pub fn credentials(&self, access_key_id: &str) -> Option<AwsCredentials> {
        self.keys.get(access_key_id).map(StoredKey::credentials)
    }

    /// `user`'s live keys with their secrets, in creation order.
    pub fn credentials_of(&self, user: &str) -> Vec<AwsCredentials> {
        self.keys_of(user)
            .iter()
            .filter_map(|k| self.credentials(&k.access_key_id))
            .collect()
    }

    /// Every secret this account ever issued, deleted keys' included, so that a test can
    /// check that none leaked into a log, a report or a journal.
    pub fn issued_secrets(&self) -> Vec<Secret> {
        self.issued.clone()
    }

    pub fn propagation(&self) -> Propagation {
        self.propagation
    }

    /// Adds the records of a CloudTrail delivery (`{"Records": […]}`, as in S3) to the event
    /// history that LookupEvents answers from; returns how many were added.
    pub fn load_cloudtrail_records(&mut self, json: &str) -> Result<usize, String> {
        let events = super::cloudtrail::events_of_delivery(json)?;
        let n = events.len();
        self.trail.extend(events);
        Ok(n)
    }

    /// The event history LookupEvents answers from.
    pub fn trail_events(&self) -> &[super::cloudtrail::TrailEvent] {
        &self.trail
    }

    /// Case-insensitive, as IAM looks users up.
    pub(crate) fn user_named(&self, name: &str) -> Option<&StoredUser> {
        self.users.get(&name.to_lowercase())
    }

    pub(crate) fn stored_users(&self) -> impl Iterator<Item = &StoredUser> {
        self.users.values()
    }

    pub(crate) fn stored_key(&self, id: &str) -> Option<&StoredKey> {
        self.keys.get(id)
    }

    pub(crate) fn stored_key_mut(&mut self, id: &str) -> Option<&mut StoredKey> {
        self.keys.get_mut(id)
    }

    pub(crate) fn delete_key(&mut self, id: &str) -> Option<StoredKey> {
        let key = self.keys.remove(id)?;
        if let Some(ids) = self.keys_by_user.get_mut(&key.user.to_lowercase()) {
            ids.retain(|k| k != id);
        }
        Some(key)
    }

    pub(crate) fn key_count(&self, user: &str) -> usize {
        self.keys_by_user
            .get(&user.to_lowercase())
            .map_or(0, Vec::len)
    }

    /// `user`'s keys in creation order (user names compare regardless of case, as in IAM).
    pub(crate) fn stored_keys_of(&self, user: &str) -> Vec<&StoredKey> {
        self.keys_by_user
            .get(&user.to_lowercase())
            .into_iter()
            .flatten()
            .filter_map(|id| self.keys.get(id))
            .collect()
    }

    /// A key made by `CreateAccessKey`: created now, subject to the propagation setting.
    pub(crate) fn mint_key(&mut self, user: &str) -> StoredKey {
        let pending = match self.propagation {
            Propagation::Immediate => None,
            Propagation::Delay(d) => Some(Pending {
                usable_at: Instant::now().checked_add(d),
                rejections_left: 0,
            }),
            Propagation::Rejections(n) => Some(Pending {
                usable_at: None,
                rejections_left: n,
            }),
        };
        let spec = KeySpec::active().created_at(now_seconds());
        self.insert_key(user, &spec, pending)
    }

    /// A fresh request id, shaped like AWS's (a UUID).
    pub(crate) fn request_id(&mut self) -> String {
        fake::uuid(&mut self.rng)
    }

    fn insert_user(&mut self, name: &str, access: Access) -> &StoredUser {
        let user = StoredUser {
            name: name.to_owned(),
            user_id: format!(
                "AIDA{}",
                self.rng.string(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 17)
            ),
            arn: format!("arn:aws:iam::{}:user/{name}", self.account_id),
            path: "/".to_owned(),
            created_at: past_time(&mut self.rng),
            access,
        };
        self.users.entry(name.to_lowercase()).or_insert(user)
    }

    /// Stores a new key and returns a copy of it.
    fn insert_key(&mut self, user: &str, spec: &KeySpec, pending: Option<Pending>) -> StoredKey {
        let (id, secret) = match &spec.credentials {
            Some(given) => (given.access_key_id.clone(), given.secret_access_key.clone()),
            None => {
                let mut id = fake::aws_access_key_id(&mut self.rng);
                while self.keys.contains_key(&id) {
                    id = fake::aws_access_key_id(&mut self.rng);
                }
                (id, Secret::new(fake::aws_secret_access_key(&mut self.rng)))
            }
        };
        self.issued.push(secret.clone());
        let created_at = spec.created_at.unwrap_or_else(|| past_time(&mut self.rng));
        let key = StoredKey {
            id: id.clone(),
            user: user.to_owned(),
            secret,
            status: spec.status,
            created_at,
            last_used: spec.last_used.clone(),
            seq: self.next_seq,
            pending,
        };
        self.next_seq += 1;
        self.keys_by_user
            .entry(user.to_lowercase())
            .or_default()
            .push(id.clone());
        self.keys.insert(id, key.clone());
        key
    }
}

/// IAM's user name rule: 1 to 64 of letters, digits and `+=,.@_-`.
pub(crate) fn valid_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
}

/// IAM's path rule: `/`, or `/` + printable ASCII + `/`, at most 512 characters.
fn valid_path(path: &str) -> bool {
    (1..=512).contains(&path.len())
        && path.starts_with('/')
        && path.ends_with('/')
        && path.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Now, to the second: IAM's dates have no fractions.
pub(crate) fn now_seconds() -> DateTime<Utc> {
    let now = Utc::now();
    Utc.timestamp_opt(now.timestamp(), 0)
        .single()
        .unwrap_or(now)
}

/// A moment of 2022 before the incident window opened.
fn past_time(rng: &mut Rng) -> DateTime<Utc> {
    let start = Utc
        .with_ymd_and_hms(2022, 1, 3, 9, 0, 0)
        .single()
        .unwrap_or_default();
    start + Days::seconds(rng.below(340 * 24 * 3600) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_seeds_users_and_keys() {
        let state = AwsState::new("123456789012")
            .user("ci-deployer")
            .with_key(KeySpec::active())
            .with_key(KeySpec::inactive())
            .user("reader")
            .with_access(Access::OwnKeys);
        let keys = state.keys_of("ci-deployer");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].status, KeyStatus::Active);
        assert_eq!(keys[1].status, KeyStatus::Inactive);
        assert!(keys.iter().all(|k| k.access_key_id.starts_with("AKIA")));
        let creds = state.credentials_of("CI-Deployer");
        assert_eq!(creds.len(), 2);
        assert_eq!(creds[0].secret_access_key.expose().len(), 40);
        assert_eq!(
            state.user_info("ci-deployer").unwrap().arn,
            "arn:aws:iam::123456789012:user/ci-deployer"
        );
        assert_eq!(state.user_info("reader").unwrap().access, Access::OwnKeys);
        let pathed = AwsState::new("123456789012")
            .user("bot")
            .with_path("/ci/bots/");
        assert_eq!(
            pathed.user_info("bot").unwrap().arn,
            "arn:aws:iam::123456789012:user/ci/bots/bot"
        );
        let mut pathed = pathed;
        assert!(matches!(
            pathed.set_user_path("bot", "ci"),
            Err(SetupError::InvalidPath(_))
        ));
        let admin = state.admin_credentials();
        assert_eq!(
            state.key(&admin.access_key_id).unwrap().user_name,
            ADMIN_USER
        );
        // 1 admin key + 2 seeded.
        assert_eq!(state.issued_secrets().len(), 3);
        let debug = format!("{state:?}");
        for secret in state.issued_secrets() {
            assert!(!debug.contains(secret.expose()));
        }
    }

    #[test]
    fn quota_and_names_are_enforced() {
        let mut state = AwsState::new("123456789012").user("ci");
        state.add_key("ci", KeySpec::active()).unwrap();
        state.add_key("ci", KeySpec::active()).unwrap();
        assert_eq!(
            state.add_key("ci", KeySpec::active()).unwrap_err(),
            SetupError::TooManyKeys("ci".into())
        );
        assert!(matches!(
            state.add_key("nobody", KeySpec::active()),
            Err(SetupError::NoSuchUser(_))
        ));
        assert!(matches!(
            state.add_user("bad name", Access::None),
            Err(SetupError::InvalidUserName(_))
        ));
        // The same user whatever the case.
        state.add_user("CI", Access::None).unwrap();
        assert_eq!(state.users().len(), 2);

        let given = AwsCredentials {
            access_key_id: "AKIAIMPORTEDKEY00001".into(),
            secret_access_key: Secret::new("s".repeat(40)),
        };
        state.add_user("other", Access::None).unwrap();
        let imported = state
            .add_key("other", KeySpec::active().credentials(given.clone()))
            .unwrap();
        assert_eq!(imported.access_key_id, given.access_key_id);
        assert_eq!(
            state
                .credentials(&given.access_key_id)
                .unwrap()
                .secret_access_key
                .expose(),
            given.secret_access_key.expose()
        );
        assert_eq!(
            state
                .add_key("other", KeySpec::active().credentials(given.clone()))
                .unwrap_err(),
            SetupError::DuplicateKey(given.access_key_id)
        );
    }
}
