//! `rekey apply`: its arguments (the plan, resume, dry run, refresh, token inputs), building a
//! real run's environment (providers from [`crate::providers::registry`]), progress output,
//! and rendering the dry-run preview and the run's summary.

use super::output::{Failure, Output, print_json, runtime, write_output};
use crate::credentials::{self, Service};
use crate::diagnostic;
use crate::engine::run::{ApplyOptions, Environment};
use crate::plan;
use crate::providers::github::{TokenInputs, ValueSource};
use crate::providers::registry::{self, RegistryError};
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// The reviewed plan.
    #[arg(required_unless_present = "resume", conflicts_with = "resume")]
    plan: Option<PathBuf>,
    /// Continue this run (see `rekey status`) with the plan stored in its journal.
    #[arg(long, value_name = "RUN_ID")]
    resume: Option<String>,
    /// Read live state and print what would happen; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run: exit 0 when nothing would change, 2 when changes are pending, 1 on error.
    #[arg(long, requires = "dry_run")]
    detailed_exitcode: bool,
    /// Journal, stash and lock live here: a directory (created with owner-only permissions) or
    /// s3://BUCKET/PREFIX, shared by CI runners (see README, "State backends"). Default: the
    /// plan's `metadata.state`, else .rekey
    #[arg(
        long,
        visible_alias = "state",
        env = "REKEY_STATE",
        value_name = "DIR|s3://BUCKET/PREFIX"
    )]
    state_dir: Option<PathBuf>,
    /// S3 state: how long the lock's lease lasts unless renewed (renewed every third of it).
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    lock_lease: String,
    /// How long to wait for a run that holds the state's lock before exiting 5 ("locked").
    #[arg(long, default_value = "0s", value_name = "DURATION")]
    lock_timeout: String,
    /// Targets rotated at once [default: 8; with --rehearse 32, its services being in process].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallelism: Option<u16>,
    /// Write a Markdown report of the run (for the incident ticket).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Rotate even credentials younger than max_age (an incident, not a schedule).
    #[arg(long)]
    ignore_max_age: bool,
    /// Rotate nothing: record live state in the plan's `observed` entries (after a stale-plan
    /// refusal) and write the refreshed plan to FILE for a new review.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["dry_run", "resume"])]
    refresh: Option<PathBuf>,
    /// Only this target (repeatable).
    #[arg(long = "target", value_name = "ID")]
    only: Vec<String>,
    /// Calls per second to one service, shared by all targets: `circleci=N`, `aws-iam=N`
    /// (repeatable; 0 = unlimited). Defaults: circleci=50, aws-iam=20.
    #[arg(long = "rate-limit", value_name = "SERVICE=N", value_parser = crate::ratelimit::parse_limit)]
    rate_limits: Vec<(String, f64)>,
    /// First pause between verification attempts of a new credential, in milliseconds.
    #[arg(long, default_value_t = 1000, hide = true)]
    verify_backoff_ms: u64,
    /// Pause between polls of a canary pipeline, in milliseconds.
    #[arg(long, default_value_t = 10_000, hide = true)]
    poll_interval_ms: u64,
    /// The new value of a target that cannot be minted by API (github-token): TARGET=FILE, or
    /// TARGET=- for one line of stdin (repeatable). Without it, rekey asks on a terminal, and
    /// otherwise leaves the target incomplete until a run that has the value.
    #[arg(long, value_name = "TARGET=FILE", value_parser = parse_value_source)]
    value_from_file: Vec<(String, ValueSource)>,
    /// The old value of a github-token target (TARGET=FILE or TARGET=-), so that rekey revokes it
    /// through GitHub's credential-revocation API; without it, revocation is a manual step
    /// confirmed with `rekey confirm`.
    #[arg(long, value_name = "TARGET=FILE", value_parser = parse_value_source)]
    old_value_from_file: Vec<(String, ValueSource)>,
    #[command(flatten)]
    policy: crate::policy::OperatorPolicy,
    /// Rehearse: apply the plan with the same engine to a simulated copy of its world on
    /// 127.0.0.1 (state in a throwaway directory, grace periods compressed, none of your
    /// credentials read), then print the report a real run would produce and what the faults
    /// did. Exit codes as for a real apply. See README, "Rehearse before you rotate".
    #[arg(long, conflicts_with_all = ["dry_run", "resume", "refresh"])]
    rehearse: bool,
    /// With --rehearse: none, realistic (the throttling and propagation delays each owner
    /// documents, compressed) or hostile (every call fails once, a binding refuses writes, a
    /// crash at a random step and a resume).
    #[arg(
        long,
        requires = "rehearse",
        default_value = "none",
        value_name = "PROFILE"
    )]
    faults: crate::sandbox::profiles::FaultProfile,
    /// With --rehearse: who plays an exec target's owner: TARGET=PROGRAM (run as `PROGRAM
    /// OPERATION`, speaking the exec protocol) or TARGET=builtin (rekey's made-up token owner).
    /// An exec target without one is not rehearsable (repeatable).
    #[arg(long, requires = "rehearse", value_name = "TARGET=PROGRAM", value_parser = crate::sandbox::world::StandIn::parse)]
    stand_in: Vec<(String, crate::sandbox::world::StandIn)>,
    /// With --rehearse: the seed of the hostile profile's draws (default: drawn and printed).
    #[arg(long, requires = "rehearse", value_name = "N")]
    seed: Option<u64>,
}

