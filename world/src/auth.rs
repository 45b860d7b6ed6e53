//! etcd's RBAC for a tend cluster (`tend cluster auth`): who may read and write which part of
//! the key layout (see [`crate::keys`]). etcd enforces it, not tend.
//!
//! - `root` (etcd's own): manages users and roles. Made by [`init`].
//! - `controller` (role and user): reads and writes the whole namespace: deploys, blobs,
//!   strings, rollouts. Made by [`init`].
//! - `host-<name>` (role and user, one per host, [`add_host`]): reads everything but other
//!   hosts' exports (`[blobs/, to/)`, `to/*/`, `to/<name>/`); writes its registration
//!   (`hosts/<name>`), its string-map entries (`maps/<name>/`), its exports
//!   (`to/*/<name>/` and `to/<r>/<name>/` for every host `r` known when either was added),
//!   and the scheduler's area (`sched/`, shared by the pool's members).
//!
//! A host may not write deploys, blobs or global strings, nor read what other hosts export to
//! each other. Exports to a host added later need [`add_host`] of that host first (it grants
//! every existing host the pair), so a host exports only to hosts the cluster knows.

use etcd_client::Permission;
use tend_model::world::StoreError;

use crate::keys::{escape, Keys};
use crate::store::etcd::Etcd;

/// The controller's role and user name.
pub const CONTROLLER: &str = "controller";

/// The prefix of hosts' role and user names.
pub const HOST_PREFIX: &str = "host-";

/// A user name and its new password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The etcd user.
    pub user: String,
    /// Its password (random, 128 bits of entropy twice over).
    pub password: String,
}

impl Credentials {
    /// The credentials as `tend` reads them from its environment (an `EnvironmentFile=` for
    /// systemd).
    pub fn env_file(&self, what: &str) -> String {
        format!(
            "# etcd credentials of {what}: keep this file secret (mode 0600)\n\
             TEND_ETCD_USER={}\nTEND_ETCD_PASSWORD={}\n",
            self.user, self.password
        )
    }
}

/// What [`init`] made.
#[derive(Clone, Debug)]
pub struct Init {
    /// etcd's `root`.
    pub root: Credentials,
    /// The controller's.
    pub controller: Credentials,
}

fn password() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The users etcd has.
async fn users(store: &Etcd) -> Result<Vec<String>, StoreError> {
    let r = store
        .call("user list", "", |mut c| async move { c.user_list().await })
        .await?;
    Ok(r.users().to_vec())
}

/// The roles etcd has.
async fn roles(store: &Etcd) -> Result<Vec<String>, StoreError> {
    let r = store
        .call("role list", "", |mut c| async move { c.role_list().await })
        .await?;
    Ok(r.roles().to_vec())
}

/// Creates the user, or gives an existing one (in `existing`) its new password.
async fn put_user(store: &Etcd, u: &Credentials, existing: &[String]) -> Result<(), StoreError> {
    let (name, pw) = (u.user.clone(), u.password.clone());
    if existing.contains(&u.user) {
        store
            .call("user change password", &u.user, |mut c| {
                let (name, pw) = (name.clone(), pw.clone());
                async move { c.user_change_password(name, pw).await }
            })
            .await?;
    } else {
        store
            .call("user add", &u.user, |mut c| {
                let (name, pw) = (name.clone(), pw.clone());
                async move { c.user_add(name, pw, None).await }
            })
            .await?;
    }
    Ok(())
}

/// Creates the role unless it is in `existing`.
async fn add_role(store: &Etcd, role: &str, existing: &[String]) -> Result<(), StoreError> {
    if existing.iter().any(|r| r == role) {
        return Ok(());
    }
    let name = role.to_string();
    store
        .call("role add", role, |mut c| {
            let name = name.clone();
            async move { c.role_add(name).await }
        })
        .await?;
    Ok(())
}

/// Grants `role` the permission.
async fn grant(store: &Etcd, role: &str, perm: Permission) -> Result<(), StoreError> {
    let what = String::from_utf8_lossy(perm.key()).into_owned();
    let role = role.to_string();
    store
        .call("role grant permission", &what, |mut c| {
            let (role, perm) = (role.clone(), perm.clone());
            async move { c.role_grant_permission(role, perm).await }
        })
        .await?;
    Ok(())
}

