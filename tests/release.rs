//! What a release ships beside the binary's work, end to end: shell completions and man pages
//! generated from the clap definition, and `--version` with the commit and build date (the
//! build script's logic, `build/version.rs`, tested directly for the cases a build cannot show
//! here: no git, not a checkout, someone else's checkout).

#[path = "../build/version.rs"]
mod version;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, UNIX_EPOCH};

fn rekey(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rekey"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run rekey")
}

fn stdout_of(args: &[&str]) -> String {
    let out = rekey(args);
    assert!(
        out.status.success(),
        "rekey {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Every visible subcommand and a few flags of each kind (global, per subcommand, with value).
const MUST_MENTION: &[&str] = &[
    "inventory",
    "plan",
    "validate",
    "apply",
    "hunt",
    "status",
    "confirm",
    "auth",
    "demo",
    "completions",
    "man",
    "--output",
    "--dry-run",
    "--resume",
    "--cloudtrail",
    "--from-env-inspector",
];

#[test]
fn completions_for_each_shell_know_the_subcommands_and_flags() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let script = stdout_of(&["completions", shell]);
        for word in MUST_MENTION {
            // fish names a long flag `-l NAME`.
            let needle = match word.strip_prefix("--") {
                Some(flag) if shell == "fish" => format!("-l {flag}"),
                _ => word.to_string(),
            };
            assert!(
                script.contains(&needle),
                "{shell} completions lack {needle}"
            );
        }
    }
    let bash = stdout_of(&["completions", "bash"]);
    assert!(bash.contains("complete -F _rekey"), "{bash}");
    let zsh = stdout_of(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef rekey"), "{zsh}");
}

#[test]
fn completions_refuse_an_unknown_shell() {
    let out = rekey(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcsh"));
}

#[test]
fn man_page_is_roff_and_lists_the_subcommands() {
    let page = stdout_of(&["man"]);
    assert!(
        page.starts_with(".ie"),
        "not roff: {}",
        &page[..80.min(page.len())]
    );
    assert!(page.contains(".TH rekey 1"), "no title header");
    assert!(page.contains("Exit codes"), "the after-help is lost");
    for word in MUST_MENTION.iter().take(11) {
        assert!(page.contains(word), "the man page lacks {word}");
    }
    assert!(page.contains("\\-\\-output"), "global flags missing");
}

#[test]
fn man_dir_writes_one_page_per_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    stdout_of(&["man", "--dir", out_dir.to_str().unwrap()]);
    let mut names: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for expected in ["rekey.1", "rekey-apply.1", "rekey-hunt.1", "rekey-man.1"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n == "rekey-schema.1"),
        "hidden page written"
    );
    let apply = std::fs::read_to_string(out_dir.join("rekey-apply.1")).unwrap();
    assert!(
        apply.contains(".TH rekey-apply 1"),
        "title: {}",
        &apply[..200]
    );
    assert!(apply.contains("\\-\\-dry\\-run"));
    // Global flags reach the subcommands' pages.
    assert!(apply.contains("\\-\\-output"));
}

#[test]
fn version_says_the_commit_and_build_date() {
    let line = stdout_of(&["--version"]);
    let line = line.trim_end();
    let rest = line
        .strip_prefix(&format!("rekey {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("unexpected --version: {line}"));
    let (commit, date) = rest
        .strip_suffix(')')
        .and_then(|r| r.split_once(", built "))
        .unwrap_or_else(|| panic!("unexpected --version: {line}"));
    assert!(
        commit == "unknown" || commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
        "commit {commit:?}"
    );
    assert!(
        date.len() == 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-',
        "date {date:?}"
    );
    // In this checkout, with git, the binary knows the commit it was built from (the build
    // script runs again when HEAD moves).
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let head = version::git_commit(manifest, "git");
    if head != "unknown" {
        assert_eq!(commit, head, "--version names another commit than HEAD");
    }
    assert_eq!(stdout_of(&["-V"]).trim_end(), line);
}

#[test]
fn commit_is_unknown_without_git_or_outside_a_checkout() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert_eq!(version::git_commit(manifest, "/nonexistent/git"), "unknown");
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(version::git_commit(dir.path(), "git"), "unknown");
}

/// A crate vendored inside another repository must not report that repository's commit.
#[test]
fn commit_is_the_checkouts_own_and_not_an_enclosing_repositorys() {
    let git = |dir: &Path, args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
    };
    let dir = tempfile::tempdir().unwrap();
    let Ok(init) = git(dir.path(), &["init", "-q"]) else {
        eprintln!("no git here: the no-git case is covered above");
        return;
    };
    assert!(init.status.success());
    std::fs::write(dir.path().join("f"), "x").unwrap();
    assert!(git(dir.path(), &["add", "f"]).unwrap().status.success());
    let commit = git(dir.path(), &["commit", "-q", "--no-gpg-sign", "-m", "m"]).unwrap();
    assert!(
        commit.status.success(),
        "{}",
        String::from_utf8_lossy(&commit.stderr)
    );
    let head = git(dir.path(), &["rev-parse", "HEAD"]).unwrap();
    let head = String::from_utf8(head.stdout).unwrap();
    let found = version::git_commit(dir.path(), "git");
    assert_eq!(found.len(), 12);
    assert!(head.starts_with(&found), "{found} is not {head}");
    let vendored = dir.path().join("vendor").join("rekey");
    std::fs::create_dir_all(&vendored).unwrap();
    assert_eq!(version::git_commit(&vendored, "git"), "unknown");
}

#[test]
fn build_date_is_utc_and_honours_source_date_epoch() {
    let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
    assert_eq!(version::build_date(None, at(0)), "1970-01-01");
    assert_eq!(version::build_date(None, at(951_782_400)), "2000-02-29");
    assert_eq!(version::build_date(None, at(1_796_428_799)), "2026-12-04");
    assert_eq!(version::build_date(None, at(4_102_444_799)), "2099-12-31");
    assert_eq!(version::build_date(Some("951782400"), at(0)), "2000-02-29");
    // Not a number: the clock's date, not a failure.
    assert_eq!(version::build_date(Some("yesterday"), at(0)), "1970-01-01");
}