/// `TARGET=FILE` (or `TARGET=-` for stdin): a file name only, never a value on the command line.
fn parse_value_source(text: &str) -> Result<(String, ValueSource), String> {
    let (target, file) = text
        .split_once('=')
        .filter(|(t, f)| !t.is_empty() && !f.is_empty())
        .ok_or_else(|| "expected TARGET=FILE (or TARGET=- for stdin)".to_string())?;
    let source = if file == "-" {
        ValueSource::Stdin
    } else {
        ValueSource::File(PathBuf::from(file))
    };
    Ok((target.to_string(), source))
}

fn event_sink(
    output: Output,
    targets: usize,
) -> std::sync::Arc<dyn crate::engine::events::EventSink> {
    use crate::engine::events::{Bars, JsonLines, PlainLines};
    use std::io::IsTerminal;
    match output {
        Output::Json => std::sync::Arc::new(JsonLines),
        Output::Table if std::io::stderr().is_terminal() => std::sync::Arc::new(Bars::new(targets)),
        Output::Table => std::sync::Arc::new(PlainLines),
    }
}

/// The token inputs of an apply: files and stdin as given, a hidden prompt on a terminal.
fn token_inputs(args: &ApplyArgs) -> Result<TokenInputs, Failure> {
    use std::io::IsTerminal;
    let stdin_users = args
        .value_from_file
        .iter()
        .chain(&args.old_value_from_file)
        .filter(|(_, s)| matches!(s, ValueSource::Stdin))
        .count();
    if stdin_users > 1 {
        return Err(Failure::input(
            "only one --value-from-file / --old-value-from-file may read stdin (TARGET=-)",
        ));
    }
    Ok(TokenInputs {
        new: args.value_from_file.iter().cloned().collect(),
        old: args.old_value_from_file.iter().cloned().collect(),
        // A prompt needs a person at a terminal, and stdin free for them.
        prompt: stdin_users == 0
            && std::io::stdin().is_terminal()
            && std::io::stderr().is_terminal(),
    })
}

