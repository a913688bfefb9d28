//! `rekey man`: the manual page (roff), generated from the clap definition
//! ([`super::command`]): `rekey.1` on stdout, or with `--dir` one page per subcommand too
//! (`rekey-apply.1`, …) for packagers.

use super::output::Failure;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct ManArgs {
    /// Write rekey.1 and one page per subcommand (rekey-apply.1, …) into this directory
    /// (created if missing) instead of printing rekey.1.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn run(args: ManArgs) -> Result<u8, Failure> {
    let mut cmd = super::command();
    // Propagates global flags (--output, --verbose) into every subcommand's page.
    cmd.build();
    let Some(dir) = &args.dir else {
        let page = render(&cmd)?;
        let mut stdout = std::io::stdout().lock();
        return std::io::Write::write_all(&mut stdout, &page)
            .and_then(|()| std::io::Write::flush(&mut stdout))
            .map(|()| 0)
            .map_err(|e| Failure::runtime(format!("cannot write the man page: {e}")));
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::runtime(format!("cannot create {}: {e}", dir.display())))?;
    write_page(dir, "rekey", &cmd)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("rekey-{}", sub.get_name());
        write_page(dir, &name, &sub.clone().name(name.clone()))?;
    }
    Ok(0)
}

fn render(cmd: &clap::Command) -> Result<Vec<u8>, Failure> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .map_err(|e| Failure::runtime(format!("cannot render the man page: {e}")))?;
    Ok(page)
}

fn write_page(dir: &Path, name: &str, cmd: &clap::Command) -> Result<(), Failure> {
    let path = dir.join(format!("{name}.1"));
    crate::fsio::write_atomically(&path, &render(cmd)?)
        .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display())))
}
