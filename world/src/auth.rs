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

use etcd_client::{Client, Permission};
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

fn err(store: &Etcd, op: &'static str, key: &str, e: etcd_client::Error) -> StoreError {
    let message = e.to_string();
    if message.contains("permission denied") || message.contains("user name is empty") {
        return StoreError::PermissionDenied {
            endpoints: store.describe_endpoints(),
            op,
            key: key.to_string(),
            message,
        };
    }
    StoreError::Etcd {
        endpoints: store.describe_endpoints(),
        op,
        key: key.to_string(),
        message,
    }
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
    let mut c: Client = store.client().clone();
    // Anonymous administration works only while authentication is off.
    let users = match c.user_list().await {
        Ok(u) => u,
        Err(e) => {
            let m = e.to_string();
            if m.contains("user name is empty") || m.contains("permission denied") {
                return Err(StoreError::Unsupported(format!(
                    "etcd {}: authentication is already enabled (`init` runs once; add hosts                      with `tend cluster auth add-host` and the root credentials)",
                    store.describe_endpoints()
                )));
            }
            return Err(err(store, "user list", "", e));
        }
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
        if users.users().iter().any(|x| x == &u.user) {
            c.user_change_password(u.user.clone(), u.password.clone())
                .await
                .map_err(|e| err(store, "user change password", &u.user, e))?;
        } else {
            c.user_add(u.user.clone(), u.password.clone(), None)
                .await
                .map_err(|e| err(store, "user add", &u.user, e))?;
        }
    }
    c.user_grant_role("root", "root")
        .await
        .map_err(|e| err(store, "user grant role", "root", e))?;
    let roles = c
        .role_list()
        .await
        .map_err(|e| err(store, "role list", "", e))?;
    if !roles.roles().iter().any(|r| r == CONTROLLER) {
        c.role_add(CONTROLLER)
            .await
            .map_err(|e| err(store, "role add", CONTROLLER, e))?;
    }
    let ns = format!("{}/", keys.namespace());
    c.role_grant_permission(CONTROLLER, Permission::read_write(ns.clone()).with_prefix())
        .await
        .map_err(|e| err(store, "role grant permission", &ns, e))?;
    c.user_grant_role(CONTROLLER, CONTROLLER)
        .await
        .map_err(|e| err(store, "user grant role", CONTROLLER, e))?;
    c.auth_enable()
        .await
        .map_err(|e| err(store, "auth enable", "", e))?;
    Ok(Init { root, controller })
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
    let mut c: Client = store.client().clone();
    let role = host_role(host);
    let creds = Credentials {
        user: role.clone(),
        password: password(),
    };
    let users = c
        .user_list()
        .await
        .map_err(|e| err(store, "user list", "", e))?;
    if users.users().iter().any(|x| x == &creds.user) {
        c.user_change_password(creds.user.clone(), creds.password.clone())
            .await
            .map_err(|e| err(store, "user change password", &creds.user, e))?;
    } else {
        c.user_add(creds.user.clone(), creds.password.clone(), None)
            .await
            .map_err(|e| err(store, "user add", &creds.user, e))?;
    }
    let roles = c
        .role_list()
        .await
        .map_err(|e| err(store, "role list", "", e))?;
    let others: Vec<String> = roles
        .roles()
        .iter()
        .filter_map(|r| r.strip_prefix(HOST_PREFIX))
        .filter(|h| *h != host)
        .map(str::to_string)
        .collect();
    if !roles.roles().iter().any(|r| r == &role) {
        c.role_add(role.clone())
            .await
            .map_err(|e| err(store, "role add", &role, e))?;
    }
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
        let what = String::from_utf8_lossy(perm.key()).into_owned();
        c.role_grant_permission(r.clone(), perm)
            .await
            .map_err(|e| err(store, "role grant permission", &what, e))?;
    }
    c.user_grant_role(creds.user.clone(), role.clone())
        .await
        .map_err(|e| err(store, "user grant role", &role, e))?;
    Ok(creds)
}