pub fn run(args: ApplyArgs, output: Output) -> Result<u8, Failure> {
    let rt = runtime()?;
    if args.rehearse {
        // Before anything reads the environment: a rehearsal needs none of it.
        return rehearse(&rt, &args, output);
    }
    let inputs = token_inputs(&args)?;
    // The operator's rules, checked before any request (the plan's endpoints below).
    args.policy.check().map_err(Failure::input)?;
    args.policy
        .endpoints
        .check_environment()
        .map_err(Failure::input)?;
    if let Some(run_id) = &args.resume {
        return resume(&rt, &args, run_id, inputs, output);
    }
    let (name, text, plan) = load_plan(&args)?;
    // A dry run's exec provider runs no plan command unless the operator asks.
    let environment = |need_stash: bool, dry_run: bool, inputs: TokenInputs| {
        let exec = args.policy.exec_provider(dry_run);
        rt.block_on(real_environment(
            need_stash,
            &args.rate_limits,
            inputs,
            &plan,
            exec,
        ))
    };
    if let Some(out) = &args.refresh {
        let env = environment(false, false, inputs)?;
        return refresh(&rt, plan, &env, out, output);
    }
    if args.dry_run {
        // The journal's copy of the plan is for a run; a dry run writes none.
        drop(text);
        let env = environment(false, true, inputs)?;
        return dry_run(&rt, &args, &plan, &env, output);
    }
    let options = options(&args, Some(&plan))?;
    let env = environment(true, false, inputs)?;
    let sink = event_sink(output, plan.targets.len());
    let report = rt
        .block_on(crate::engine::run::apply(
            &name, &text, plan, env, options, sink,
        ))
        .map_err(|e| Failure {
            code: engine_code(&e),
            message: e.to_string(),
        })?;
    finish_apply(&report, args.report.as_deref(), output)
}

/// The plan named on the command line, loaded (split plans merged) and validated, with the
/// operator's endpoint rules: (name, text as the journal keeps it, plan). A dry run or a
/// refresh journals nothing: it reads a large plan mapped (as `validate` does) and gets no
/// text, so the 130 MB text of a 190,000-target plan is not resident beside its model.
fn load_plan(args: &ApplyArgs) -> Result<(String, String, plan::Plan), Failure> {
    let Some(plan_path) = &args.plan else {
        return Err(Failure::input("name a plan, or --resume RUN_ID"));
    };
    let name = plan_path.display().to_string();
    let journals_nothing = args.dry_run || args.refresh.is_some();
    let load = if journals_nothing {
        plan::split::load_path_mapped
    } else {
        plan::split::load_path
    };
    let loaded = load(plan_path).map_err(|d| Failure::input(d.to_string()))?;
    let mut diagnostics = loaded.validate();
    for f in &loaded.files {
        diagnostics.extend(
            args.policy
                .endpoints
                .plan_diagnostics(&f.name, &f.text, &f.plan),
        );
    }
    if diagnostics.iter().any(|d| d.is_error()) {
        return Err(Failure::input(format!(
            "{}\n\n{name}: invalid plan; nothing was done (see `rekey validate {name}`)",
            diagnostic::render_all(&diagnostics)
        )));
    }
    // A split plan runs as one plan: the journal keeps the files merged, as reviewed.
    let split = loaded.files.len() > 1;
    let mut loaded = loaded;
    let (text, plan) = match (split, loaded.files.first_mut()) {
        _ if journals_nothing => (String::new(), loaded.merge()),
        // Moved, not copied: a 190,000-target plan's text is 130 MB.
        (false, Some(f)) => (std::mem::take(&mut f.text).into_string(), loaded.merge()),
        _ => {
            let merged = loaded.merge();
            let text = merged
                .as_ref()
                .map(|p| plan::write::to_yaml(p, &Default::default()))
                .transpose()
                .map_err(|e| Failure::runtime(e.to_string()))?
                .unwrap_or_default();
            (text, merged)
        }
    };
    let plan =
        plan.ok_or_else(|| Failure::input(format!("{name}: the split plan lists no file")))?;
    Ok((name, text, plan))
}

