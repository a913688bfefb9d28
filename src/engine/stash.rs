//! The stash: where a minted secret waits, encrypted, between its mint (step 4) and the end
//! of its target (step 12), so that a crash after a mint never forces a second one (with AWS's
//! two keys per user, a second mint could deadlock the rotation).
//!
//! Rows live in the `stash` table of the journal database (`<state dir>/journal.sqlite`, 0600):
//! `(run, target, credential id, key id, nonce, ciphertext)`, one row per target of a run.
//! Each value is sealed with XChaCha20-Poly1305 under the [`StashKey`], with a fresh random
//! 24-byte nonce per write and associated data binding it to its run, target and credential id,
//! so a ciphertext moved to another row fails to open. The key id (a hash of the key, which
//! reveals nothing of it) tells "written with another key" apart from "tampered with".
//! `secure_delete` overwrites an erased row with zeros, and an erase truncates the write-ahead
//! log so no old copy of the ciphertext lingers there either.
//!
//! On S3 state each row is also the object `runs/<run>/stash/<target>.json` (the same sealed
//! bytes, base64, never plaintext), written before `put` returns and deleted before `erase`
//! returns, each after the target's earlier journal records are in S3.
//!
//! The plaintext is the [`Minted`] value as JSON, `{"v":1,"id":…,"fields":{name: base64}}`, and
//! exists only in memory, in buffers that are zeroed when dropped and sized up front so they
//! never reallocate (a reallocation would leave a copy behind). Field values are base64 inside
//! the JSON because base64 needs no JSON escapes: parsing then borrows them from the zeroing
//! buffer instead of unescaping them into a scratch buffer that nobody would wipe.
//!
//! ## The key
//!
//! [`StashKey::from_env_or_keyring`]: `REKEY_STASH_KEY` (base64 of 32 bytes) when set, which is
//! how CI provides it; otherwise the OS keyring entry `rekey`/`stash-key`, generated on first
//! use. A run minted under one key can only be resumed with that key, so CI must keep the same
//! `REKEY_STASH_KEY` for a run's lifetime.
//!
//! On Linux the keyring is the kernel's keyutils store. Checked with `keyctl` and strace on a
//! machine whose processes have no session keyring (Linux 6.18, `persistent_keyring_expiry`
//! 259200 s): the store alone does not give separate invocations the same key. It resolves
//! `@s` to the shared user-session keyring `_uid_ses.<uid>`, then links the persistent keyring
//! into `@s`, at which the kernel moves the thread to a new anonymous session keyring; the
//! store's next search of `_uid_ses.<uid>`, no longer possessed, fails with EACCES, and what it
//! stores goes to a session keyring that dies with the process, surviving only in the
//! persistent keyring `_persistent.<uid>`, which expires after 3 days unused. Private session
//! keyrings (`keyctl session`, systemd services, container runtimes) lose keys the same way.
//! So [`crate::credentials`] joins a new session keyring itself before the store looks (when
//! the thread is on the user-session keyring), links the user keyring `_uid.<uid>` into the
//! thread's session keyring as `pam_keyinit` does for login sessions, and links the stored key
//! into the user keyring: every process of the user then finds the same key until reboot
//! (`tests/stash.rs` checks this across processes and private sessions). A reboot loses it:
//! export it first (`rekey auth stash-key --export`) if a run must survive one.

use super::journal::{self, Journal, JournalError, RunId};
use super::state::records::{self, StashRow};
use crate::providers::Minted;
use crate::secret::Secret;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use zeroize::{Zeroize, Zeroizing};

/// Environment variable that carries the stash key in CI.
pub const STASH_KEY_ENV: &str = "REKEY_STASH_KEY";

