//! Host facts (`os.*`, `sys.*`): what the program can know of the host it runs on.
//!
//! Snapshots (`FuncKind::Impure`) where the value does not change while tend runs (the OS
//! family, the command line); stream sources ([`super::stream`]) where it does (`sys.load`
//! every 5 s as the kernel updates it, `sys.uptime` every second, `sys.cpu_count` on CPU
//! hotplug within 5 s, `os.user_exists` on each change of `/etc/passwd`).

use std::path::Path;

use tend_model::Value;

use super::golang::s;
use super::{FuncError, Invoke};

/// The family marker files mgmt looks for, in its order.
const FAMILIES: [(&str, &str); 3] = [
    ("redhat", "/etc/redhat-release"),
    ("debian", "/etc/debian_version"),
    ("archlinux", "/etc/arch-release"),
];

/// `os.family() str`: `redhat`, `debian`, `archlinux`, or `""` when unknown.
pub(super) fn family(_: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    Ok(Value::Str(os_family()))
}

/// This host's OS family (`redhat`, `debian`, `archlinux`, or `""`), also `tend run`'s `os`
/// label.
pub fn os_family() -> String {
    FAMILIES
        .iter()
        .find(|(_, f)| Path::new(f).exists())
        .map(|(n, _)| n.to_string())
        .unwrap_or_default()
}

fn is_family(name: &str) -> Result<Value, FuncError> {
    let file = FAMILIES.iter().find(|(n, _)| *n == name).map(|(_, f)| *f);
    Ok(Value::Bool(file.is_some_and(|f| Path::new(f).exists())))
}

pub(super) fn is_family_redhat(_: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    is_family("redhat")
}

pub(super) fn is_family_debian(_: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    is_family("debian")
}

pub(super) fn is_family_archlinux(_: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    is_family("archlinux")
}

/// A key of `/etc/os-release` (unquoted), or `""`.
pub(crate) fn os_release_key(text: &str, key: &str) -> String {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| {
            let v = v.trim();
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v)
                .to_string()
        })
        .unwrap_or_default()
}

/// `os.release() str`: `VERSION_ID` of `/etc/os-release` (`/usr/lib/os-release` when it is
/// missing), e.g. `"12"`; `""` when neither says.
pub(super) fn release(_: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    Ok(Value::Str(os_release_key(&text, "VERSION_ID")))
}

fn user(name: &str, func: &str) -> Result<nix::unistd::User, FuncError> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(FuncError::catchable(format!(
            "{func}: no such user {name:?}"
        ))),
        Err(e) => Err(FuncError::fatal(format!(
            "{func}: looking up {name:?}: {e}"
        ))),
    }
}

/// `os.home(user str) str`: the user's home directory, with a trailing `/` (mgmt: "dirs end
/// with slashes"). An unknown user is a catchable error.
pub(super) fn home(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let u = user(s(a, 0, "os.home")?, "os.home")?;
    let mut h = u.dir.to_string_lossy().into_owned();
    if !h.ends_with('/') {
        h.push('/');
    }
    Ok(Value::Str(h))
}

/// `os.uid(user str) str`: the user's uid, as a string (as mgmt types it).
pub(super) fn uid(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let u = user(s(a, 0, "os.uid")?, "os.uid")?;
    Ok(Value::Str(u.uid.to_string()))
}

/// `os.user_exists(user str) bool`.
pub(crate) fn user_exists(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let name = s(a, 0, "os.user_exists")?;
    Ok(Value::Bool(matches!(
        nix::unistd::User::from_name(name),
        Ok(Some(_))
    )))
}

