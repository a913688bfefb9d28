//! rekey's own credentials (the tokens it uses to read and write CircleCI, GitHub…): from the
//! environment, or from the OS keyring where `rekey auth set` stored them. Never from argv.
//!
//! The keyring is keyring-core with the platform's store: the kernel keyutils store on Linux
//! (available headless; in memory, so it lasts until reboot), the Keychain on macOS, the
//! Credential Manager on Windows.

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
    install_platform_store()?;
    keyring_core::Entry::new(SERVICE, service.entry_name())
        .map_err(|e| CredentialError::Keyring(e.to_string()))
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
    if let Ok(value) = std::env::var(service.env_var()) {
        if !value.trim().is_empty() {
            return Ok(Secret::new(value.trim()));
        }
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
    keyring_entry(service)?
        .set_password(value.expose())
        .map_err(|e| CredentialError::Keyring(e.to_string()))
}

/// Removes the keyring entry of `service` (absent is fine).
pub fn forget(service: Service) -> Result<(), CredentialError> {
    match keyring_entry(service)?.delete_credential() {
        Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
        Err(e) => Err(CredentialError::Keyring(e.to_string())),
    }
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