/// `--rehearse`: the plan applied to a simulated copy of its world; see
/// [`crate::engine::rehearsal`].
fn rehearse(rt: &tokio::runtime::Runtime, args: &ApplyArgs, output: Output) -> Result<u8, Failure> {
    use crate::engine::rehearsal::{RehearsalOptions, rehearse};
    let (name, _, plan) = load_plan(args)?;
    let seed = args
        .seed
        .unwrap_or_else(|| crate::sandbox::Rng::from_entropy().below(1_000_000));
    let options = RehearsalOptions {
        faults: args.faults,
        seed,
        stand_ins: args.stand_in.iter().cloned().collect(),
        parallelism: parallelism(args),
        ignore_max_age: args.ignore_max_age,
        only: args.only.clone(),
    };
    let sink = event_sink(output, plan.targets.len());
    let rehearsal = rt
        .block_on(rehearse(&name, plan, options, sink))
        .map_err(|e| Failure::runtime(e.to_string()))?;
    if let (Some(path), Some(report)) = (&args.report, &rehearsal.report) {
        write_output(Some(path), &crate::report::run::markdown(report))?;
    }
    match output {
        Output::Json => {
            print_json(&json!({"rehearsal": rehearsal, "exit_code": rehearsal.exit_code()}))
        }
        Output::Table => print!("{}", crate::escape::terminal(&rehearsal.render())),
    }
    Ok(rehearsal.exit_code())
}

/// The state: `--state` (or `REKEY_STATE`), else the plan's `metadata.state`, else `.rekey`.
/// Targets at once: the operator's choice, else a real apply's default (the owners' rate
/// limits are real) or a rehearsal's (the simulators are in process: at 8, a 1,000-target
/// rehearsal under `realistic` faults took 120 s, at 32 under 40 s).
fn parallelism(args: &ApplyArgs) -> usize {
    usize::from(
        args.parallelism
            .unwrap_or(if args.rehearse { 32 } else { 8 }),
    )
}