/// `os.expand_home(path str) str`: `~` and `~/x` become the current user's home, `~name/x`
/// that user's; anything else is returned as it is.
pub(super) fn expand_home(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let p = s(a, 0, "os.expand_home")?;
    let Some(rest) = p.strip_prefix('~') else {
        return Ok(Value::Str(p.to_string()));
    };
    let (who, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let dir = if who.is_empty() {
        match nix::unistd::User::from_uid(nix::unistd::Uid::current()) {
            Ok(Some(u)) => u.dir,
            _ => match std::env::var_os("HOME") {
                Some(h) => h.into(),
                None => {
                    return Err(FuncError::catchable(
                        "os.expand_home: the current user has no home directory",
                    ))
                }
            },
        }
    } else {
        user(who, "os.expand_home")?.dir
    };
    let dir = dir.to_string_lossy();
    let dir = dir.trim_end_matches('/');
    Ok(Value::Str(format!("{dir}{tail}")))
}

/// `os.is_virtual() bool`: whether this host is a virtual machine or a container (the CPU's
/// `hypervisor` flag, the DMI product of common hypervisors, or a container marker).
pub(super) fn is_virtual(_: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"));
    let dmi = {
        let p = read("/sys/class/dmi/id/product_name").to_lowercase()
            + &read("/sys/class/dmi/id/sys_vendor").to_lowercase();
        [
            "kvm",
            "qemu",
            "vmware",
            "virtualbox",
            "xen",
            "bochs",
            "hyper-v",
            "amazon ec2",
        ]
        .iter()
        .any(|m| p.contains(m))
    };
    let container = Path::new("/.dockerenv").exists()
        || Path::new("/run/.containerenv").exists()
        || read("/proc/1/environ")
            .split('\0')
            .any(|e| e.starts_with("container="));
    Ok(Value::Bool(cpu || dmi || container))
}

/// `os.args() []str`: tend's own command line.
/// Whether `/proc/modules` (the `lsmod` list) names `module`; a kernel without loadable
/// modules (no `/proc/modules`) has none loaded.
pub(crate) fn modinfo_loaded_in(modules: &Path, module: &str) -> Result<bool, FuncError> {
    match std::fs::read_to_string(modules) {
        Ok(t) => Ok(t
            .lines()
            .any(|l| l.split_whitespace().next() == Some(module))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FuncError::fatal(format!(
            "os.modinfo_loaded: error reading modules ({}): {e}",
            modules.display()
        ))),
    }
}

/// `os.modinfo_loaded(module str) bool`: whether the kernel module is loaded (`lsmod`); a
/// stream on the kernel's module uevents.
pub(crate) fn modinfo_loaded(a: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let m = s(a, 0, "os.modinfo_loaded")?;
    if m.is_empty() {
        return Err(FuncError::fatal(
            "os.modinfo_loaded: the module name is empty",
        ));
    }
    modinfo_loaded_in(Path::new("/proc/modules"), m).map(Value::Bool)
}

pub(super) fn args(_: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    Ok(Value::List(std::env::args().map(Value::Str).collect()))
}

/// `sys.cpu_count() int`: CPUs this process may run on (as `nproc` counts them).
pub(crate) fn cpu_count(_: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(Value::Int(n as i64))
}

/// `sys.load() struct{x1 float; x5 float; x15 float}`: `/proc/loadavg`.
pub(crate) fn load(_: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let t = std::fs::read_to_string("/proc/loadavg")
        .map_err(|e| FuncError::fatal(format!("sys.load: reading /proc/loadavg: {e}")))?;
    let f: Vec<f64> = t
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    if f.len() != 3 {
        return Err(FuncError::fatal(format!(
            "sys.load: /proc/loadavg reads {t:?}"
        )));
    }
    Ok(Value::Struct(vec![
        ("x1".into(), Value::Float(f[0])),
        ("x5".into(), Value::Float(f[1])),
        ("x15".into(), Value::Float(f[2])),
    ]))
}

/// `sys.uptime() int`: seconds since boot (`/proc/uptime`).
pub(crate) fn uptime(_: &[Value], _: &mut dyn Invoke) -> Result<Value, FuncError> {
    let t = std::fs::read_to_string("/proc/uptime")
        .map_err(|e| FuncError::fatal(format!("sys.uptime: reading /proc/uptime: {e}")))?;
    let secs: f64 = t
        .split_whitespace()
        .next()
        .and_then(|x| x.parse().ok())
        .ok_or_else(|| FuncError::fatal(format!("sys.uptime: /proc/uptime reads {t:?}")))?;
    Ok(Value::Int(secs as i64))
}

#[cfg(test)]
mod tests {
    use super::super::{call_simple, lookup};
    use super::*;

    fn call(m: &str, n: &str, a: Vec<Value>) -> Result<Value, FuncError> {
        call_simple(lookup(m, n).unwrap(), &a)
    }

    #[test]
    fn facts_of_this_host() {
        let osr = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        assert_eq!(
            call("os", "release", vec![]).unwrap(),
            Value::Str(os_release_key(&osr, "VERSION_ID"))
        );
        if Path::new("/etc/debian_version").exists() {
            assert_eq!(call("os", "family", vec![]).unwrap(), Value::from("debian"));
            assert_eq!(
                call("os", "is_family_debian", vec![]).unwrap(),
                Value::Bool(true)
            );
            assert_eq!(
                call("os", "is_family_archlinux", vec![]).unwrap(),
                Value::Bool(false)
            );
        }
        let nproc = std::process::Command::new("nproc").output().unwrap();
        let nproc: i64 = String::from_utf8_lossy(&nproc.stdout)
            .trim()
            .parse()
            .unwrap();
        assert_eq!(call("sys", "cpu_count", vec![]).unwrap(), Value::Int(nproc));
        let Value::Struct(l) = call("sys", "load", vec![]).unwrap() else {
            panic!()
        };
        let names: Vec<&str> = l.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["x1", "x5", "x15"]);
        let Value::Int(up) = call("sys", "uptime", vec![]).unwrap() else {
            panic!()
        };
        let proc_up: f64 = std::fs::read_to_string("/proc/uptime")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((up as f64 - proc_up).abs() < 2.0, "{up} vs {proc_up}");
        assert!(matches!(
            call("os", "is_virtual", vec![]),
            Ok(Value::Bool(_))
        ));
        assert!(matches!(call("os", "args", vec![]), Ok(Value::List(l)) if !l.is_empty()));
    }

    #[test]
    fn accounts_and_homes() {
        assert_eq!(
            call("os", "home", vec!["root".into()]).unwrap(),
            Value::from("/root/")
        );
        assert_eq!(
            call("os", "uid", vec!["root".into()]).unwrap(),
            Value::from("0")
        );
        assert_eq!(
            call("os", "user_exists", vec!["root".into()]).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            call("os", "user_exists", vec!["no-such-user-x".into()]).unwrap(),
            Value::Bool(false)
        );
        let e = call("os", "home", vec!["no-such-user-x".into()]).unwrap_err();
        assert!(e.catchable && e.msg.contains("no such user"), "{e}");
        assert_eq!(
            call("os", "expand_home", vec!["~root/.ssh".into()]).unwrap(),
            Value::from("/root/.ssh")
        );
        assert_eq!(
            call("os", "expand_home", vec!["/etc/x".into()]).unwrap(),
            Value::from("/etc/x")
        );
        let Value::Str(h) = call("os", "expand_home", vec!["~/a".into()]).unwrap() else {
            panic!()
        };
        assert!(h.ends_with("/a") && !h.starts_with('~'), "{h}");
    }

    #[test]
    fn modules_as_lsmod_lists_them() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("modules");
        std::fs::write(
            &f,
            "veth 40960 0 - Live 0x0000000000000000\nbridge 311296 1 br_netfilter, Live 0x0\n",
        )
        .unwrap();
        assert!(modinfo_loaded_in(&f, "veth").unwrap());
        assert!(modinfo_loaded_in(&f, "bridge").unwrap());
        assert!(!modinfo_loaded_in(&f, "br").unwrap());
        assert!(!modinfo_loaded_in(&t.path().join("none"), "veth").unwrap());
        let v = call("os", "modinfo_loaded", vec!["tend-no-such-module".into()]).unwrap();
        assert_eq!(v, Value::Bool(false));
        assert!(call("os", "modinfo_loaded", vec!["".into()]).is_err());
    }

    #[test]
    fn os_release_values_are_unquoted() {
        let t = "NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n";
        assert_eq!(os_release_key(t, "VERSION_ID"), "12");
        assert_eq!(os_release_key(t, "ID"), "debian");
        assert_eq!(os_release_key(t, "NOPE"), "");
    }
}
