//! rekey's own credentials (the tokens it uses to read and write CircleCI, GitHub…): from the
//! environment, or from the OS keyring where `rekey auth set` stored them. Never from argv.
//!
//! The keyring is keyring-core with the platform's store: the kernel keyutils store on Linux
//! (available headless; in memory, so it lasts until reboot), the Keychain on macOS, the
//! Credential Manager on Windows. Other parts of rekey keep their own entries under the same
//! service through [`keyring_get`] and [`keyring_set`] (the stash key, `crate::engine::stash`).
//!
//! On Linux the store puts a key in the calling thread's session keyring and links it into the
//! user's persistent keyring. Two things go wrong without help (see [`keyutils`]): in a process
//! without a session keyring, the store resolves `@s` to the shared user-session keyring and
//! then, by linking the persistent keyring, makes the kernel move the thread to a new anonymous
//! session keyring, so the store searches a keyring the thread no longer possesses and is
//! refused (EACCES) every key; and a key stored in a session keyring that dies with its process
//! or session outlives it only in the persistent keyring, which expires after days unused. So,
//! before each entry, a thread on the user-session keyring joins a new session keyring itself,
//! the user keyring is linked into the thread's session keyring (as `pam_keyinit` does for login
//! sessions), and a stored key is linked into the user keyring, where every process of the user
//! finds it until reboot.

use crate::secret::Secret;

/// Keyring service name under which every rekey credential is stored.
const SERVICE: &str = "rekey";

/// A credential rekey knows how to find: its keyring entry name and its environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    Circleci,
    Github,
}

impl Service {
    pub fn env_var(self) -> &'static str {
        match self {
            Service::Circleci => "CIRCLECI_TOKEN",
            Service::Github => "GITHUB_TOKEN",
        }
    }

    fn entry_name(self) -> &'static str {
        match self {
            Service::Circleci => "circleci",
            Service::Github => "github",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("no {service} token: set {env} or run `rekey auth set {name}`")]
    Missing {
        service: &'static str,
        env: &'static str,
        name: &'static str,
    },
    #[error("OS keyring: {0}")]
    Keyring(String),
}

fn keyring_entry(service: Service) -> Result<keyring_core::Entry, CredentialError> {
    named_entry(service.entry_name())
}

/// The keyring entry `name` of service `rekey`. On Linux the thread's session keyring is
/// prepared first; keyrings belong to a thread, so the entry is used on the thread that built it.
fn named_entry(name: &str) -> Result<keyring_core::Entry, CredentialError> {
    install_platform_store()?;
    #[cfg(target_os = "linux")]
    keyutils::prepare_session();
    keyring_core::Entry::new(SERVICE, name).map_err(|e| CredentialError::Keyring(e.to_string()))
}

/// The value of keyring entry `name` (service `rekey`), `None` when there is none.
pub fn keyring_get(name: &str) -> Result<Option<Secret>, CredentialError> {
    match named_entry(name)?.get_password() {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(Secret::new(value))),
        Err(keyring_core::Error::NoEntry) => Ok(None),
        Err(e) => Err(CredentialError::Keyring(e.to_string())),
    }
}

/// Stores `value` in keyring entry `name` (service `rekey`), replacing any previous value.
pub fn keyring_set(name: &str, value: &Secret) -> Result<(), CredentialError> {
    named_entry(name)?
        .set_password(value.expose())
        .map_err(|e| CredentialError::Keyring(e.to_string()))?;
    #[cfg(target_os = "linux")]
    keyutils::pin_in_user_keyring(&keyutils::description(SERVICE, name));
    Ok(())
}

/// Removes keyring entry `name` (service `rekey`); absent is fine.
pub fn keyring_delete(name: &str) -> Result<(), CredentialError> {
    match named_entry(name)?.delete_credential() {
        Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
        Err(e) => Err(CredentialError::Keyring(e.to_string())),
    }
}

