//! What `rekey --version` says beside the version: the git commit and the build date, found when
//! the crate is built (by `build.rs`, and by the tests through `#[path]`).
//!
//! It never fails the build: without git, outside a checkout (a crates.io tarball), or inside
//! someone else's repository (a vendored copy), the commit is `unknown`. `REKEY_GIT_COMMIT`
//! overrides the commit (a packager building from a tarball knows it); `SOURCE_DATE_EPOCH`
//! fixes the date (reproducible builds).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// Prints the build script's instructions: the two variables, and when to run again (a new
/// commit moves HEAD or the branch's ref).
#[allow(dead_code)] // used by build.rs, not by the tests
pub fn emit(manifest_dir: &Path) {
    let commit = match std::env::var("REKEY_GIT_COMMIT") {
        Ok(c) if is_commit(c.trim()) => c.trim().to_string(),
        _ => git_commit(manifest_dir, "git"),
    };
    let epoch = std::env::var("SOURCE_DATE_EPOCH").ok();
    let date = build_date(epoch.as_deref(), SystemTime::now());
    println!("cargo:rustc-env=REKEY_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=REKEY_BUILD_DATE={date}");
    println!("cargo:rerun-if-env-changed=REKEY_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/version.rs");
    for path in watched(manifest_dir, "git") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// The abbreviated commit of `dir`'s checkout, or `unknown` when `git` cannot run, `dir` is not
/// a checkout, or the checkout is not `dir`'s own (its top level is elsewhere).
pub fn git_commit(dir: &Path, git: &str) -> String {
    let lines = git_lines(
        dir,
        git,
        &["rev-parse", "--show-toplevel", "--short=12", "HEAD"],
    );
    match lines.as_deref() {
        Some([top, commit]) if same_dir(Path::new(top), dir) && is_commit(commit) => commit.clone(),
        _ => "unknown".to_string(),
    }
}

/// The files whose change means a new commit: HEAD, the ref it names, packed refs. Only files
/// that exist (Cargo runs a script again on every build when a watched path is missing).
fn watched(dir: &Path, git: &str) -> Vec<PathBuf> {
    let Some(lines) = git_lines(dir, git, &["rev-parse", "--git-dir", "--git-common-dir"]) else {
        return Vec::new();
    };
    let [git_dir, common] = lines.as_slice() else {
        return Vec::new();
    };
    let (git_dir, common) = (dir.join(git_dir), dir.join(common));
    let head = git_dir.join("HEAD");
    let mut paths = vec![head.clone(), common.join("packed-refs")];
    if let Some(reference) = std::fs::read_to_string(&head)
        .ok()
        .and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string()))
    {
        paths.push(common.join(reference));
    }
    paths.retain(|p| p.exists());
    paths
}

fn git_lines(dir: &Path, git: &str, args: &[&str]) -> Option<Vec<String>> {
    let out = Command::new(git)
        .args(args)
        .current_dir(dir)
        // The build's own environment must not point git elsewhere.
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.lines().map(str::to_string).collect())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn is_commit(text: &str) -> bool {
    (7..=40).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The UTC date (`YYYY-MM-DD`) of `SOURCE_DATE_EPOCH` when it is a number of seconds, else of
/// `now`.
pub fn build_date(source_date_epoch: Option<&str>, now: SystemTime) -> String {
    let secs = source_date_epoch
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            now.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
