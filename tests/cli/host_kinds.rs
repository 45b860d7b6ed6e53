//! The kinds that change the host itself (`hostname`, `mount`, a per-netns `sysctl`), end to end: the real binary
//! runs a YAML graph in a UTS and mount namespace of its own (`unshare`), with a tmpfs over
//! `/etc` there, so the host's name, `/etc/hostname`, `/etc/fstab` and mount table are never
//! touched; a shell in the same namespaces then prints what tend left.

use std::process::Command;

use crate::sandbox::{Sandbox, TEND};

const GRAPH: &str = r#"
resources:
  hostname:
    - name: this-host
      hostname: tend-e2e
      pretty_hostname: "tend's e2e host"
  file:
    - name: ${TEND_ROOT}/mnt/
  mount:
    - name: ${TEND_ROOT}/mnt
      state: exists
      device: tend-e2e
      type: tmpfs
      options: { size: "2m", nosuid: "" }
"#;

/// One one-shot run sets the names, makes the mount point (`mount` comes after the `file` of
/// its directory without an edge in the graph), mounts the tmpfs and writes its fstab line.
#[test]
fn names_and_a_mount_are_set_in_namespaces_of_their_own() {
    let sb = Sandbox::new();
    let graph = sb.write("graph.yaml", GRAPH);
    let script = r#"
set -e
mount -t tmpfs tmpfs /etc
printf '# fstab\n' > /etc/fstab
"$TEND" run "$1" --converged-timeout 0 --state-dir "$TEND_ROOT/state"
echo "kernel: $(cat /proc/sys/kernel/hostname)"
echo "static: $(cat /etc/hostname)"
echo "machine-info: $(cat /etc/machine-info)"
echo "fstab: $(grep -v '^#' /etc/fstab)"
echo "mounted: $(grep " $TEND_ROOT/mnt " /proc/self/mountinfo | sed 's/.* - //')"
"#;
    let out = Command::new("unshare")
        .args(["--uts", "--mount", "--propagation", "private", "sh", "-c"])
        .arg(script)
        .arg("sh")
        .arg(&graph)
        .env("TEND", TEND)
        .env("TEND_ROOT", sb.root())
        .env_remove("RUST_LOG")
        .current_dir(sb.root())
        .output()
        .expect("running unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {}:\n{stdout}\n{stderr}\n{}",
        out.status,
        sb.listing()
    );
    let root = sb.root().display();
    for want in [
        "kernel: tend-e2e".to_string(),
        "static: tend-e2e".to_string(),
        "machine-info: PRETTY_HOSTNAME=\"tend's e2e host\"".to_string(),
        format!("fstab: tend-e2e {root}/mnt tmpfs nosuid,size=2m 0 0"),
        "mounted: tmpfs tend-e2e rw,size=2048k".to_string(),
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&want)),
            "no line {want:?} in:\n{stdout}\n{stderr}"
        );
    }
    // Nothing of it reached the host.
    assert!(!std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&format!(" {root}/mnt ")));
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        "tend-e2e"
    );
}

/// `tend check` takes the three kinds, and refuses a bad field of each (exit 1, its code for
/// an invalid program), naming the resource and the field once.
#[test]
fn check_names_bad_fields_of_the_host_kinds() {
    let sb = Sandbox::new();
    let good = sb.write(
        "good.yaml",
        r#"
resources:
  hostname:
    - { name: h, static_hostname: web1 }
  mount:
    - { name: /mnt/data, state: exists, device: "UUID=1234", type: ext4, options: { noatime: "" }, passno: 2 }
  cron:
    - { name: backup, trigger: OnCalendar, time: daily, persistent: true }
"#,
    );
    let out = sb.run(&["check", good.to_str().unwrap()]);
    assert_eq!(out.code(), 0, "{}", sb.explain("a good graph", &out));
    for (kind, body, says) in [
        (
            "hostname",
            "{ name: h, transient_hostname: \"a b\" }",
            "hostname[h]: field `transient_hostname`: \"a b\" is not a host name",
        ),
        (
            "mount",
            "{ name: /mnt/data, state: exists, type: ext4 }",
            "mount[/mnt/data]: field `device`: is required",
        ),
        (
            "mount",
            "{ name: mnt, state: absent }",
            "mount[mnt]: the mount point must be an absolute path",
        ),
        (
            "cron",
            "{ name: backup, trigger: OnMonday, time: daily }",
            "cron[backup]: field `trigger`",
        ),
        (
            "cron",
            "{ name: backup.timer, trigger: OnCalendar, time: daily }",
            "cron[backup.timer]: the name is the timer without its suffix",
        ),
    ] {
        let bad = sb.write(
            "bad.yaml",
            &format!("resources:\n  {kind}:\n    - {body}\n"),
        );
        let out = sb.run(&["check", bad.to_str().unwrap()]);
        assert_eq!(out.code(), 1, "{}", sb.explain(kind, &out));
        assert!(
            out.stderr.contains(says) && !out.stderr.contains(&format!("]: {kind}[")),
            "{}",
            sb.explain(&format!("{kind}: {says:?}, once"), &out)
        );
    }
}

/// `sysctl` on a per-network-namespace key, end to end: in a network namespace of its own
/// (`unshare -n`) a daemon sets `net.ipv4.ip_forward` (the host's stays as it is), and a
/// change behind its back inside that namespace is repaired.
#[test]
fn a_per_netns_sysctl_is_set_and_repaired_in_a_namespace_of_its_own() {
    let sb = Sandbox::new();
    let graph = sb.write(
        "graph.yaml",
        r#"
resources:
  sysctl:
    - name: net.ipv4.ip_forward
      value: "1"
      path: ${TEND_ROOT}/99-forward.conf
"#,
    );
    let host_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let script = r#"
"$TEND" run "$1" --state-dir "$TEND_ROOT/state" --listen none &
pid=$!
for i in $(seq 100); do [ "$(cat /proc/sys/net/ipv4/ip_forward)" = 1 ] && break; sleep 0.05; done
echo "set: $(cat /proc/sys/net/ipv4/ip_forward)"
echo 0 > /proc/sys/net/ipv4/ip_forward
start=$(date +%s%N)
for i in $(seq 100); do [ "$(cat /proc/sys/net/ipv4/ip_forward)" = 1 ] && break; sleep 0.05; done
end=$(date +%s%N)
echo "repaired: $(cat /proc/sys/net/ipv4/ip_forward) in $(( (end - start) / 1000000 )) ms"
kill $pid; wait $pid
"#;
    let out = Command::new("unshare")
        .args(["--net", "sh", "-c"])
        .arg(script)
        .arg("sh")
        .arg(&graph)
        .env("TEND", TEND)
        .env("TEND_ROOT", sb.root())
        .env_remove("RUST_LOG")
        .current_dir(sb.root())
        .output()
        .expect("running unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(stdout.contains("set: 1"), "{stdout}\n{stderr}");
    assert!(stdout.contains("repaired: 1 in"), "{stdout}\n{stderr}");
    assert_eq!(
        std::fs::read_to_string(sb.root().join("99-forward.conf")).unwrap(),
        "net.ipv4.ip_forward = 1\n"
    );
    // The host's own value was never touched.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_before
    );
}