fn install_platform_store() -> Result<(), CredentialError> {
    static INSTALLED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            #[cfg(target_os = "linux")]
            let store = linux_keyutils_keyring_store::Store::new().map_err(|e| e.to_string())?;
            #[cfg(target_os = "macos")]
            let store =
                apple_native_keyring_store::keychain::Store::new().map_err(|e| e.to_string())?;
            #[cfg(target_os = "windows")]
            let store = windows_native_keyring_store::Store::new().map_err(|e| e.to_string())?;
            keyring_core::set_default_store(store);
            Ok(())
        })
        .clone()
        .map_err(CredentialError::Keyring)
}

/// The token for `service`: its environment variable first, then the keyring.
pub fn token(service: Service) -> Result<Secret, CredentialError> {
    if let Ok(value) = std::env::var(service.env_var())
        && !value.trim().is_empty()
    {
        return Ok(Secret::new(value.trim()));
    }
    let missing = || CredentialError::Missing {
        service: service.entry_name(),
        env: service.env_var(),
        name: service.entry_name(),
    };
    // Tests and CI set this so that a developer's own stored token is never picked up.
    if std::env::var_os("REKEY_KEYRING_DISABLED").is_some() {
        return Err(missing());
    }
    match keyring_entry(service).and_then(|e| {
        e.get_password()
            .map_err(|e| CredentialError::Keyring(e.to_string()))
    }) {
        Ok(value) if !value.is_empty() => Ok(Secret::new(value)),
        _ => Err(missing()),
    }
}

/// Stores `value` in the OS keyring for `service`.
pub fn store(service: Service, value: &Secret) -> Result<(), CredentialError> {
    keyring_set(service.entry_name(), value)
}

/// Removes the keyring entry of `service` (absent is fine).
pub fn forget(service: Service) -> Result<(), CredentialError> {
    keyring_delete(service.entry_name())
}

/// Whether a keyring entry exists for `service` (its value is not returned).
pub fn stored(service: Service) -> bool {
    keyring_entry(service)
        .and_then(|e| {
            e.get_password()
                .map_err(|e| CredentialError::Keyring(e.to_string()))
        })
        .is_ok()
}

/// The Linux kernel keyrings, through `keyctl(2)` directly, for what the keyutils store does not
/// do: give the thread a session keyring it keeps possessing, make the user keyring reachable
/// from it, and keep a stored key in the user keyring. All best effort: on failure the store's
/// own behaviour remains, and the reason goes to the debug log.
///
/// Checked with `keyctl` and strace on Linux 6.18 in processes without a session keyring: the
/// store's `KEYCTL_GET_PERSISTENT` on `@s` replaces the user-session keyring `_uid_ses.<uid>`
/// with a new anonymous `_ses` for the thread, after the store has resolved `@s` to
/// `_uid_ses.<uid>`; its next `KEYCTL_SEARCH` of that keyring, no longer possessed, fails with
/// EACCES on keys that grant search only to possessors (the default).
///
/// Keyrings are per thread (they are part of the thread's credentials), so these calls act on
/// the calling thread, which is the thread that then uses the entry.
#[cfg(target_os = "linux")]
pub mod keyutils {
    use libc::c_long;
    use std::ffi::CString;

    // From <linux/keyctl.h>; stable kernel ABI.
    const KEYCTL_GET_KEYRING_ID: c_long = 0;
    const KEYCTL_JOIN_SESSION_KEYRING: c_long = 1;
    const KEYCTL_LINK: c_long = 8;
    const KEYCTL_SEARCH: c_long = 10;
    const KEY_SPEC_SESSION_KEYRING: c_long = -3;
    const KEY_SPEC_USER_KEYRING: c_long = -4;
    const KEY_SPEC_USER_SESSION_KEYRING: c_long = -5;

    /// The keyutils description the store gives entry `user` of `service` (its default
    /// configuration: prefix `keyring:`, divider `@`, no suffix).
    pub fn description(service: &str, user: &str) -> String {
        format!("keyring:{user}@{service}")
    }