/// Keyring entry (user name under service `rekey`) that holds the stash key on a workstation.
pub const STASH_KEY_ENTRY: &str = "stash-key";

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes of the key's hash stored with each row.
const KEY_ID_LEN: usize = 16;
const PLAINTEXT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StashKeyError {
    #[error(
        "{STASH_KEY_ENV} is set but empty: set it to the base64 of 32 random bytes \
         (`rekey auth stash-key --export` prints one), or unset it to use the OS keyring"
    )]
    EmptyEnv,
    /// The value never appears in the message: it is (meant to be) a key.
    #[error(
        "{source_name} is not a stash key: {problem}; a stash key is the base64 (standard or \
         URL-safe) of 32 random bytes, as `rekey auth stash-key --export` prints"
    )]
    Malformed {
        source_name: String,
        problem: String,
    },
    #[error(
        "no stash key: {STASH_KEY_ENV} is unset and the OS keyring is disabled \
         (REKEY_KEYRING_DISABLED); set {STASH_KEY_ENV}"
    )]
    KeyringDisabled,
    #[error(
        "no stash key: {STASH_KEY_ENV} is unset and the OS keyring failed ({0}); \
         set {STASH_KEY_ENV} to the base64 of 32 random bytes"
    )]
    Keyring(String),
    #[error(
        "the OS keyring accepted a new stash key but does not return it; \
         set {STASH_KEY_ENV} instead"
    )]
    NotPersisted,
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

/// Where a [`StashKey`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeySource {
    Env,
    /// The OS keyring; `created` when this call generated and stored it.
    Keyring {
        created: bool,
    },
    Generated,
}

/// The 32-byte key that seals the stash. Never printed: `Debug` shows only its fingerprint.
#[derive(Clone)]
pub struct StashKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    source: KeySource,
}

impl std::fmt::Debug for StashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StashKey")
            .field("fingerprint", &self.fingerprint())
            .field("source", &self.source)
            .finish()
    }
}

