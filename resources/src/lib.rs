//! Resource kinds (see [`registry`] for the list) and the [`registry`] that
//! maps each kind name to its schema, constructor and automatic edges.
//!
//! Kinds implement [`tend_engine::Resource`]; nothing here drives execution (that is the
//! engine's job) and only `kv` and `schedule` talk to the cluster (through the World handed
//! to them in `init`); `svc` and `cron` talk to systemd over D-Bus. Constructors validate a spec without
//! touching the host; all host access happens in `watch` and `check_apply`.

mod account;
mod authorized_key;
mod cron;
mod exec;
mod file;
mod fswatch;
mod gzip;
mod hostname;
mod json_edit;
mod kv;
mod line;
mod mount;
mod noop;
mod params;
mod pkg;
mod print;
mod process;
mod procpoll;
mod schedule;
mod svc;
mod sysctl;
mod tar;
mod testkind;
mod timer;
pub mod value;
mod worldcell;

use tend_engine::{Kind, Registry};

/// How many `apt-get` transactions the `pkg` kind has started in this process (each run of
/// `apt-get`, including the retries after a failed batch). For tests and benchmarks.
#[doc(hidden)]
pub fn pkg_transactions_started() -> u64 {
    pkg::transactions_started()
}

/// Makes the `svc` kind reach systemd's system bus at this D-Bus address (`unix:path=...`)
/// instead of `DBUS_SYSTEM_BUS_ADDRESS` or the standard socket. Only before the first `svc`
/// resource connects; the first call wins. For tests and benchmarks, which talk to a systemd
/// in a container.
#[doc(hidden)]
pub fn svc_use_system_bus(address: &str) {
    svc::set_system_address(address.to_string())
}

/// Makes every `mount` resource of this process manage `path` instead of `/etc/fstab` (the
/// first call wins). For tests, which must not touch the host's fstab.
#[doc(hidden)]
pub fn mount_use_fstab(path: &std::path::Path) {
    mount::set_fstab(path.to_path_buf())
}

/// Makes every system `cron` resource of this process write its timer unit in `dir` instead
/// of `/etc/systemd/system` (the first call wins). For tests and benchmarks, which talk to a
/// systemd in a container (with [`svc_use_system_bus`]).
#[doc(hidden)]
pub fn cron_use_unit_dir(dir: &std::path::Path) {
    cron::set_unit_dir(dir.to_path_buf())
}

/// How many `daemon-reload`s the `svc` kind has asked systemd for in this process. For tests.
#[doc(hidden)]
pub fn svc_daemon_reloads() -> u64 {
    svc::reloads()
}

