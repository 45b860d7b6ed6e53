//! `sysctl` against the real kernel: `kernel.printk_ratelimit` (a harmless knob) is set,
//! persisted to a file in a temporary directory, changed behind tend's back and repaired, and
//! put back as it was at the end (also when the test fails).

use std::time::{Duration, Instant};

use tend_engine::{Checked, VertexState};
use tend_model::{GraphSpec, ResSpec};

use crate::common::{apply, build, dry, engine, invalid, wait_status};

const KEY: &str = "kernel.printk_ratelimit";
const PROC: &str = "/proc/sys/kernel/printk_ratelimit";

/// Puts the kernel value back when dropped.
struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(PROC, &self.0);
    }
}

fn read() -> String {
    std::fs::read_to_string(PROC).unwrap().trim().to_string()
}

/// Tests that change the kernel value take turns.
static KERNEL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn sets_persists_and_repairs_a_kernel_parameter() {
    let _turn = KERNEL.lock().await;
    let orig = read();
    let _restore = Restore(orig.clone());
    let want = (orig.parse::<u32>().unwrap() + 3).to_string();
    let t = tempfile::tempdir().unwrap();
    let conf = t.path().join("99-tend-test.conf");
    let spec = ResSpec::new("sysctl", KEY)
        .param("value", want.as_str())
        .param("path", conf.to_str().unwrap());

    let r = build(spec.clone());
    assert_eq!(dry(&r).await.unwrap(), Checked::Changed);
    assert_eq!(read(), orig, "a dry run changes nothing");
    assert!(!conf.exists());
    assert_eq!(apply(&r).await.unwrap(), Checked::Changed);
    assert_eq!(read(), want);
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        format!("{KEY} = {want}\n")
    );
    assert_eq!(apply(&r).await.unwrap(), Checked::InState);

    // In the engine: a change behind tend's back is repaired (the runtime value is polled).
    let state = tempfile::tempdir().unwrap();
    let e = engine(state.path(), false);
    let mut g = GraphSpec::default();
    g.resources.push(spec);
    e.swap(g).await.unwrap();
    wait_status(&e, "converged", 20, |s| {
        s.converged
            && s.vertices
                .values()
                .all(|v| v.state == VertexState::Converged)
    })
    .await;
    // Well after the start, so the first repair is the poll's.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let changed = Instant::now();
    std::fs::write(PROC, &orig).unwrap();
    while read() != want {
        assert!(changed.elapsed() < Duration::from_secs(10), "not repaired");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "sysctl repair: {:.0} ms after the change (1 s poll)",
        changed.elapsed().as_secs_f64() * 1e3
    );
    // The persisted file is watched: an edit is put back at once.
    std::fs::write(&conf, "kernel.printk_ratelimit = 1\n").unwrap();
    let edited = Instant::now();
    while std::fs::read_to_string(&conf).unwrap() != format!("{KEY} = {want}\n") {
        assert!(
            edited.elapsed() < Duration::from_secs(10),
            "file not repaired"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eprintln!(
        "sysctl file repair: {:.1} ms",
        edited.elapsed().as_secs_f64() * 1e3
    );
    e.shutdown().await;
}

/// Whitespace is normalised: `kernel.printk` reads back with tabs, and the same value written
/// with spaces is in state (no write, no flapping).
#[tokio::test]
async fn a_value_with_other_whitespace_is_in_state() {
    let now = std::fs::read_to_string("/proc/sys/kernel/printk").unwrap();
    let spaced = now.split_whitespace().collect::<Vec<_>>().join(" ");
    let r = build(
        ResSpec::new("sysctl", "kernel.printk")
            .param("value", spaced.as_str())
            .param("persist", false),
    );
    assert_eq!(dry(&r).await.unwrap(), Checked::InState);
}

#[tokio::test]
async fn bad_names_and_values_are_refused() {
    let s = |name: &str| ResSpec::new("sysctl", name).param("value", "1");
    assert!(invalid(s("kernel/printk_ratelimit")).contains("dotted form"));
    assert!(invalid(s(".kernel")).contains("dotted words"));
    assert!(invalid(s("kernel.a=b")).contains("`=`"));
    assert!(invalid(ResSpec::new("sysctl", KEY)).contains("value"));
    assert!(invalid(ResSpec::new("sysctl", KEY).param("value", " 1")).contains("whitespace"));
    assert!(invalid(
        ResSpec::new("sysctl", KEY)
            .param("value", "1")
            .param("runtime", false)
            .param("persist", false)
    )
    .contains("nothing to do"));
    assert!(invalid(
        ResSpec::new("sysctl", KEY)
            .param("value", "1")
            .param("path", "/tmp/x.txt")
    )
    .contains(".conf"));
    // A key the kernel does not have fails its check, naming the path.
    let r = build(
        ResSpec::new("sysctl", "kernel.tend_no_such_knob")
            .param("value", "1")
            .param("persist", false),
    );
    let e = dry(&r).await.unwrap_err().to_string();
    assert!(e.contains("no such kernel parameter"), "{e}");
}