impl StashKey {
    /// A new random key (not stored anywhere).
    pub fn generate() -> Result<StashKey, StashKeyError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(&mut bytes[..]).map_err(|e| StashKeyError::Random(e.to_string()))?;
        Ok(StashKey {
            bytes,
            source: KeySource::Generated,
        })
    }

    /// `REKEY_STASH_KEY` when set, else the OS keyring entry `rekey`/`stash-key` (created on
    /// first use). `REKEY_KEYRING_DISABLED` turns the keyring off, as for rekey's tokens.
    pub fn from_env_or_keyring() -> Result<StashKey, StashKeyError> {
        if let Some(value) = std::env::var_os(STASH_KEY_ENV) {
            let value =
                Zeroizing::new(value.into_string().map_err(|_| StashKeyError::Malformed {
                    source_name: STASH_KEY_ENV.into(),
                    problem: "not UTF-8".into(),
                })?);
            if value.trim().is_empty() {
                return Err(StashKeyError::EmptyEnv);
            }
            let mut key = StashKey::from_base64(&value, STASH_KEY_ENV)?;
            key.source = KeySource::Env;
            return Ok(key);
        }
        if std::env::var_os("REKEY_KEYRING_DISABLED").is_some() {
            return Err(StashKeyError::KeyringDisabled);
        }
        StashKey::from_keyring_entry(STASH_KEY_ENTRY)
    }

    /// The key stored in keyring entry `rekey`/`entry`, generated and stored when absent.
    /// [`StashKey::from_env_or_keyring`] uses [`STASH_KEY_ENTRY`]; tests use their own entry.
    pub fn from_keyring_entry(entry: &str) -> Result<StashKey, StashKeyError> {
        let keyring =
            |e: crate::credentials::CredentialError| StashKeyError::Keyring(e.to_string());
        let source_name = || format!("the OS keyring entry rekey/{entry}");
        if let Some(stored) = crate::credentials::keyring_get(entry).map_err(keyring)? {
            let mut key = StashKey::from_base64(stored.expose(), &source_name())?;
            key.source = KeySource::Keyring { created: false };
            return Ok(key);
        }
        let key = StashKey::generate()?;
        crate::credentials::keyring_set(entry, &key.to_base64()).map_err(keyring)?;
        // Read it back: a store that silently drops the key would otherwise make every run's
        // stash unreadable to the next invocation. Two first uses racing each other both end
        // up with whichever key the keyring kept.
        let stored = crate::credentials::keyring_get(entry)
            .map_err(keyring)?
            .ok_or(StashKeyError::NotPersisted)?;
        let mut kept = StashKey::from_base64(stored.expose(), &source_name())?;
        kept.source = KeySource::Keyring {
            created: kept.bytes == key.bytes,
        };
        Ok(kept)
    }

    /// Parses the base64 (standard or URL-safe, padded or not) of exactly 32 bytes.
    /// `source_name` names where the text came from, for the error; the text itself is never
    /// part of an error.
    pub fn from_base64(text: &str, source_name: &str) -> Result<StashKey, StashKeyError> {
        let text = text.trim();
        let malformed = |problem: String| StashKeyError::Malformed {
            source_name: source_name.to_string(),
            problem,
        };
        // Room for more than 32 bytes, so that a too-long key is reported with its length.
        let mut buf = Zeroizing::new([0u8; 96]);
        let mut decoded = None;
        for engine in [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            if let Ok(n) = engine.decode_slice(text.as_bytes(), &mut buf[..]) {
                decoded = Some(n);
                break;
            }
        }
        let n = match decoded {
            Some(n) => n,
            None if text.len() > 128 => {
                return Err(malformed(format!("{} characters is too long", text.len())));
            }
            None => return Err(malformed("not base64".into())),
        };
        if n != KEY_LEN {
            return Err(malformed(format!("it decodes to {n} bytes, not {KEY_LEN}")));
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&buf[..KEY_LEN]);
        Ok(StashKey {
            bytes,
            source: KeySource::Env,
        })
    }

    /// The key as standard base64, for `rekey auth stash-key --export` (to put in CI's
    /// `REKEY_STASH_KEY`).
    pub fn to_base64(&self) -> Secret {
        let mut out = Zeroizing::new([0u8; 44]);
        let written = STANDARD
            .encode_slice(&self.bytes[..], &mut out[..])
            .unwrap_or(0);
        Secret::new(String::from_utf8_lossy(&out[..written]).into_owned())
    }

    /// A short public name for the key (hex of the start of its hash): safe to print, to tell
    /// two keys apart.
    pub fn fingerprint(&self) -> String {
        hex::encode(&self.key_id()[..8])
    }

    pub fn source(&self) -> KeySource {
        self.source
    }

    /// SHA-256 of a label and the key, truncated: identifies the key without revealing it.
    fn key_id(&self) -> [u8; KEY_ID_LEN] {
        let mut hasher = Sha256::new();
        hasher.update(b"rekey stash key id v1\0");
        hasher.update(&self.bytes[..]);
        let digest = hasher.finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        id
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StashError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("stash {}: {source}", path.display())]
    Database {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the stash entry of target {target} in run {run} was written with another key: \
         set {STASH_KEY_ENV} to the key of the run that minted it"
    )]
    WrongKey { run: String, target: String },
    #[error(
        "the stash entry of target {target} in run {run} does not decrypt although the key is \
         right: it was altered or moved from another row"
    )]
    Tampered { run: String, target: String },
    #[error(
        "the stash already holds credential {stashed} for target {target} in run {run}; \
         refusing to replace it with {new} (erase it first, after revoking one of them)"
    )]
    Occupied {
        run: String,
        target: String,
        stashed: String,
        new: String,
    },
    #[error("no run {0} in the journal")]
    UnknownRun(String),
    #[error("stash entry of target {target} in run {run}: {problem}")]
    Malformed {
        run: String,
        target: String,
        problem: String,
    },
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    #[error(
        "the OS keyring had no stash key, so a new one was made ({fingerprint}), but this state \
         directory's stash holds {entries} entr{} sealed with another key (was the keyring \
         cleared by a reboot, or is this another machine?); help: set {STASH_KEY_ENV} to the \
         key that sealed them (`rekey auth stash-key --export` where it is kept), then resume; \
         without it, the minted values are lost and only `rekey status` can say which \
         credentials to revoke by hand",
        if *entries == 1 { "y" } else { "ies" }
    )]
    KeyLost { entries: usize, fingerprint: String },
}