/// Every kind this crate implements, ready to hand to the engine and to the language.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(Kind {
        schema: file::schema().clone(),
        build: file::build,
        autoedges: Some(file::autoedges),
        // Closing the inotify instance at exit waits for the kernel unless its watches are
        // removed first.
        at_exit: Some(fswatch::release_for_exit),
        reverse: Some(file::reverse),
    });
    r.register(Kind {
        schema: cron::schema().clone(),
        build: cron::build,
        autoedges: Some(cron::autoedges),
        reverse: None,
        at_exit: None,
    });
    r.register(Kind {
        schema: exec::schema().clone(),
        build: exec::build,
        autoedges: Some(exec::autoedges),
        at_exit: None,
        reverse: None,
    });
    r.register(Kind {
        schema: account::group_schema().clone(),
        build: account::build_group,
        autoedges: Some(account::group_autoedges),
        at_exit: None,
        reverse: None,
    });
    r.register(Kind {
        schema: account::user_schema().clone(),
        build: account::build_user,
        autoedges: Some(account::user_autoedges),
        at_exit: None,
        reverse: None,
    });
    r.register(Kind {
        schema: hostname::schema().clone(),
        build: hostname::build,
        autoedges: Some(hostname::autoedges),
        reverse: None,
        at_exit: None,
    });
    r.register(Kind {
        schema: gzip::schema().clone(),
        build: gzip::build,
        autoedges: Some(gzip::autoedges),
        reverse: None,
        at_exit: None,
    });
    r.register(Kind {
        schema: json_edit::schema().clone(),
        build: json_edit::build,
        autoedges: Some(json_edit::autoedges),
        reverse: None,
        at_exit: None,
    });
    r.register(Kind {
        schema: kv::schema().clone(),
        build: kv::build,
        autoedges: None,
        at_exit: None,
        reverse: None,
    });
    r.register(Kind {
        schema: line::schema().clone(),
        build: line::build,
        autoedges: Some(line::autoedges),
        at_exit: None,
        reverse: None,
    });
    r.register(Kind {
        schema: mount::schema().clone(),
        build: mount::build,
        autoedges: Some(mount::autoedges),
        reverse: None,
        at_exit: None,
    });
    r.register(Kind {
        schema: schedule::schema().clone(),
        build: schedule::build,
        autoedges: None,
        reverse: None,
        at_exit: None,
    });
    r.register(Kind {
        schema: authorized_key::schema().clone(),
        build: authorized_key::build,
        autoedges: Some(authorized_key::autoedges),
        reverse: None,
        at_exit: None,
    });
    r.register(Kind {
        schema: sysctl::schema().clone(),
        build: sysctl::build,
        autoedges: Some(sysctl::autoedges),
        at_exit: None,
        reverse: None,
    });
    r.register(Kind {
        schema: value::schema().clone(),
        build: value::build,
        autoedges: None,
        at_exit: None,
        reverse: None,
    });
    r.register(Kind {
        schema: noop::schema().clone(),
        build: noop::build,
        autoedges: None,
        at_exit: None,
        reverse: None,
    });
    r.register(Kind {
        schema: pkg::schema().clone(),
        build: pkg::build,
        autoedges: None,
        at_exit: None,
        reverse: None,
    });
    r.register(Kind {
        schema: print::schema().clone(),
        build: print::build,
        autoedges: None,
        at_exit: None,
        reverse: None,
    });
    r.register(Kind {
        schema: svc::schema().clone(),
        build: svc::build,
        autoedges: Some(svc::autoedges),
        at_exit: None,
        reverse: None,
    });
    r.register(Kind {
        schema: tar::schema().clone(),
        build: tar::build,
        autoedges: Some(tar::autoedges),
        reverse: None,
        at_exit: None,
    });
    r.register(Kind {
        schema: timer::schema().clone(),
        build: timer::build,
        autoedges: None,
        at_exit: None,
        reverse: None,
    });
    r.register(Kind {
        schema: testkind::schema().clone(),
        build: testkind::build,
        autoedges: None,
        at_exit: None,
        reverse: None,
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use tend_model::check_field;
    use tend_model::{GraphSpec, ResSpec};

    #[test]
    fn every_kind_is_registered() {
        let r = registry();
        let kinds: Vec<_> = r.kinds().map(|k| k.schema.kind.clone()).collect();
        assert_eq!(
            kinds,
            [
                "cron",
                "exec",
                "file",
                "group",
                "gzip",
                "hostname",
                "json:edit",
                "kv",
                "line",
                "mount",
                "noop",
                "pkg",
                "print",
                "schedule",
                "ssh:authorized_key",
                "svc",
                "sysctl",
                "tar",
                "test",
                "timer",
                "user",
                "value"
            ]
        );
    }

    #[test]
    fn every_default_fits_its_own_field() {
        for kind in registry().kinds() {
            for f in &kind.schema.fields {
                if let Some(d) = &f.default {
                    check_field(f, d).unwrap_or_else(|e| {
                        panic!(
                            "{}.{}: default {d} does not fit: {e}",
                            kind.schema.kind, f.name
                        )
                    });
                }
                assert!(
                    !f.doc.is_empty(),
                    "{}.{} has no doc",
                    kind.schema.kind,
                    f.name
                );
            }
        }
    }

    #[test]
    fn file_publishes_state_constants() {
        let r = registry();
        let c = r.get("file").unwrap().schema.all_constants();
        let names: Vec<_> = c
            .iter()
            .filter(|c| c.param == "state")
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["exists", "absent", "undefined"]);
    }

    #[test]
    fn defaults_alone_build_where_no_field_is_required() {
        let r = registry();
        let check = |kind: &str, name: &str| {
            let g = GraphSpec {
                resources: vec![ResSpec::new(kind, name)],
                edges: Vec::new(),
            };
            tend_engine::check_graph(&r, &g)
        };
        for (kind, name) in [
            ("noop", "n"),
            ("print", "p"),
            ("test", "t"),
            ("file", "/tmp/x"),
            ("exec", "/bin/true"),
            ("user", "alice"),
            ("group", "staff"),
        ] {
            check(kind, name).unwrap_or_else(|e| panic!("{kind}: {e:?}"));
        }
        // timer needs an interval.
        assert!(check("timer", "t").is_err());
    }
}
