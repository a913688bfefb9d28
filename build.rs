//! Build script: the git commit and build date that `rekey --version` shows (see
//! `build/version.rs`). It never fails the build.

#[path = "build/version.rs"]
mod version;

fn main() {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_default();
    version::emit(&dir);
}
