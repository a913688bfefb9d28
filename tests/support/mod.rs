//! Shared helpers of the integration tests: test doubles that run as real servers (moto), the
//! provider conformance suite, the world in which the `rekey` binary is driven end to end
//! (`world`), and capture of log output to scan it for secrets.
//!
//! Each test binary includes this folder with `mod support;` and uses only part of it, hence
//! the `dead_code` allowance.
#![allow(dead_code)]

pub mod conformance;
pub mod moto;
pub mod s3proxy;
pub mod trail;
pub mod world;

use std::io::Write;
use std::sync::{Arc, Mutex};

/// Every log line emitted (at any level, TRACE included) on the current thread while the
/// capture is alive. Tests on a current-thread runtime see everything their futures log,
/// including what the AWS SDK and hyper log from tasks on that runtime.
pub struct LogCapture {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl LogCapture {
    pub fn start() -> Self {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = SharedBuffer(buffer.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        LogCapture {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    pub fn text(&self) -> String {
        let bytes = self.buffer.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[derive(Clone)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Fails the test if `haystack` contains any of `secrets`, without printing the secret.
pub fn assert_no_secret(what: &str, haystack: &str, secrets: &[&str]) {
    for (i, secret) in secrets.iter().enumerate() {
        assert!(!secret.is_empty(), "secret #{i} to look for is empty");
        if let Some(at) = haystack.find(secret) {
            panic!(
                "{what} contains secret #{i} at byte {at} (of {} bytes)",
                haystack.len()
            );
        }
    }
}