/// What the stash holds for one target, without the secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StashEntry {
    pub target: String,
    pub credential_id: String,
    pub created_at: Option<DateTime<Utc>>,
}

/// The encrypted stash of a state directory. `Send + Sync`, like the journal.
pub struct Stash {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// The journal of the same state (its connection is `conn`): on S3, what writes wait for.
    journal: Option<Journal>,
    cipher: XChaCha20Poly1305,
    key_id: [u8; KEY_ID_LEN],
}

impl std::fmt::Debug for Stash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stash").field("path", &self.path).finish()
    }
}

impl Stash {
    /// Opens the stash of `state_dir` (the journal database, created if needed). Entries of any
    /// key can be listed; only those written with `key` can be read.
    ///
    /// A key the keyring has just generated ([`KeySource::Keyring`] `created`) while rows
    /// sealed with another key exist is refused ([`StashError::KeyLost`]): the entry was lost
    /// (a reboot), and going on would strand those rows silently.
    pub fn open(state_dir: &Path, key: StashKey) -> Result<Stash, StashError> {
        if let Ok(super::state::StateLocation::S3(_)) = super::state::StateLocation::of(state_dir) {
            let source = key.source;
            let fingerprint = key.fingerprint();
            let stash = Stash::for_journal(Journal::open(state_dir)?, key);
            return stash.refuse_lost_key(&source, fingerprint);
        }
        let (conn, path) = journal::open_database(state_dir)?;
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&key.bytes[..]));
        let stash = Stash {
            conn: Arc::new(Mutex::new(conn)),
            path,
            journal: None,
            cipher,
            key_id: key.key_id(),
        };
        stash.refuse_lost_key(&key.source, key.fingerprint())
    }

    /// Refuses a key the keyring has just generated while entries sealed with another key
    /// exist (see [`Stash::open`]).
    fn refuse_lost_key(self, source: &KeySource, fingerprint: String) -> Result<Stash, StashError> {
        if *source == (KeySource::Keyring { created: true }) {
            let entries = self.sealed_with_other_keys()?;
            if entries > 0 {
                return Err(StashError::KeyLost {
                    entries,
                    fingerprint,
                });
            }
        }
        Ok(self)
    }

    /// How many entries were sealed with a key other than this stash's.
    fn sealed_with_other_keys(&self) -> Result<usize, StashError> {
        let n: i64 = self
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM stash WHERE key_id != ?1",
                params![&self.key_id[..]],
                |r| r.get(0),
            )
            .map_err(|e| self.db(e))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The stash of `journal`'s state, on the journal's own connection (and, on S3, its
    /// remote): a run opens its stash this way.
    pub fn for_journal(journal: Journal, key: StashKey) -> Stash {
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&key.bytes[..]));
        Stash {
            conn: journal.shared_connection(),
            path: journal.path().to_path_buf(),
            journal: Some(journal),
            cipher,
            key_id: key.key_id(),
        }
    }

    /// Stores the minted credential of `target` in `run`. Storing the same credential again
    /// replaces it (a resumed mint step); a different credential is refused, because losing the
    /// stashed one would orphan it.
    pub fn put(&self, run: &RunId, target: &str, minted: &Minted) -> Result<(), StashError> {
        if let Some(stashed) = self.credential_id(run, target)?
            && stashed != minted.id
        {
            return Err(StashError::Occupied {
                run: run.to_string(),
                target: target.to_string(),
                stashed,
                new: minted.id.clone(),
            });
        }
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| StashError::Random(e.to_string()))?;
        let mut buffer = encode_plaintext(minted);
        let aad = associated_data(run, target, &minted.id);
        self.cipher
            .encrypt_in_place(XNonce::from_slice(&nonce), &aad, &mut *buffer)
            .map_err(|_| self.malformed(run, target, "encryption failed"))?;
        let created_at = journal::timestamp(Utc::now());
        let row = StashRow {
            run: run.to_string(),
            target: target.to_string(),
            credential_id: minted.id.clone(),
            key_id: self.key_id.to_vec(),
            nonce: nonce.to_vec(),
            ciphertext: buffer.to_vec(),
            created_at: created_at.clone(),
        };
        // On S3 the sealed value goes on the target's write chain, after its records and
        // before the next (the mint's done), without waiting: the next intent (the write's, or
        // a rollback's) waits for it, so no value reaches a place before S3 holds it sealed,
        // and S3 never shows the mint done without the stash. A crash before it lands leaves
        // an interrupted mint, which resume resolves by deleting the orphan.
        let remote = match &self.journal {
            Some(journal) => journal.writable_remote()?,
            None => None,
        };
        if let Some(remote) = remote {
            remote.enqueue_put(
                run.as_str(),
                target,
                records::stash_key(run.as_str(), target),
                records::stash_body(&row),
            );
        }
        self.conn()
            .execute(
                "INSERT INTO stash (run_id, target, credential_id, key_id, nonce, ciphertext,
                                    created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (run_id, target) DO UPDATE SET
                     credential_id = excluded.credential_id, key_id = excluded.key_id,
                     nonce = excluded.nonce, ciphertext = excluded.ciphertext,
                     created_at = excluded.created_at",
                params![
                    run.as_str(),
                    target,
                    minted.id,
                    &self.key_id[..],
                    &nonce[..],
                    &buffer[..],
                    created_at
                ],
            )
            .map_err(|e| {
                if journal::is_foreign_key_violation(&e) {
                    StashError::UnknownRun(run.to_string())
                } else {
                    self.db(e)
                }
            })?;
        Ok(())
    }

    /// The credential stashed for `target` in `run`, decrypted.
    pub fn get(&self, run: &RunId, target: &str) -> Result<Option<Minted>, StashError> {
        let row = self
            .conn()
            .query_row(
                "SELECT credential_id, key_id, nonce, ciphertext FROM stash
                 WHERE run_id = ?1 AND target = ?2",
                params![run.as_str(), target],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.db(e))?;
        let Some((credential_id, key_id, nonce, ciphertext)) = row else {
            return Ok(None);
        };
        if key_id != self.key_id {
            return Err(StashError::WrongKey {
                run: run.to_string(),
                target: target.to_string(),
            });
        }
        if nonce.len() != NONCE_LEN || ciphertext.len() < TAG_LEN {
            return Err(self.tampered(run, target));
        }
        // Decrypted in place in a buffer that is zeroed on drop and never grows.
        let mut buffer = Zeroizing::new(ciphertext);
        let aad = associated_data(run, target, &credential_id);
        self.cipher
            .decrypt_in_place(XNonce::from_slice(&nonce), &aad, &mut *buffer)
            .map_err(|_| self.tampered(run, target))?;
        let minted =
            decode_plaintext(&buffer).map_err(|problem| self.malformed(run, target, &problem))?;
        if minted.id != credential_id {
            return Err(self.tampered(run, target));
        }
        Ok(Some(minted))
    }

    /// Whether something is stashed for `target` in `run` (whatever the key).
    pub fn contains(&self, run: &RunId, target: &str) -> Result<bool, StashError> {
        Ok(self.credential_id(run, target)?.is_some())
    }

    /// The id of the credential stashed for `target` in `run`, without decrypting anything.
    pub fn credential_id(&self, run: &RunId, target: &str) -> Result<Option<String>, StashError> {
        self.conn()
            .query_row(
                "SELECT credential_id FROM stash WHERE run_id = ?1 AND target = ?2",
                params![run.as_str(), target],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db(e))
    }

    /// What is stashed for `run`, by target, without decrypting anything: what a resume has to
    /// finish, or an abandoned run left behind.
    pub fn entries(&self, run: &RunId) -> Result<Vec<StashEntry>, StashError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT target, credential_id, created_at FROM stash WHERE run_id = ?1
                 ORDER BY target",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([run.as_str()], |r| {
                Ok(StashEntry {
                    target: r.get(0)?,
                    credential_id: r.get(1)?,
                    created_at: journal::parse_timestamp(&r.get::<_, String>(2)?),
                })
            })
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }

    /// Removes what is stashed for `target` in `run` (absent is fine), overwriting it on disk.
    pub fn erase(&self, run: &RunId, target: &str) -> Result<(), StashError> {
        // On S3 the erase goes on the target's write chain, after the records before it (the
        // `done` record first, as step 12 wants) but without waiting for S3: nothing that
        // follows needs the value gone, the run's end waits for the chain, and a crash before
        // the deletion leaves the sealed value to the next invocation, which erases it for a
        // finished target as it does locally.
        let on_s3 = match &self.journal {
            Some(journal) => journal.delete_after_records(
                run,
                target,
                records::stash_key(run.as_str(), target),
            )?,
            None => false,
        };
        if on_s3 {
            self.conn()
                .execute(
                    "DELETE FROM stash WHERE run_id = ?1 AND target = ?2",
                    params![run.as_str(), target],
                )
                .map_err(|e| self.db(e))?;
            return Ok(());
        }
        let conn = self.conn();
        let erased = conn
            .execute(
                "DELETE FROM stash WHERE run_id = ?1 AND target = ?2",
                params![run.as_str(), target],
            )
            .map_err(|e| self.db(e))?;
        if erased > 0 {
            // secure_delete zeroed the row in the page, but the write-ahead log still holds
            // earlier copies of that page with the ciphertext. Checkpoint and truncate the log.
            // A reader in another process (`rekey status`) can make this a no-op for now; the
            // next erase or checkpoint catches up, and the ciphertext is useless without the
            // key anyway.
            let busy = conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map_err(|e| self.db(e))?;
            if busy != 0 {
                tracing::debug!("stash erase: the write-ahead log is in use; not truncated yet");
            }
        }
        Ok(())
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // SQLite rolls back an unfinished transaction itself, so a poisoned lock is usable.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn db(&self, source: rusqlite::Error) -> StashError {
        StashError::Database {
            path: self.path.clone(),
            source,
        }
    }

    fn tampered(&self, run: &RunId, target: &str) -> StashError {
        StashError::Tampered {
            run: run.to_string(),
            target: target.to_string(),
        }
    }

    fn malformed(&self, run: &RunId, target: &str, problem: &str) -> StashError {
        StashError::Malformed {
            run: run.to_string(),
            target: target.to_string(),
            problem: problem.to_string(),
        }
    }
}

