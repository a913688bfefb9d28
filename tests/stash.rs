//! The stash (encrypted minted values), its key (environment or OS keyring), and the state lock.
//!
//! Child processes re-run this test binary with `REKEY_TEST_HELPER` naming what to do (see
//! [`child_process_helper`]): environment variables then apply to the child only, the lock is
//! held by another process, and keyring lookups happen in fresh processes as separate `rekey`
//! invocations would.

use rekey::engine::journal::{Journal, RunId};
use rekey::engine::lock::{LockError, StateLock};
use rekey::engine::stash::{KeySource, Stash, StashError, StashKey, StashKeyError};
use rekey::providers::Minted;
use rekey::secret::Secret;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

const PLAN: &str = "kind: RotationPlan\n";

/// A value no other test writes, so finding it on disk can only mean it leaked.
fn unique(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).unwrap();
    format!("{prefix}{}", hex::encode(bytes))
}

fn minted(id: &str, secret: &str) -> Minted {
    let mut fields = BTreeMap::new();
    fields.insert("access_key_id".to_string(), Secret::new(id));
    fields.insert("secret_access_key".to_string(), Secret::new(secret));
    Minted {
        id: id.to_string(),
        fields,
    }
}

fn assert_same(a: &Minted, b: &Minted) {
    assert_eq!(a.id, b.id);
    let values = |m: &Minted| {
        m.fields
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(values(a), values(b));
}

/// A state directory with a journal and one run in it.
fn setup() -> (tempfile::TempDir, Journal, RunId) {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let run = journal.create_run("p", "p.yaml", PLAN).unwrap();
    (dir, journal, run)
}

#[test]
fn put_get_erase_round_trip() {
    let (dir, journal, run) = setup();
    let stash = Stash::open(dir.path(), StashKey::generate().unwrap()).unwrap();
    let secret = unique("wJalrXUtnFEMI/K7MDENG+");
    let value = minted("AKIAROUNDTRIP", &secret);

    assert!(stash.get(&run, "aws").unwrap().is_none());
    assert!(!stash.contains(&run, "aws").unwrap());
    stash.put(&run, "aws", &value).unwrap();
    assert!(stash.contains(&run, "aws").unwrap());
    assert_same(&stash.get(&run, "aws").unwrap().unwrap(), &value);
    assert_eq!(
        stash.credential_id(&run, "aws").unwrap().as_deref(),
        Some("AKIAROUNDTRIP")
    );
    let entries = stash.entries(&run).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (
            entries[0].target.as_str(),
            entries[0].credential_id.as_str()
        ),
        ("aws", "AKIAROUNDTRIP")
    );

    // A resumed mint stashing the same credential again is fine; another credential is not.
    stash.put(&run, "aws", &value).unwrap();
    let err = stash
        .put(&run, "aws", &minted("AKIAOTHER", "x"))
        .unwrap_err();
    assert!(matches!(err, StashError::Occupied { .. }), "{err:?}");
    assert_same(&stash.get(&run, "aws").unwrap().unwrap(), &value);

    // Another target of the same run, and the same target of another run, are separate.
    let other_run = journal.create_run("p", "p.yaml", PLAN).unwrap();
    stash
        .put(&other_run, "aws", &minted("AKIASECOND", "s2"))
        .unwrap();
    stash
        .put(
            &run,
            "gcp",
            &minted("key-1", "{\"private_key\": \"-----BEGIN\\n\"}"),
        )
        .unwrap();
    assert_eq!(
        stash.get(&other_run, "aws").unwrap().unwrap().id,
        "AKIASECOND"
    );

    // Survives a new process (here: new connections).
    drop(stash);
    stash_survives_reopen(dir.path(), &run, &value);

    let unknown = RunId::from("r20000101-000000-0000".to_string());
    let stash = Stash::open(dir.path(), StashKey::generate().unwrap()).unwrap();
    assert!(matches!(
        stash.put(&unknown, "aws", &value),
        Err(StashError::UnknownRun(_))
    ));
}

