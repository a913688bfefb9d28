//! `rekey sandbox serve`: rekey's simulators of CircleCI, AWS IAM/STS, GitHub, GCP and Azure as
//! long-running servers on 127.0.0.1, holding a world built from a plan
//! ([`crate::sandbox::world::PlanWorld`]) or described in a small file
//! ([`crate::sandbox::world_file`]), optionally with a fault profile. It prints the environment
//! a client needs (one `NAME=value` per line, then the plan's `endpoints:` block as comments,
//! so the whole output can be sourced by a shell) and serves until SIGINT or SIGTERM. Every
//! credential it prints is the simulators' own, made up at start.

use super::output::{Failure, Output, runtime};
use crate::sandbox::profiles::FaultProfile;
use crate::sandbox::world::{PlanWorld, StandIn};
use crate::sandbox::world_file::WorldFile;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SandboxArgs {
    #[command(subcommand)]
    command: SandboxCommand,
}

#[derive(clap::Subcommand)]
enum SandboxCommand {
    /// Serve the simulators on 127.0.0.1 until Ctrl-C (SIGINT) or SIGTERM, printing the
    /// environment a client needs (CIRCLECI_HOST, GITHUB_API_URL, AWS_ENDPOINT_URL, the plan's
    /// `endpoints:` block, the simulators' made-up credentials).
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A world file (YAML or JSON): projects and contexts with variable names, IAM users with
    /// their number of keys, GitHub repositories (see README, "Rehearse before you rotate").
    #[arg(long, value_name = "FILE", conflicts_with = "from_plan")]
    world: Option<PathBuf>,
    /// The world a plan describes, as `apply --rehearse` builds it.
    #[arg(long, value_name = "PLAN")]
    from_plan: Option<PathBuf>,
    /// none, realistic or hostile (as `apply --rehearse --faults`).
    #[arg(long, default_value = "none", value_name = "PROFILE")]
    faults: FaultProfile,
    /// With --from-plan: who plays an exec target's owner (TARGET=PROGRAM or TARGET=builtin).
    #[arg(long, requires = "from_plan", value_name = "TARGET=PROGRAM", value_parser = StandIn::parse)]
    stand_in: Vec<(String, StandIn)>,
    /// The seed of the hostile profile's draws.
    #[arg(long, default_value_t = 0, value_name = "N")]
    seed: u64,
}

pub fn run(args: SandboxArgs, output: Output) -> Result<u8, Failure> {
    let SandboxCommand::Serve(args) = args.command;
    let rt = runtime()?;
    rt.block_on(serve(args, output))
}

async fn serve(args: ServeArgs, output: Output) -> Result<u8, Failure> {
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path)
            .map_err(|e| Failure::input(format!("cannot read {}: {e}", path.display())))
    };
    let (world, plan) = match (&args.world, &args.from_plan) {
        (_, Some(path)) => {
            let name = path.display().to_string();
            let loaded =
                crate::plan::split::load_path(path).map_err(|d| Failure::input(d.to_string()))?;
            let errors: Vec<_> = loaded
                .validate()
                .into_iter()
                .filter(|d| d.is_error())
                .collect();
            if !errors.is_empty() {
                return Err(Failure::input(format!(
                    "{}\n\n{name}: invalid plan (see `rekey validate {name}`)",
                    crate::diagnostic::render_all(&errors)
                )));
            }
            let plan = loaded
                .merge()
                .ok_or_else(|| Failure::input(format!("{name}: the split plan lists no file")))?;
            let stand_ins = args.stand_in.iter().cloned().collect();
            let world = PlanWorld::start(&plan, &stand_ins)
                .await
                .map_err(|e| Failure::runtime(format!("starting the simulators: {e}")))?;
            (world, Some(plan))
        }
        (Some(path), None) => {
            let text = read(path)?;
            let file =
                WorldFile::parse(&path.display().to_string(), &text).map_err(Failure::input)?;
            let world = file
                .start()
                .await
                .map_err(|e| Failure::runtime(format!("starting the simulators: {e}")))?;
            (world, None)
        }
        (None, None) => {
            let world = WorldFile::default()
                .start()
                .await
                .map_err(|e| Failure::runtime(format!("starting the simulators: {e}")))?;
            (world, None)
        }
    };
    let injected = match &plan {
        Some(plan) => world.inject(args.faults, plan, args.seed),
        None => {
            let empty = crate::plan::load::parse(
                "(world file)",
                "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {name: sandbox}\n",
            )
            .map_err(|d| Failure::runtime(d.message))?;
            world.inject(args.faults, &empty, args.seed)
        }
    };
    print_environment(&world, &injected.faults, output);
    wait_for_stop()
        .await
        .map_err(|e| Failure::runtime(format!("waiting for a signal: {e}")))?;
    drop(world);
    eprintln!("rekey sandbox: stopped");
    Ok(0)
}

/// The environment, then (as comments) the plan's `endpoints:` block, the world's notes and
/// the faults; a last line says the servers are ready.
fn print_environment(world: &PlanWorld, faults: &[String], output: Output) {
    let env = world.client_environment();
    let endpoints: Vec<(&str, String)> = world
        .endpoints()
        .all()
        .filter_map(|(name, v)| v.as_ref().map(|v| (name, v.value.clone())))
        .collect();
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            let doc = serde_json::json!({
                "env": env.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                "endpoints": endpoints.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                "not_rehearsable": world.not_rehearsable,
                "faults": faults,
            });
            let _ = writeln!(out, "{doc}");
        }
        Output::Table => {
            let _ = writeln!(
                out,
                "# rekey sandbox: simulators on 127.0.0.1 with made-up credentials. Source this output, or copy what you need."
            );
            for (name, value) in &env {
                let _ = writeln!(out, "{name}={value}");
            }
            if !endpoints.is_empty() {
                let _ = writeln!(out, "# The plan's endpoints: block for this world:");
                let _ = writeln!(out, "#   endpoints:");
                for (name, url) in &endpoints {
                    let _ = writeln!(out, "#     {name}: {url}");
                }
            }
            for n in &world.not_rehearsable {
                let _ = writeln!(out, "# not in this world: {}: {}", n.target, n.reason);
            }
            for f in faults {
                let _ = writeln!(out, "# fault: {f}");
            }
            let _ = writeln!(
                out,
                "# ready: Ctrl-C (SIGINT) or SIGTERM stops the simulators"
            );
        }
    }
    let _ = out.flush();
}

/// Until SIGINT or (on Unix) SIGTERM.
async fn wait_for_stop() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