/// Grants `user` the role.
async fn grant_role(store: &Etcd, user: &str, role: &str) -> Result<(), StoreError> {
    let (user, role) = (user.to_string(), role.to_string());
    store
        .call("user grant role", &role.clone(), |mut c| {
            let (user, role) = (user.clone(), role.clone());
            async move { c.user_grant_role(user, role).await }
        })
        .await?;
    Ok(())
}

/// The role name of a host.
pub fn host_role(host: &str) -> String {
    format!("{HOST_PREFIX}{host}")
}

/// Creates `root` and the `controller` role and user, then enables authentication. Refuses
/// when authentication is already enabled (naming it), so credentials are never reset by
/// accident.
pub async fn init(store: &Etcd, namespace: &str) -> Result<Init, StoreError> {
    let keys = Keys::new(namespace);
    // Anonymous administration works only while authentication is off.
    let existing = match users(store).await {
        Ok(u) => u,
        Err(e) if already_enabled(&e) => return Err(enabled_error(&store.describe_endpoints())),
        Err(e) => return Err(e),
    };
    let root = Credentials {
        user: "root".into(),
        password: password(),
    };
    let controller = Credentials {
        user: CONTROLLER.into(),
        password: password(),
    };
    for u in [&root, &controller] {
        put_user(store, u, &existing).await?;
    }
    grant_role(store, "root", "root").await?;
    add_role(store, CONTROLLER, &roles(store).await?).await?;
    let ns = format!("{}/", keys.namespace());
    grant(store, CONTROLLER, Permission::read_write(ns).with_prefix()).await?;
    grant_role(store, CONTROLLER, CONTROLLER).await?;
    store
        .call(
            "auth enable",
            "",
            |mut c| async move { c.auth_enable().await },
        )
        .await?;
    Ok(Init { root, controller })
}

/// The refusal of [`init`] on a cluster whose authentication is on.
pub fn enabled_error(endpoints: &str) -> StoreError {
    StoreError::Unsupported(format!(
        "etcd {endpoints}: authentication is already enabled (`init` runs once; add hosts \
         with `tend cluster auth add-host` and the root credentials)"
    ))
}

/// Whether etcd refused an anonymous request because authentication is on.
pub fn already_enabled(e: &StoreError) -> bool {
    let m = e.to_string();
    matches!(e, StoreError::PermissionDenied { .. }) || m.contains("user name is empty")
}

/// Creates (or, for a host that exists, re-grants and gives a new password to) the user and
/// role of `host`, and grants every other host the right to export to it. Needs `root`.
pub async fn add_host(
    store: &Etcd,
    namespace: &str,
    host: &str,
) -> Result<Credentials, StoreError> {
    crate::keys::check_host(host).map_err(|e| StoreError::Unsupported(e.to_string()))?;
    let keys = Keys::new(namespace);
    let role = host_role(host);
    let creds = Credentials {
        user: role.clone(),
        password: password(),
    };
    put_user(store, &creds, &users(store).await?).await?;
    let roles = roles(store).await?;
    let others: Vec<String> = roles
        .iter()
        .filter_map(|r| r.strip_prefix(HOST_PREFIX))
        .filter(|h| *h != host)
        .map(str::to_string)
        .collect();
    add_role(store, &role, &roles).await?;
    let ns = keys.namespace().to_string();
    let me = escape(host);
    let mut grants: Vec<(String, Permission)> = vec![
        // Everything before the exports (blobs, deploys, hosts, maps, sched, strings).
        (
            role.clone(),
            Permission::read(format!("{ns}/blobs/")).with_range_end(keys.exports_area()),
        ),
        (
            role.clone(),
            Permission::read(keys.exports_to("*")).with_prefix(),
        ),
        (
            role.clone(),
            Permission::read(keys.exports_to(host)).with_prefix(),
        ),
        (role.clone(), Permission::read_write(keys.host(host))),
        (
            role.clone(),
            Permission::read_write(format!("{}{me}/", keys.maps_area())).with_prefix(),
        ),
        (
            role.clone(),
            Permission::read_write(keys.exports_from("*", host)).with_prefix(),
        ),
        (
            role.clone(),
            Permission::read_write(format!("{ns}/sched/")).with_prefix(),
        ),
    ];
    for other in &others {
        grants.push((
            role.clone(),
            Permission::read_write(keys.exports_from(other, host)).with_prefix(),
        ));
        grants.push((
            host_role(other),
            Permission::read_write(keys.exports_from(host, other)).with_prefix(),
        ));
    }
    for (r, perm) in grants {
        grant(store, &r, perm).await?;
    }
    grant_role(store, &creds.user, &role).await?;
    Ok(creds)
}