fn stash_survives_reopen(dir: &Path, run: &RunId, value: &Minted) {
    let key = StashKey::generate().unwrap();
    let stash = Stash::open(dir, key.clone()).unwrap();
    stash.put(run, "reopen", value).unwrap();
    drop(stash);
    let stash = Stash::open(dir, key).unwrap();
    assert_same(&stash.get(run, "reopen").unwrap().unwrap(), value);
    stash.erase(run, "reopen").unwrap();
    assert!(stash.get(run, "reopen").unwrap().is_none());
    assert!(!stash.contains(run, "reopen").unwrap());
    stash.erase(run, "reopen").unwrap();
}

#[test]
fn secrets_never_reach_the_files() {
    let (dir, journal, run) = setup();
    let stash = Stash::open(dir.path(), StashKey::generate().unwrap()).unwrap();
    let secret = unique("SECRETVALUE");
    let keep = unique("KEPTSECRET");
    stash
        .put(&run, "aws", &minted("AKIASCAN", &secret))
        .unwrap();
    stash
        .put(&run, "other", &minted("AKIAKEEP", &keep))
        .unwrap();
    assert_same(
        &stash.get(&run, "aws").unwrap().unwrap(),
        &minted("AKIASCAN", &secret),
    );

    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    for needle in [&secret, &keep, &b64(&secret), &b64(&keep)] {
        assert!(!journal.scan_for(needle).unwrap(), "{needle} is on disk");
    }

    // The scanner does see the stash: its ciphertext is in the files until erased.
    let ciphertext = |target: &str| -> Vec<u8> {
        let conn = rusqlite::Connection::open(journal.path()).unwrap();
        conn.query_row(
            "SELECT ciphertext FROM stash WHERE target = ?1",
            [target],
            |r| r.get(0),
        )
        .unwrap()
    };
    let erased = ciphertext("aws");
    let kept = ciphertext("other");
    assert!(journal.scan_for(&erased).unwrap());

    stash.erase(&run, "aws").unwrap();
    assert!(
        !journal.scan_for(&erased).unwrap(),
        "the erased ciphertext is overwritten"
    );
    assert!(journal.scan_for(&kept).unwrap(), "the other entry stays");
    for needle in [&secret, &keep, &b64(&secret), &b64(&keep)] {
        assert!(!journal.scan_for(needle).unwrap(), "{needle} is on disk");
    }
    assert_same(
        &stash.get(&run, "other").unwrap().unwrap(),
        &minted("AKIAKEEP", &keep),
    );
}

