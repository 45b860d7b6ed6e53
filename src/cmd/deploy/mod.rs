//! `tend deploy PROGRAM [--message M] [--force] [--parent ID] [--key FILE] [--wait [--timeout S]
//! [--json]]`, `tend deploy --rollback ID`, `tend deploy --list`: the controller's side of
//! deploys (DESIGN.md "Deploys"). `--wait` follows the hosts until they converge on it
//! ([`wait`]). `--key` signs the deploy's manifest (`tend_front::signing`) for the id and
//! parent it lands on; when another deploy lands first, `--force` signs again on top of it.
//!
//! A program is type-checked before anything is uploaded (a program that does not check is
//! never published); its bundle goes through the World's content-addressed file store, and the
//! deploy is appended with a compare-and-swap on the parent, so two controllers cannot silently
//! overwrite each other.

mod rollout;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tend_front::bundle::{check_program, make_bundle};
use tend_front::signing::{self, ManifestHead, SigningKey};
use tend_world::{Deploy, DeployWorld, FsWorld, NewDeploy, World, WorldConfig, WorldError};

use crate::cli::WorldFlags;

/// Arguments of `tend deploy`.
#[derive(clap::Args)]
pub struct DeployArgs {
    /// The program to publish: an `.mcl` file or a directory holding `main.mcl`.
    #[arg(required_unless_present_any = ["rollback", "list", "resume"])]
    program: Option<PathBuf>,
    /// The deploy message.
    #[arg(long, short = 'm', default_value = "")]
    message: String,
    /// Publish even when another deploy landed after the parent this deploy was based on.
    #[arg(long)]
    force: bool,
    /// The deploy this one is based on (default: the latest when `tend deploy` starts). The
    /// deploy is refused when it is no longer the latest, unless `--force`.
    #[arg(long, value_name = "ID")]
    parent: Option<u64>,
    /// Republish the bundle of an earlier deploy as a new deploy.
    #[arg(long, value_name = "ID", conflicts_with = "program")]
    rollback: Option<u64>,
    /// Show the deploy history.
    #[arg(long, conflicts_with_all = ["program", "rollback"])]
    list: bool,
    /// After publishing, wait until every registered host runs the deploy converged (exit
    /// 0), or one rejects it or fails a resource, or the timeout passes (exit 1, naming the
    /// hosts).
    #[arg(long, conflicts_with = "list")]
    wait: bool,
    /// How long `--wait` waits (for a rollout: each stage), in seconds.
    #[arg(long, value_name = "S", default_value_t = 600.0)]
    timeout: f64,
    /// With `--wait` (or a rollout): print each final per-host table as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// A staged rollout: the deploy goes to N hosts (or P% of them) first, waited for as
    /// `--wait` does, then to the rest in batches; it stops at the first batch that fails.
    #[arg(long, value_name = "N|P%", value_parser = rollout::Size::parse, conflicts_with_all = ["list", "rollback", "wait"])]
    canary: Option<rollout::Size>,
    /// With `--canary`: the size of each later batch (default: all the rest at once).
    #[arg(long, value_name = "N|P%", value_parser = rollout::Size::parse, requires = "canary")]
    batch: Option<rollout::Size>,
    /// With `--canary`: when a stage fails, deploy the previous bundle again to the hosts the
    /// rollout reached.
    #[arg(long, requires = "canary")]
    rollback_on_failure: bool,
    /// Go on with the rollout recorded in the World (after a controller died or a stage
    /// timed out or failed and was fixed).
    #[arg(long, conflicts_with_all = ["program", "list", "rollback", "canary", "wait"])]
    resume: bool,
    /// Sign the deploy with this private key (PKCS#8 PEM, mode 0600, from `tend keygen`):
    /// hosts that trust its public key (`tend run --trust`) run only signed deploys.
    #[arg(
        long,
        value_name = "FILE",
        env = "TEND_DEPLOY_KEY",
        conflicts_with = "list"
    )]
    key: Option<PathBuf>,
    /// Only the hosts whose name matches one of these patterns (`*` and `?`, comma
    /// separated: `--hosts 'web*,db1'`) take the deploy; the others keep their program.
    #[arg(long, value_name = "PATTERNS", conflicts_with = "list")]
    hosts: Option<String>,
    /// Only the hosts with these labels take the deploy (`--selector role=web,dc=par`; a
    /// host's labels are its `tend run --label`s and `os`).
    #[arg(long, value_name = "K=V,...", conflicts_with = "list")]
    selector: Option<String>,
    #[command(flatten)]
    world: WorldFlags,
}