/// Binds a ciphertext to its row: length-prefixed, so no two (run, target, id) triples encode
/// alike.
fn associated_data(run: &RunId, target: &str, credential_id: &str) -> Vec<u8> {
    let mut aad = b"rekey stash v1".to_vec();
    for part in [run.as_str(), target, credential_id] {
        aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// `{"v":1,"id":<json>,"fields":{<json name>:"<base64>",…}}` in a zeroing buffer with room for
/// the authentication tag, so that neither writing nor encrypting reallocates it.
fn encode_plaintext(minted: &Minted) -> Zeroizing<Vec<u8>> {
    // Ids and field names are public; serde_json escapes them as JSON requires.
    let json = |s: &str| serde_json::Value::from(s).to_string();
    let id = json(&minted.id);
    let names: Vec<String> = minted.fields.keys().map(|k| json(k)).collect();
    let values_len: usize = minted
        .fields
        .values()
        .map(|v| base64::encoded_len(v.expose().len(), true).unwrap_or(0))
        .sum();
    let capacity = 32 + id.len() + names.iter().map(|n| n.len() + 4).sum::<usize>() + values_len;
    let mut out = Zeroizing::new(Vec::with_capacity(capacity + TAG_LEN));
    out.extend_from_slice(format!("{{\"v\":{PLAINTEXT_VERSION},\"id\":").as_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b",\"fields\":{");
    for (i, (name, value)) in names.iter().zip(minted.fields.values()).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b":\"");
        let start = out.len();
        let len = base64::encoded_len(value.expose().len(), true).unwrap_or(0);
        out.resize(start + len, 0);
        let written = STANDARD
            .encode_slice(value.expose().as_bytes(), &mut out[start..])
            .unwrap_or(0);
        out.truncate(start + written);
        out.push(b'"');
    }
    out.extend_from_slice(b"}}");
    out
}