#[test]
fn another_key_is_a_clear_error() {
    let (dir, _journal, run) = setup();
    let stash = Stash::open(dir.path(), StashKey::generate().unwrap()).unwrap();
    stash.put(&run, "aws", &minted("AKIAKEY", "s")).unwrap();
    drop(stash);

    let other = Stash::open(dir.path(), StashKey::generate().unwrap()).unwrap();
    assert!(other.contains(&run, "aws").unwrap(), "listing needs no key");
    let err = other.get(&run, "aws").unwrap_err();
    assert!(matches!(err, StashError::WrongKey { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(
            "was written with another key: set REKEY_STASH_KEY to the key of the run that minted it"
        ),
        "{message}"
    );
    assert!(
        message.contains("aws") && message.contains(run.as_str()),
        "{message}"
    );
}

#[test]
fn tampered_or_moved_rows_do_not_open() {
    let (dir, journal, run) = setup();
    let stash = Stash::open(dir.path(), StashKey::generate().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(journal.path()).unwrap();
    let tampered =
        |r: Result<Option<Minted>, StashError>| matches!(r, Err(StashError::Tampered { .. }));

    // One flipped bit of ciphertext.
    stash.put(&run, "a", &minted("AKIAA", "secret-a")).unwrap();
    let mut ct: Vec<u8> = conn
        .query_row("SELECT ciphertext FROM stash WHERE target = 'a'", [], |r| {
            r.get(0)
        })
        .unwrap();
    ct[4] ^= 1;
    conn.execute("UPDATE stash SET ciphertext = ?1 WHERE target = 'a'", [&ct])
        .unwrap();
    assert!(tampered(stash.get(&run, "a")));
    stash.erase(&run, "a").unwrap();

    // Nonce and ciphertext swapped between two rows of the same key.
    stash.put(&run, "a", &minted("AKIAA", "secret-a")).unwrap();
    stash.put(&run, "b", &minted("AKIAB", "secret-b")).unwrap();
    conn.execute_batch(
        "CREATE TEMP TABLE saved AS SELECT target, nonce, ciphertext FROM stash;
         UPDATE stash SET
             nonce = (SELECT nonce FROM saved WHERE saved.target <> stash.target),
             ciphertext = (SELECT ciphertext FROM saved WHERE saved.target <> stash.target);
         DROP TABLE saved;",
    )
    .unwrap();
    assert!(tampered(stash.get(&run, "a")));
    assert!(tampered(stash.get(&run, "b")));
    stash.erase(&run, "a").unwrap();
    stash.erase(&run, "b").unwrap();

    // A row relabelled with another credential id, or moved to another run.
    stash.put(&run, "a", &minted("AKIAA", "secret-a")).unwrap();
    conn.execute(
        "UPDATE stash SET credential_id = 'AKIAZ' WHERE target = 'a'",
        [],
    )
    .unwrap();
    assert!(tampered(stash.get(&run, "a")));
    conn.execute(
        "UPDATE stash SET credential_id = 'AKIAA' WHERE target = 'a'",
        [],
    )
    .unwrap();
    assert!(stash.get(&run, "a").unwrap().is_some());
    let other = journal.create_run("p", "p.yaml", PLAN).unwrap();
    conn.execute(
        "UPDATE stash SET run_id = ?1 WHERE target = 'a'",
        [other.as_str()],
    )
    .unwrap();
    assert!(tampered(stash.get(&other, "a")));

    // A truncated ciphertext.
    conn.execute("UPDATE stash SET ciphertext = x'00' WHERE target = 'a'", [])
        .unwrap();
    assert!(tampered(stash.get(&other, "a")));
}

#[test]
fn stash_keys_parse_strictly() {
    let key = StashKey::generate().unwrap();
    let text = key.to_base64();
    let back = StashKey::from_base64(text.expose(), "REKEY_STASH_KEY").unwrap();
    assert_eq!(back.fingerprint(), key.fingerprint());
    assert_ne!(
        StashKey::generate().unwrap().fingerprint(),
        key.fingerprint()
    );
    assert!(!format!("{key:?}").contains(text.expose()));

    let short = "c2hvcnQta2V5LW9mLTE2Yg=="; // 16 bytes
    let long = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"; // 48 bytes
    for (input, expect) in [
        ("not base64 at all!", "not base64"),
        ("%%%%", "not base64"),
        (short, "decodes to 16 bytes, not 32"),
        (long, "decodes to 48 bytes, not 32"),
    ] {
        let err = StashKey::from_base64(input, "REKEY_STASH_KEY").unwrap_err();
        assert!(matches!(err, StashKeyError::Malformed { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with("REKEY_STASH_KEY is not a stash key"),
            "{message}"
        );
        assert!(message.contains(expect), "{message}");
        assert!(!message.contains(input), "the value leaked into: {message}");
    }
}

#[test]
fn stash_key_from_the_environment() {
    let key = StashKey::generate().unwrap();
    let (out, ok) = run_helper(
        helper("key-from-env")
            .env("REKEY_STASH_KEY", key.to_base64().expose())
            .env("REKEY_KEYRING_DISABLED", "1"),
    );
    assert!(ok, "{out}");
    assert_eq!(out.trim(), format!("OK {} Env", key.fingerprint()));

    let url_safe = {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(key.to_base64().expose())
            .unwrap();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    };
    let (out, _) = run_helper(helper("key-from-env").env("REKEY_STASH_KEY", &url_safe));
    assert_eq!(out.trim(), format!("OK {} Env", key.fingerprint()));

    for (value, expect) in [
        ("", "REKEY_STASH_KEY is set but empty"),
        ("   ", "REKEY_STASH_KEY is set but empty"),
        ("hunter2", "REKEY_STASH_KEY is not a stash key"),
    ] {
        let (out, _) = run_helper(
            helper("key-from-env")
                .env("REKEY_STASH_KEY", value)
                .env("REKEY_KEYRING_DISABLED", "1"),
        );
        assert!(
            out.starts_with("ERR ") && out.contains(expect),
            "{value:?}: {out}"
        );
    }

    let (out, _) = run_helper(
        helper("key-from-env")
            .env_remove("REKEY_STASH_KEY")
            .env("REKEY_KEYRING_DISABLED", "1"),
    );
    assert!(
        out.contains("ERR no stash key") && out.contains("set REKEY_STASH_KEY"),
        "{out}"
    );
}

/// The keyring key must be the same in every later invocation of the same user, whatever
/// session keyring it runs in. Linux only: that is where the session keyring matters.
#[cfg(target_os = "linux")]
#[test]
fn keyring_key_persists_across_processes() {
    use rekey::credentials::{self, keyutils};

    if keyutils::session_keyring().is_err() {
        eprintln!("SKIPPED: no kernel keyrings here (keyctl is blocked or missing)");
        return;
    }
    /// Removes the test's keyring entries however the test ends.
    struct Cleanup(Vec<String>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for entry in &self.0 {
                let _ = credentials::keyring_delete(entry);
            }
        }
    }
    let entry = unique("stash-key-test-");
    let private_entry = unique("stash-key-test-private-");
    let _cleanup = Cleanup(vec![entry.clone(), private_entry.clone()]);
    let fingerprint_of = |out: &str| -> (String, String) {
        let mut parts = out
            .trim()
            .strip_prefix("OK ")
            .unwrap_or_else(|| panic!("{out}"))
            .split(' ');
        (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
        )
    };

    // A session-less process (what this machine gives every process) creates the key...
    let (out, ok) = run_helper(helper("key-from-keyring").env("REKEY_TEST_ENTRY", &entry));
    assert!(ok, "{out}");
    let (created, source) = fingerprint_of(&out);
    assert_eq!(source, "Keyring{created:true}");
    assert!(keyutils::in_user_keyring(&keyutils::description(
        "rekey", &entry
    )));
    // ...the next one finds it, and so does one in a private session keyring.
    for private in [false, true] {
        let mut command = helper("key-from-keyring");
        command.env("REKEY_TEST_ENTRY", &entry);
        if private {
            command.env("REKEY_TEST_NEW_SESSION", "1");
        }
        let (out, ok) = run_helper(&mut command);
        assert!(ok, "{out}");
        assert_eq!(
            fingerprint_of(&out),
            (created.clone(), "Keyring{created:false}".into())
        );
    }

    // A key created in a private session keyring outlives it, even once the persistent
    // keyring forgot it (as it does after days unused): it is in the user keyring.
    let (out, ok) = run_helper(
        helper("key-from-keyring")
            .env("REKEY_TEST_ENTRY", &private_entry)
            .env("REKEY_TEST_NEW_SESSION", "1"),
    );
    assert!(ok, "{out}");
    let (private_created, _) = fingerprint_of(&out);
    unlink_from_persistent_keyring(&keyutils::description("rekey", &private_entry));
    let (out, ok) = run_helper(
        helper("key-from-keyring")
            .env("REKEY_TEST_ENTRY", &private_entry)
            .env("REKEY_TEST_NEW_SESSION", "1"),
    );
    assert!(ok, "{out}");
    assert_eq!(
        fingerprint_of(&out),
        (private_created, "Keyring{created:false}".into())
    );

    credentials::keyring_delete(&entry).unwrap();
    credentials::keyring_delete(&private_entry).unwrap();
    let (out, ok) = run_helper(helper("key-from-keyring").env("REKEY_TEST_ENTRY", &entry));
    assert!(ok, "{out}");
    assert_ne!(fingerprint_of(&out).0, created, "deleted means a new key");
    credentials::keyring_delete(&entry).unwrap();
}

/// Simulates the expiry of the persistent keyring for one key: unlinks it from there.
#[cfg(target_os = "linux")]
fn unlink_from_persistent_keyring(description: &str) {
    const KEYCTL_UNLINK: libc::c_long = 9;
    const KEYCTL_SEARCH: libc::c_long = 10;
    const KEYCTL_GET_PERSISTENT: libc::c_long = 22;
    const KEY_SPEC_USER_KEYRING: libc::c_long = -4;
    const KEY_SPEC_PROCESS_KEYRING: libc::c_long = -2;
    let kind = std::ffi::CString::new("user").unwrap();
    let desc = std::ffi::CString::new(description).unwrap();
    // SAFETY: keyctl with integer arguments and NUL-terminated strings that outlive the calls.
    unsafe {
        let persistent = libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_PERSISTENT,
            -1 as libc::c_long,
            KEY_SPEC_PROCESS_KEYRING,
        );
        let key = libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_SEARCH,
            KEY_SPEC_USER_KEYRING,
            kind.as_ptr(),
            desc.as_ptr(),
            0 as libc::c_long,
        );
        assert!(key > 0, "the key is not in the user keyring");
        if persistent > 0 {
            libc::syscall(libc::SYS_keyctl, KEYCTL_UNLINK, key, persistent);
        }
    }
}

#[test]
fn the_lock_is_held_by_one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(".rekey");

    // Within one process: a second acquire fails until the first lock is dropped.
    let lock = StateLock::acquire(&state).unwrap();
    assert_eq!(
        std::fs::metadata(lock.path()).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let err = StateLock::acquire(&state).unwrap_err();
    assert!(
        matches!(err, LockError::Held { pid: Some(p), since: Some(_), .. } if p == std::process::id()),
        "{err:?}"
    );
    drop(lock);

    // Another process holds it: we are told who, and since when.
    let mut child = helper("lock-holder")
        .env("REKEY_TEST_DIR", &state)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("the holder ended").unwrap();
        if line.starts_with("LOCKED") {
            break;
        }
    }
    let err = StateLock::acquire(&state).unwrap_err();
    let LockError::Held { pid, since, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*pid, Some(child.id()));
    let since = since.expect("the holder's start time");
    let message = err.to_string();
    let expected_start = format!(
        "another rekey apply (pid {}, since {}",
        child.id(),
        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    assert!(message.starts_with(&expected_start), "{message}");
    assert!(
        message.ends_with(&format!(
            "is using {}/; wait for it or use another --state-dir",
            state.display()
        )),
        "{message}"
    );

    // SIGKILL: the kernel releases the lock with the process; nothing stale remains.
    child.kill().unwrap();
    child.wait().unwrap();
    let lock = StateLock::acquire(&state).unwrap();
    assert_eq!(lock.pid(), std::process::id());
    let content = std::fs::read_to_string(lock.path()).unwrap();
    assert!(
        content.contains(&format!("\"pid\":{}", std::process::id())),
        "{content}"
    );
}

fn helper(mode: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "child_process_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("REKEY_TEST_HELPER", mode);
    command
}

/// Runs a helper to the end: its `OK …`/`ERR …` line, and whether it exited successfully.
fn run_helper(command: &mut Command) -> (String, bool) {
    let output = command.stderr(Stdio::inherit()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("OK ") || l.starts_with("ERR "))
        .unwrap_or("(no result line)")
        .to_string();
    (line, output.status.success())
}

/// Not a test: what a child process does when this binary is re-run with `REKEY_TEST_HELPER`.
#[test]
fn child_process_helper() {
    let Ok(mode) = std::env::var("REKEY_TEST_HELPER") else {
        return;
    };
    // The harness has printed `test child_process_helper ... ` without a newline.
    println!();
    let report = |result: Result<StashKey, StashKeyError>| match result {
        Ok(key) => {
            let source = match key.source() {
                KeySource::Keyring { created } => format!("Keyring{{created:{created}}}"),
                other => format!("{other:?}"),
            };
            println!("OK {} {source}", key.fingerprint());
        }
        Err(e) => println!("ERR {e}"),
    };
    match mode.as_str() {
        "key-from-env" => report(StashKey::from_env_or_keyring()),
        "key-from-keyring" => {
            #[cfg(target_os = "linux")]
            if std::env::var_os("REKEY_TEST_NEW_SESSION").is_some() {
                join_new_session_keyring();
            }
            let entry = std::env::var("REKEY_TEST_ENTRY").unwrap();
            report(StashKey::from_keyring_entry(&entry));
        }
        "lock-holder" => {
            let dir = std::env::var("REKEY_TEST_DIR").unwrap();
            let _lock = StateLock::acquire(Path::new(&dir)).unwrap();
            println!("LOCKED");
            // Until killed (bounded in case the parent dies first).
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
        other => panic!("unknown helper mode {other}"),
    }
}

/// Gives the calling thread a new anonymous session keyring, as `keyctl session`, systemd
/// services and container runtimes do: nothing of the user's is linked into it.
#[cfg(target_os = "linux")]
fn join_new_session_keyring() {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: a null name asks for a new anonymous keyring; no memory is read or written.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    assert!(r > 0, "keyctl join: {}", std::io::Error::last_os_error());
}