/// The deploy's target from `--hosts` and `--selector` (`None`: every host).
fn target(args: &DeployArgs) -> Result<Option<tend_world::DeployTarget>, String> {
    if args.hosts.is_none() && args.selector.is_none() {
        return Ok(None);
    }
    let mut t = tend_world::DeployTarget::default();
    if let Some(h) = &args.hosts {
        t.hosts = h
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if t.hosts.is_empty() {
            return Err(format!("--hosts {h:?} names no host pattern"));
        }
    }
    if let Some(sel) = &args.selector {
        for pair in sel.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = crate::cli::parse_label(pair).map_err(|e| format!("--selector: {e}"))?;
            t.selector.insert(k, v);
        }
        if t.selector.is_empty() {
            return Err(format!("--selector {sel:?} holds no k=v pair"));
        }
    }
    Ok(Some(t))
}

/// Runs `tend deploy`.
pub fn main(args: DeployArgs) -> ExitCode {
    let rt = match crate::cli::runtime("deploy", Some(2)) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let code = rt.block_on(run(args));
    rt.shutdown_background();
    code
}

async fn run(args: DeployArgs) -> ExitCode {
    // A key that cannot be used is found before anything is checked or uploaded.
    let key = match args
        .key
        .as_deref()
        .map(signing::read_secret_key)
        .transpose()
    {
        Ok(k) => k,
        Err(e) => {
            eprintln!("tend deploy: --key {e}; nothing was published");
            return ExitCode::from(2);
        }
    };
    // Check first: a program that does not type-check is never published.
    if let Some(program) = &args.program {
        if let Err(text) = check_program(program, tend_resources::registry().schemas()) {
            eprint!("{text}");
            eprintln!("tend deploy: the program does not check; nothing was published");
            return ExitCode::from(1);
        }
    }
    if let Err(e) = target(&args) {
        eprintln!("tend deploy: {e}");
        return ExitCode::from(2);
    }
    if !(args.timeout.is_finite() && args.timeout >= 0.0) {
        eprintln!(
            "tend deploy: --timeout {} is not a number of seconds",
            args.timeout
        );
        return ExitCode::from(2);
    }
    match publish(args, key).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("tend deploy: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Who is deploying: `$USER@hostname`.
fn author() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}

async fn connect(flags: &WorldFlags) -> Result<World> {
    let mut cfg = WorldConfig::with_backend(flags.backend(), "tend-deploy");
    cfg.namespace = flags.namespace().to_string();
    cfg.register = false;
    World::connect(cfg)
        .await
        .context("connecting to the world (for the embedded store, stop the daemon that owns it or use --etcd)")
}

fn show_time(ms: u64) -> String {
    crate::api::views::rfc3339_ms(ms)
}

/// Publishes (or lists); with `--wait`, waits. Returns whether the command succeeded.
async fn publish(args: DeployArgs, key: Option<SigningKey>) -> Result<bool> {
    let world = connect(&args.world).await?;
    let timeout = Duration::from_secs_f64(args.timeout);
    let result = if args.resume {
        rollout::resume(&world, key.as_ref(), &author(), timeout, args.json).await
    } else {
        match publish_on(&world, &args, key.as_ref()).await {
            Ok(Outcome::Published(id)) if args.wait => {
                wait::wait(&world, id, timeout, args.json).await
            }
            Ok(Outcome::RolledOut(ok)) => Ok(ok),
            Ok(_) => Ok(true),
            Err(e) => Err(e),
        }
    };
    let _ = world.close().await;
    result
}

/// What `publish_on` did.
enum Outcome {
    /// Showed the history.
    Listed,
    /// Published a deploy.
    Published(u64),
    /// Ran a staged rollout: whether every stage converged.
    RolledOut(bool),
}

/// Publishes the deploy, runs a rollout, or shows the history.
async fn publish_on(world: &World, args: &DeployArgs, key: Option<&SigningKey>) -> Result<Outcome> {
    if args.list {
        let deploys = world.list_deploys().await?;
        if deploys.is_empty() {
            println!("no deploys yet");
        }
        let latest = deploys.last().map(|d| d.id);
        println!(
            "{:<6} {:<21} {:<24} {:<14} {:<24} MESSAGE",
            "ID", "TIME", "AUTHOR", "BUNDLE", "SIGNED BY"
        );
        for d in &deploys {
            let mark = if Some(d.id) == latest { "*" } else { " " };
            println!(
                "{:<6} {:<25} {:<24} {:<14} {:<24} {}",
                format!("{}{mark}", d.id),
                show_time(d.time_ms),
                d.author,
                &d.bundle[..d.bundle.len().min(12)],
                d.signature
                    .as_ref()
                    .map_or("-".to_string(), |s| signing::fingerprint(&s.key)),
                d.message
            );
        }
        return Ok(Outcome::Listed);
    }
    let parent = match args.parent {
        Some(p) => Some(p),
        None => world.latest_deploy().await?.map(|d| d.id),
    };
    let (bundle, message) = if let Some(id) = args.rollback {
        let old = world
            .get_deploy(id)
            .await
            .with_context(|| format!("reading deploy {id}"))?;
        let message = if args.message.is_empty() {
            format!("rollback to deploy {id}")
        } else {
            args.message.clone()
        };
        (old.bundle, message)
    } else {
        let program = args.program.as_deref().context("no program given")?;
        let dir = make_bundle(program)?;
        let hash = world
            .fs_put_tree(dir.path())
            .await
            .with_context(|| format!("uploading the bundle of {}", program.display()))?;
        (hash, args.message.clone())
    };
    let author = author();
    let target = target(args).map_err(|e| anyhow::anyhow!(e))?;
    let draft = Draft {
        bundle,
        message,
        author,
        target,
        parent,
        force: args.force,
    };
    if let Some(canary) = args.canary {
        let plan = (canary, args.batch, args.rollback_on_failure);
        let timeout = Duration::from_secs_f64(args.timeout);
        return Ok(Outcome::RolledOut(
            rollout::start(world, key, draft, plan, timeout, args.json).await?,
        ));
    }
    let deploy = append(world, key, &draft).await?;
    let parent = deploy
        .as_ref()
        .ok()
        .and_then(|d| d.id.checked_sub(1))
        .filter(|p| *p > 0);
    match deploy {
        Ok(d) => {
            let line = format!(
                "deploy {} published (bundle {}, parent {}{}{})",
                d.id,
                &d.bundle[..d.bundle.len().min(12)],
                parent.map_or("none".to_string(), |p| p.to_string()),
                d.target
                    .as_ref()
                    .map_or(String::new(), |t| format!(", for {t}")),
                d.signature.as_ref().map_or(String::new(), |s| format!(
                    ", signed by {}",
                    signing::fingerprint(&s.key)
                ))
            );
            // With --json, stdout holds only the JSON document.
            if args.json {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
            Ok(Outcome::Published(d.id))
        }
        Err(e @ WorldError::DeployConflict { .. }) => {
            bail!("{e}: another controller deployed in the meantime (see `tend deploy --list`)")
        }
        Err(e) => Err(e).context("appending the deploy"),
    }
}

/// What a deploy to append holds.
struct Draft {
    bundle: String,
    message: String,
    author: String,
    target: Option<tend_world::DeployTarget>,
    /// The deploy believed to be the latest.
    parent: Option<u64>,
    /// Append even on top of a newer deploy (signed: sign again on top of the latest).
    force: bool,
}

/// Appends `draft` as a deploy, signed with `key` when there is one.
async fn append(
    world: &World,
    key: Option<&SigningKey>,
    draft: &Draft,
) -> Result<Result<Deploy, WorldError>> {
    let Draft {
        bundle,
        message,
        author,
        target,
        ..
    } = draft;
    let mut parent = draft.parent;
    let r = match key {
        None => {
            world
                .add_deploy(NewDeploy {
                    bundle: bundle.clone(),
                    message: message.clone(),
                    author: author.clone(),
                    parent,
                    force: draft.force,
                    signature: None,
                    target: target.clone(),
                })
                .await
        }
        Some(key) => {
            let entries = world
                .fs_tree(bundle)
                .await
                .with_context(|| format!("reading the bundle {bundle} to sign it"))?;
            // A signature names the id and parent it was made for: when another deploy lands
            // first, `--force` signs again on top of it.
            if draft.force {
                parent = world.latest_deploy().await?.map(|d| d.id);
            }
            let mut tries = 0;
            loop {
                let parent_deploy = match parent {
                    Some(p) => match world.get_deploy(p).await {
                        Ok(d) => Some(d),
                        // Not the latest either: refused below as any stale parent is.
                        Err(WorldError::DeployNotFound(_)) => None,
                        Err(e) => {
                            return Err(e).with_context(|| {
                                format!("reading the parent deploy {p} to sign on top of it")
                            })
                        }
                    },
                    None => None,
                };
                let head = head_on(
                    world,
                    parent_deploy.as_ref(),
                    bundle,
                    message,
                    author,
                    target.as_ref(),
                );
                let signature = signing::sign(key, &signing::manifest(&head, &entries));
                let r = world
                    .add_deploy(NewDeploy {
                        bundle: bundle.clone(),
                        message: message.clone(),
                        author: author.clone(),
                        parent,
                        force: false,
                        signature: Some(signature),
                        target: target.clone(),
                    })
                    .await;
                match r {
                    Err(WorldError::DeployConflict { latest, .. }) if draft.force && tries < 10 => {
                        tries += 1;
                        parent = latest;
                    }
                    other => break other,
                }
            }
        }
    };
    Ok(r)
}

/// The manifest head of the deploy that lands on top of `parent` (its id is the parent's
/// plus one), for signing.
fn head_on<'a>(
    world: &'a World,
    parent: Option<&'a Deploy>,
    bundle: &'a str,
    message: &'a str,
    author: &'a str,
    target: Option<&'a tend_world::DeployTarget>,
) -> ManifestHead<'a> {
    ManifestHead {
        namespace: world.keys().namespace(),
        id: parent.map_or(0, |d| d.id) + 1,
        parent: parent.map(|d| d.hash.as_str()),
        bundle,
        message,
        author,
        target,
    }
}