/// The plaintext's shape; every string borrows from the decrypted buffer.
#[derive(serde::Deserialize)]
struct Plaintext<'a> {
    v: u32,
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    fields: BTreeMap<std::borrow::Cow<'a, str>, &'a str>,
}

fn decode_plaintext(bytes: &[u8]) -> Result<Minted, String> {
    // serde_json's messages quote positions and expectations, not input text, but a base64
    // value containing an escape fails on `&str` borrowing: say no more than "not valid".
    let plain: Plaintext<'_> = serde_json::from_slice(bytes)
        .map_err(|_| "the decrypted value is not valid".to_string())?;
    if plain.v != PLAINTEXT_VERSION {
        return Err(format!("unknown stash format version {}", plain.v));
    }
    let mut fields = BTreeMap::new();
    for (name, encoded) in plain.fields {
        let mut decoded = Zeroizing::new(vec![0u8; encoded.len()]);
        let n = STANDARD
            .decode_slice(encoded.as_bytes(), &mut decoded[..])
            .map_err(|_| format!("field {name} is not base64"))?;
        decoded.truncate(n);
        if std::str::from_utf8(&decoded).is_err() {
            return Err(format!("field {name} is not UTF-8"));
        }
        // Moves the allocation into the String (no copy); the Secret zeroes it on drop.
        let value = match String::from_utf8(std::mem::take(&mut *decoded)) {
            Ok(value) => value,
            Err(e) => {
                e.into_bytes().zeroize();
                return Err(format!("field {name} is not UTF-8"));
            }
        };
        fields.insert(name.into_owned(), Secret::new(value));
    }
    Ok(Minted {
        id: plain.id.into_owned(),
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minted() -> Minted {
        let mut fields = BTreeMap::new();
        fields.insert("access_key_id".to_string(), Secret::new("AKIAEXAMPLE"));
        fields.insert(
            "secret_access_key".to_string(),
            Secret::new("wJalr/K7MDENG+bPxRfi\"quoted\"\n\u{e9}"),
        );
        Minted {
            id: "AKIA\"EXAMPLE".into(),
            fields,
        }
    }

    #[test]
    fn plaintext_round_trips_without_reallocating() {
        let m = minted();
        let buf = encode_plaintext(&m);
        assert!(buf.capacity() >= buf.len() + TAG_LEN);
        assert!(
            !buf.windows(11).any(|w| w == b"wJalr/K7MDE"),
            "values are base64"
        );
        let back = decode_plaintext(&buf).unwrap();
        assert_eq!(back.id, m.id);
        assert_eq!(back.fields.len(), 2);
        for (k, v) in &m.fields {
            assert_eq!(back.fields[k].expose(), v.expose());
        }
    }

    #[test]
    fn associated_data_is_unambiguous() {
        let r = RunId::from("r1".to_string());
        assert_ne!(
            associated_data(&r, "ab", "c"),
            associated_data(&r, "a", "bc")
        );
    }

    #[test]
    fn key_parses_every_base64_flavour_and_prints_back() {
        let key = StashKey::generate().unwrap();
        let b64 = key.to_base64();
        assert_eq!(b64.expose().len(), 44);
        let raw = STANDARD.decode(b64.expose()).unwrap();
        for text in [
            STANDARD.encode(&raw),
            URL_SAFE.encode(&raw),
            STANDARD_NO_PAD.encode(&raw),
            URL_SAFE_NO_PAD.encode(&raw),
            format!("  {}\n", STANDARD.encode(&raw)),
        ] {
            let parsed = StashKey::from_base64(&text, "test").unwrap();
            assert_eq!(parsed.fingerprint(), key.fingerprint());
        }
        assert!(!format!("{key:?}").contains(b64.expose()));
    }
}