fn state_dir(args: &ApplyArgs, plan: Option<&plan::Plan>) -> PathBuf {
    args.state_dir
        .clone()
        .or_else(|| {
            plan.and_then(|p| p.metadata.state.clone())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(crate::engine::journal::DEFAULT_STATE_DIR))
}

fn options(args: &ApplyArgs, plan: Option<&plan::Plan>) -> Result<ApplyOptions, Failure> {
    Ok(ApplyOptions {
        state_dir: state_dir(args, plan),
        lock: super::state::lease_options(&args.lock_lease, &args.lock_timeout)?,
        parallelism: parallelism(args),
        ignore_max_age: args.ignore_max_age,
        only: args.only.clone(),
        verify_backoff: std::time::Duration::from_millis(args.verify_backoff_ms),
        poll_interval: std::time::Duration::from_millis(args.poll_interval_ms),
    })
}

/// `--resume RUN_ID`: continue a run with the plan stored in its journal.
fn resume(
    rt: &tokio::runtime::Runtime,
    args: &ApplyArgs,
    run_id: &str,
    inputs: TokenInputs,
    output: Output,
) -> Result<u8, Failure> {
    // The stored plan's endpoints configure GCP and Azure. A run that cannot be read here
    // is left for `resume` to report, after it has checked the state directory's lock.
    let stored = match crate::engine::run::stored_plan(&state_dir(args, None), run_id) {
        Ok(plan) => plan,
        Err(_) => plan::load::parse(
            "(no stored plan)",
            "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {name: resume}\n",
        )
        .map_err(|d| Failure::runtime(d.message))?,
    };
    args.policy
        .endpoints
        .check_endpoints(&stored.endpoints)
        .map_err(|e| Failure::input(format!("run {run_id}: {e}")))?;
    let exec = args.policy.exec_provider(false);
    let env = rt.block_on(real_environment(
        true,
        &args.rate_limits,
        inputs,
        &stored,
        exec,
    ))?;
    let sink = event_sink(output, 0);
    let report = rt
        .block_on(crate::engine::run::resume(
            run_id,
            env,
            options(args, None)?,
            sink,
        ))
        .map_err(|e| Failure {
            code: engine_code(&e),
            message: e.to_string(),
        })?;
    finish_apply(&report, args.report.as_deref(), output)
}

/// `--refresh FILE`: record live state in the plan's `observed` entries; rotate nothing.
fn refresh(
    rt: &tokio::runtime::Runtime,
    plan: plan::Plan,
    env: &Environment,
    out: &Path,
    output: Output,
) -> Result<u8, Failure> {
    let mut refreshed = plan;
    let changes = rt
        .block_on(plan::refresh::refresh_observed(
            &mut refreshed,
            &env.circleci,
        ))
        .map_err(Failure::runtime)?;
    let yaml = plan::write::to_yaml(&refreshed, &Default::default())
        .map_err(|e| Failure::runtime(e.to_string()))?;
    write_output(Some(out), &yaml)?;
    match output {
        Output::Json => print_json(&json!({"out": out.display().to_string(), "changes": changes})),
        Output::Table => {
            for c in &changes {
                println!("{c}");
            }
            println!(
                "{} observation(s) changed; refreshed plan written to {}. Review it (the change may be someone else's rotation), then apply it.",
                changes.len(),
                out.display()
            );
        }
    }
    Ok(0)
}

/// `--dry-run`: read live state and print what each target would do.
fn dry_run(
    rt: &tokio::runtime::Runtime,
    args: &ApplyArgs,
    plan: &plan::Plan,
    env: &Environment,
    output: Output,
) -> Result<u8, Failure> {
    // With the journal (read-only): a target an earlier run already rotated is "done", not stale.
    // Reads only, so each CircleCI place is read once for every target that binds it.
    let circleci = env.circleci.clone().with_read_cache();
    // Each target is written as soon as it is previewed: a plan of 190,000 targets never has
    // its whole preview in memory. Targets are previewed and rendered on every core; the
    // writer takes them in the plan's order.
    let stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let mut tally = crate::engine::dryrun::Tally::default();
    let mut out = PreviewWriter::start(stdout, output, &plan.metadata.name.value);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    crate::engine::dryrun::preview_threaded(
        rt.handle(),
        threads,
        plan,
        &circleci,
        &env.providers,
        args.ignore_max_age,
        Some(&state_dir(args, Some(plan))),
        |t| {
            let mut one = crate::engine::dryrun::Tally::default();
            one.add(&t);
            (one, render_one(output, &t))
        },
        |(one, text)| {
            tally.merge(one);
            out.rendered(&text);
        },
    );
    out.finish(&tally)
        .map_err(|e| Failure::runtime(format!("cannot write the dry run: {e}")))?;
    Ok(if args.detailed_exitcode {
        tally.detailed_exit_code()
    } else if tally.detailed_exit_code() == 1 {
        1
    } else {
        0
    })
}

/// A dry run's output written target by target: exactly what `print_json` of the whole
/// preview, or `render_preview` (escaped for the terminal), print. The first write error is
/// kept and reported by [`PreviewWriter::finish`].
struct PreviewWriter<W: std::io::Write> {
    out: W,
    output: Output,
    first: bool,
    written: std::io::Result<()>,
}

impl<W: std::io::Write> PreviewWriter<W> {
    fn start(mut out: W, output: Output, plan: &str) -> Self {
        let written = match output {
            Output::Json => write!(out, "{{\n  \"plan\": {},\n  \"targets\": [", json!(plan)),
            Output::Table => {
                out.write_all(crate::escape::terminal(&preview_header(plan)).as_bytes())
            }
        };
        PreviewWriter {
            out,
            output,
            first: true,
            written,
        }
    }

    #[cfg(test)]
    fn target(&mut self, t: &crate::engine::dryrun::TargetPreview) {
        self.rendered(&render_one(self.output, t));
    }

    /// A target as [`render_one`] rendered it.
    fn rendered(&mut self, text: &str) {
        if self.written.is_ok() && self.output == Output::Json {
            self.written = self.out.write_all(if self.first { b"\n" } else { b",\n" });
        }
        self.first = false;
        if self.written.is_ok() {
            self.written = self.out.write_all(text.as_bytes());
        }
    }

    /// Ends the output with what the targets added up to.
    fn finish(mut self, totals: &crate::engine::dryrun::Tally) -> std::io::Result<W> {
        self.written?;
        match self.output {
            Output::Json => {
                // As the whole preview's pretty JSON has it: after `targets`, two spaces in.
                let totals = serde_json::to_string_pretty(&json!(totals))
                    .unwrap_or_default()
                    .replace('\n', "\n  ");
                let end = if self.first { "]" } else { "\n  ]" };
                writeln!(self.out, "{end},\n  \"totals\": {totals}\n}}")?
            }
            Output::Table => self
                .out
                .write_all(crate::escape::terminal(&totals.render()).as_bytes())?,
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One target of a dry run as [`PreviewWriter`] writes it: for JSON, the object indented as
/// the whole preview's pretty JSON indents it (four spaces), without the separator before it.
fn render_one(output: Output, t: &crate::engine::dryrun::TargetPreview) -> String {
    match output {
        Output::Json => {
            // Through a Value, as the whole preview's JSON is: its keys in sorted order.
            let one = serde_json::to_string_pretty(&json!(t)).unwrap_or_default();
            let mut text = String::with_capacity(one.len() + one.len() / 8);
            for (i, line) in one.lines().enumerate() {
                text.push_str(if i == 0 { "    " } else { "\n    " });
                text.push_str(line);
            }
            text
        }
        Output::Table => {
            let mut text = String::with_capacity(1024);
            render_target_preview(&mut text, t);
            match crate::escape::terminal(&text) {
                std::borrow::Cow::Borrowed(_) => text,
                escaped => escaped.into_owned(),
            }
        }
    }
}

fn preview_header(plan: &str) -> String {
    format!("Dry run of plan {plan}: nothing is changed.\n")
}

/// The outside world of a real run: CircleCI from CIRCLECI_HOST/token, the providers from the
/// registry, the stash key from REKEY_STASH_KEY or the keyring.
async fn real_environment(
    need_stash: bool,
    limits: &[(String, f64)],
    token_inputs: TokenInputs,
    plan: &plan::Plan,
    exec: crate::providers::exec::ExecProvider,
) -> Result<Environment, Failure> {
    let token = credentials::token(Service::Circleci).map_err(|e| Failure::input(e.to_string()))?;
    let mut circleci = crate::circleci::CircleCiClient::from_env(token)
        .map_err(|e| Failure::input(e.to_string()))?;
    if let Some(limiter) = registry::limiter(limits, "circleci", 50.0) {
        circleci = circleci.with_rate_limit(limiter);
    }
    let providers = registry::real(registry::RealInputs {
        plan,
        circleci: &circleci,
        rate_limits: limits,
        token_inputs,
        exec,
        // Without a stash nothing is minted: a dry run or a refresh.
        read_only: !need_stash,
    })
    .await
    .map_err(|e| match e {
        RegistryError::Config(m) => Failure::input(m),
        RegistryError::Build(m) => Failure::runtime(m),
    })?;
    let stash_key = if need_stash {
        crate::engine::stash::StashKey::from_env_or_keyring()
            .map_err(|e| Failure::input(e.to_string()))?
    } else {
        // A dry run mints nothing: a throwaway key keeps it away from the keyring.
        crate::engine::stash::StashKey::generate().map_err(|e| Failure::runtime(e.to_string()))?
    };
    Ok(Environment {
        circleci,
        providers,
        stash_key,
        hunt_aws: None,
    })
}

pub(crate) fn engine_code(e: &crate::engine::EngineError) -> u8 {
    match e {
        crate::engine::EngineError::Lock(l) if l.is_locked() => 5,
        crate::engine::EngineError::Lock(_) | crate::engine::EngineError::NoSuchRun(_) => 2,
        _ => 1,
    }
}

fn finish_apply(
    report: &crate::engine::run::RunReport,
    report_file: Option<&Path>,
    output: Output,
) -> Result<u8, Failure> {
    if let Some(path) = report_file {
        write_output(Some(path), &crate::report::run::markdown(report))?;
    }
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string(&json!({"summary": report})).unwrap_or_default()
        ),
        Output::Table => {
            println!("\nRun {} ({:?})", report.run, report.status);
            print!("{}", crate::report::run::summary_table(report));
        }
    }
    Ok(report.exit_code())
}

pub fn render_preview(preview: &crate::engine::dryrun::Preview) -> String {
    let mut out = preview_header(&preview.plan);
    for t in &preview.targets {
        render_target_preview(&mut out, t);
    }
    out.push_str(&preview.totals.render());
    out
}

/// One target of a dry run, as `render_preview` shows it. Written in place (a dry run renders
/// 190,000 of these): the same text as formatting each line on its own.
fn render_target_preview(out: &mut String, t: &crate::engine::dryrun::TargetPreview) {
    use crate::engine::dryrun::Action;
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = write!(out, "\n{} ({})", t.id, t.provider);
    let _ = match &t.action {
        Action::Rotate => out.write_str(": would rotate\n"),
        Action::Skip(why) => writeln!(out, ": would skip — {why}"),
        Action::Blocked(why) => writeln!(out, ": WOULD FAIL — {why}"),
    };
    if let Some(why) = &t.due {
        let _ = writeln!(out, "  due: {why}");
    }
    if let Some(p) = &t.principal {
        let _ = writeln!(out, "  principal: {p}");
    }
    let now = chrono::Utc::now();
    for c in &t.credentials {
        let current = if t.current.as_deref() == Some(c.id.as_str()) {
            " (in use)"
        } else {
            ""
        };
        let mut line = String::with_capacity(128);
        let _ = write!(line, "  credential {}{current}: {:?}, ", c.id, c.status);
        let _ = match c.created_at {
            Some(at) => write!(line, "{}d old, ", (now - at).num_days()),
            None => line.write_str("age unknown, "),
        };
        let _ = match c.last_used {
            Some(at) => writeln!(line, "last used {}", at.to_rfc3339()),
            None => line.write_str("never used\n"),
        };
        // The whole line, as it always was (an id may spell a status too).
        out.push_str(
            &line
                .replace("Active", "active")
                .replace("Inactive", "inactive"),
        );
    }
    for b in &t.bindings {
        let _ = write!(out, "  {}: ", b.place);
        for (i, var) in b.vars.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(var);
        }
        out.push('\n');
    }
    for (i, s) in t.steps.iter().enumerate() {
        let mark = if s.problem.is_some() { "✗" } else { " " };
        let _ = writeln!(
            out,
            "  {mark} {:>2}. {:<10} {}",
            i + 1,
            s.step.as_str(),
            s.description
        );
        if let Some(p) = &s.problem {
            let _ = writeln!(out, "        would fail: {p}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::dryrun::{Action, BindingPreview, PlannedStep, Preview, TargetPreview};

    fn target(id: &str, action: Action) -> TargetPreview {
        TargetPreview {
            id: id.into(),
            provider: "exec".into(),
            action,
            principal: Some("svc \u{1b}[31m".into()),
            credentials: Vec::new(),
            current: None,
            due: Some("created before the incident".into()),
            bindings: vec![BindingPreview {
                place: "project gh/acme/api".into(),
                vars: vec!["A: xxxx1234".into(), "B: missing".into()],
            }],
            steps: vec![PlannedStep {
                step: crate::engine::steps::Step::Mint,
                description: "mint".into(),
                problem: Some("no \"mint\" command".into()),
            }],
        }
    }

    #[test]
    fn a_streamed_dry_run_prints_what_the_whole_preview_printed() {
        for n in 0..3 {
            let preview = Preview::new(
                "p \"1\"".into(),
                (0..n)
                    .map(|i| {
                        let mut t = target(&format!("t{i}"), Action::Blocked("why".into()));
                        if i % 2 == 1 {
                            t.provider = "aws-iam".into();
                        }
                        t
                    })
                    .collect(),
            );
            for output in [Output::Json, Output::Table] {
                let mut out = PreviewWriter::start(Vec::new(), output, &preview.plan);
                preview.targets.iter().for_each(|t| out.target(t));
                let streamed = String::from_utf8(out.finish(&preview.totals).unwrap()).unwrap();
                let whole = match output {
                    Output::Json => format!(
                        "{}\n",
                        serde_json::to_string_pretty(&json!(preview)).unwrap()
                    ),
                    Output::Table => crate::escape::terminal(&render_preview(&preview)).into(),
                };
                assert_eq!(streamed, whole, "{n} targets");
            }
        }
    }

    /// The rendering of a target as it was before it was written in place: one `format!`
    /// per line.
    fn rendered_line_by_line(t: &TargetPreview) -> String {
        let mut out = String::new();
        out.push_str(&format!("\n{} ({})", t.id, t.provider));
        match &t.action {
            Action::Rotate => out.push_str(": would rotate\n"),
            Action::Skip(why) => out.push_str(&format!(": would skip — {why}\n")),
            Action::Blocked(why) => out.push_str(&format!(": WOULD FAIL — {why}\n")),
        }
        if let Some(why) = &t.due {
            out.push_str(&format!("  due: {why}\n"));
        }
        if let Some(p) = &t.principal {
            out.push_str(&format!("  principal: {p}\n"));
        }
        for c in &t.credentials {
            let age = c
                .created_at
                .map(|at| format!("{}d old", (chrono::Utc::now() - at).num_days()))
                .unwrap_or_else(|| "age unknown".into());
            let used = c
                .last_used
                .map(|at| format!("last used {}", at.to_rfc3339()))
                .unwrap_or_else(|| "never used".into());
            let current = if t.current.as_deref() == Some(c.id.as_str()) {
                " (in use)"
            } else {
                ""
            };
            out.push_str(
                &format!(
                    "  credential {}{current}: {:?}, {age}, {used}\n",
                    c.id, c.status
                )
                .replace("Active", "active")
                .replace("Inactive", "inactive"),
            );
        }
        for b in &t.bindings {
            out.push_str(&format!("  {}: {}\n", b.place, b.vars.join(", ")));
        }
        for (i, s) in t.steps.iter().enumerate() {
            let mark = if s.problem.is_some() { "✗" } else { " " };
            out.push_str(&format!(
                "  {mark} {:>2}. {:<10} {}\n",
                i + 1,
                s.step.as_str(),
                s.description
            ));
            if let Some(p) = &s.problem {
                out.push_str(&format!("        would fail: {p}\n"));
            }
        }
        out
    }

    #[test]
    fn a_target_renders_as_it_did_line_by_line() {
        use crate::providers::{CredentialInfo, CredentialStatus};
        let at = |days: i64| Some(chrono::Utc::now() - chrono::Duration::days(days));
        let credential = |id: &str, status, created_at, last_used| CredentialInfo {
            label: None,
            id: id.into(),
            status,
            created_at,
            last_used,
            last_used_service: None,
        };
        let mut previews = vec![
            target("t0", Action::Rotate),
            target("t1", Action::Skip("younger than max_age".into())),
            target("t2", Action::Blocked("why".into())),
        ];
        previews[0].credentials = vec![
            credential("AKIAOLD", CredentialStatus::Active, at(400), at(3)),
            credential("AKIAActiveInactive", CredentialStatus::Inactive, None, None),
        ];
        previews[0].current = Some("AKIAOLD".into());
        previews[0].bindings.push(BindingPreview {
            place: "context aws-prod".into(),
            vars: Vec::new(),
        });
        previews[1].principal = None;
        previews[1].due = None;
        previews[1].steps = (0..12)
            .map(|i| PlannedStep {
                step: crate::engine::steps::Step::Write,
                description: format!("write {i}"),
                problem: None,
            })
            .collect();
        for t in &previews {
            let mut text = String::new();
            render_target_preview(&mut text, t);
            assert_eq!(text, rendered_line_by_line(t));
        }
    }
}