    fn keyctl(
        op: c_long,
        a2: c_long,
        a3: c_long,
        a4: c_long,
        a5: c_long,
    ) -> std::io::Result<c_long> {
        // SAFETY: keyctl(2) reads only integer arguments for the operations used here, except
        // KEYCTL_SEARCH, whose pointer arguments are NUL-terminated strings the caller keeps
        // alive for the duration of the call, and KEYCTL_JOIN_SESSION_KEYRING, called with a
        // null name. It writes no memory of ours.
        let r = unsafe { libc::syscall(libc::SYS_keyctl, op, a2, a3, a4, a5) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    /// The serial of this thread's session keyring, never creating one: a thread without one is
    /// given the user-session keyring, which all session-less processes of the user share. (A
    /// lookup that may create, as `add_key` or `KEYCTL_GET_PERSISTENT` on `@s` do, gives such a
    /// thread a new anonymous session keyring instead, whose keys vanish with the process.)
    pub fn session_keyring() -> std::io::Result<c_long> {
        keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0, 0, 0)
    }

    /// Prepares the thread's session keyring for the store: one the thread keeps possessing,
    /// with the user keyring linked into it.
    ///
    /// A thread on the shared user-session keyring (every process without a login session)
    /// joins a new anonymous session keyring first: the kernel would move it to one anyway at
    /// the store's `KEYCTL_GET_PERSISTENT`, but only after the store resolved `@s`; joining now
    /// makes the store resolve `@s` to the keyring the thread will have. The new keyring dies
    /// with the process, which is why what rekey stores is pinned in the user keyring.
    ///
    /// Linking the user keyring into the session keyring lets the store's searches (from the
    /// session keyring) reach keys pinned there, as possessed. Already linked (login sessions)
    /// leaves it unchanged. Processes of the user can name the user keyring anyway, so the link
    /// grants them nothing new.
    pub fn prepare_session() {
        let mut session = match session_keyring() {
            Ok(id) => id,
            Err(e) => {
                tracing::debug!(error = %e, "no session keyring; the keyring store will say why");
                return;
            }
        };
        let user_session = keyctl(
            KEYCTL_GET_KEYRING_ID,
            KEY_SPEC_USER_SESSION_KEYRING,
            0,
            0,
            0,
        );
        if user_session.is_ok_and(|id| id == session) {
            match keyctl(KEYCTL_JOIN_SESSION_KEYRING, 0, 0, 0, 0) {
                Ok(id) => session = id,
                Err(e) => tracing::debug!(error = %e, "could not join a new session keyring"),
            }
        }
        if let Err(e) = keyctl(KEYCTL_LINK, KEY_SPEC_USER_KEYRING, session, 0, 0) {
            tracing::debug!(error = %e, "could not link the user keyring into the session keyring");
        }
    }

    /// Links the key `description`, just stored in the session keyring, into the user keyring,
    /// where it outlives this session and the persistent keyring's expiry, until reboot.
    pub fn pin_in_user_keyring(description: &str) {
        let (Ok(kind), Ok(desc)) = (CString::new("user"), CString::new(description)) else {
            return;
        };
        let key = session_keyring().and_then(|session| {
            keyctl(
                KEYCTL_SEARCH,
                session,
                kind.as_ptr() as c_long,
                desc.as_ptr() as c_long,
                0,
            )
        });
        match key.and_then(|key| keyctl(KEYCTL_LINK, key, KEY_SPEC_USER_KEYRING, 0, 0)) {
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "could not link the key into the user keyring"),
        }
    }

    /// Whether the user keyring itself holds `description` (for tests and diagnostics).
    pub fn in_user_keyring(description: &str) -> bool {
        let (Ok(kind), Ok(desc)) = (CString::new("user"), CString::new(description)) else {
            return false;
        };
        keyctl(
            KEYCTL_SEARCH,
            KEY_SPEC_USER_KEYRING,
            kind.as_ptr() as c_long,
            desc.as_ptr() as c_long,
            0,
        )
        .is_ok()
    }
}
