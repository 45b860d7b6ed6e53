//! `tend cluster auth init|add-host`: sets up etcd's RBAC for a tend cluster (the roles are
//! described in `tend_world::auth`): `init` creates `root` and the `controller`, then enables
//! authentication; `add-host NAME` creates the host's user and role (run it for each host,
//! with the root credentials). Credentials are printed as an environment file, or written to
//! `--out` (mode 0600, never overwritten).
//!
//! Exit status: 0 done; 1 etcd failed or refused; 2 bad arguments (an existing `--out`, no
//! `--etcd`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use tend_world::auth;
use tend_world::store::etcd::Etcd;

/// Arguments of `tend cluster`.
#[derive(clap::Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// etcd's users, roles and permissions for tend.
    #[command(subcommand)]
    Auth(Auth),
}

#[derive(clap::Subcommand)]
enum Auth {
    /// Create `root` and the `controller` role and user, then enable authentication (once,
    /// against etcd without authentication).
    Init {
        #[command(flatten)]
        cluster: crate::cli::ClusterFlags,
        /// Write `root.env` and `controller.env` (mode 0600) into this directory instead of
        /// printing the credentials.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Create the user and role of a host (or re-grant it and give it a new password), with
    /// the root credentials (`--etcd-user root`).
    AddHost {
        /// The host's name, as it runs `tend run --hostname NAME`.
        #[arg(value_name = "NAME")]
        name: String,
        #[command(flatten)]
        cluster: crate::cli::ClusterFlags,
        /// Write the host's credentials (mode 0600) to this file instead of printing them.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// Runs `tend cluster`.
pub fn main(args: ClusterArgs) -> ExitCode {
    let rt = match crate::cli::runtime("cluster", Some(1)) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let What::Auth(auth) = args.what;
    let (cluster, outputs) = match &auth {
        Auth::Init { cluster, out_dir } => (
            cluster,
            out_dir
                .iter()
                .flat_map(|d| [d.join("root.env"), d.join("controller.env")])
                .collect::<Vec<_>>(),
        ),
        Auth::AddHost { cluster, out, .. } => (cluster, out.iter().cloned().collect()),
    };
    if cluster.etcd.is_empty() {
        eprintln!("tend cluster auth: --etcd URL is required (RBAC is etcd's)");
        return ExitCode::from(2);
    }
    if let Some(p) = outputs.iter().find(|p| p.exists()) {
        eprintln!(
            "tend cluster auth: {} exists; not overwriting credentials",
            p.display()
        );
        return ExitCode::from(2);
    }
    match rt.block_on(run(auth)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tend cluster auth: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn connect(cluster: &crate::cli::ClusterFlags) -> Result<Etcd> {
    let cfg = cluster.etcd_config().context("--etcd URL is required")?;
    Etcd::connect(cfg)
        .await
        .with_context(|| format!("connecting to etcd at {}", cluster.etcd.join(",")))
}

async fn run(auth: Auth) -> Result<()> {
    match auth {
        Auth::Init { cluster, out_dir } => {
            let store = match connect(&cluster).await {
                // An anonymous connection to etcd with authentication on fails already.
                Err(e)
                    if e.downcast_ref::<tend_world::StoreError>()
                        .is_some_and(auth::already_enabled) =>
                {
                    return Err(auth::enabled_error(&cluster.etcd.join(",")).into())
                }
                r => r?,
            };
            let made = auth::init(&store, cluster.namespace()).await?;
            let root = made.root.env_file("etcd's root (manages users and roles)");
            let ctl = made
                .controller
                .env_file("the controller (`tend deploy`, `tend world`)");
            match out_dir {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    write_secret(&dir.join("root.env"), &root)?;
                    write_secret(&dir.join("controller.env"), &ctl)?;
                    println!(
                        "authentication enabled on {}; credentials in {} and {}",
                        cluster.etcd.join(","),
                        dir.join("root.env").display(),
                        dir.join("controller.env").display()
                    );
                }
                None => {
                    println!("{root}\n{ctl}");
                    eprintln!(
                        "tend cluster auth: authentication enabled on {}; add each host with \
                         `tend cluster auth add-host NAME --etcd-user root`",
                        cluster.etcd.join(",")
                    );
                }
            }
            Ok(())
        }
        Auth::AddHost { name, cluster, out } => {
            let store = connect(&cluster).await?;
            let creds = auth::add_host(&store, cluster.namespace(), &name)
                .await
                .map_err(|e| match e {
                    tend_world::StoreError::PermissionDenied { .. } => anyhow::anyhow!(
                        "{e} (managing users and roles needs etcd's root: --etcd-user root, \
                         with the password from `tend cluster auth init`)"
                    ),
                    e => e.into(),
                })?;
            let text = creds.env_file(&format!("host {name} (`tend run --hostname {name}`)"));
            match out {
                Some(path) => {
                    write_secret(&path, &text)?;
                    println!("host {name}: credentials in {}", path.display());
                }
                None => print!("{text}"),
            }
            eprintln!(
                "tend cluster auth: host {name} may read deploys and what is exported to it, and \
                 write its registration, string maps and exports; with etcd's \
                 --client-cert-auth, give it a client certificate with CN={}",
                creds.user
            );
            Ok(())
        }
    }
}

/// Writes a new file readable by its owner only.
fn write_secret(path: &Path, text: &str) -> Result<()> {
    Ok(tend_front::signing::write_new(
        path,
        text.as_bytes(),
        0o600,
    )?)
}
