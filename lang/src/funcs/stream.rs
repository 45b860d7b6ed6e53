//! Stream sources: built-ins that produce new values on their own (spec §10 kind **S**).
//!
//! [`start`] computes the current value at once and returns a [`Source`] whose background task
//! (or file watcher) sends every *different* later value as a [`StreamEvent`]. Dropping the
//! [`Source`] cancels it, so a source lives exactly as long as the part of the program that
//! reads it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::Watcher as _;
use tend_model::Value;
use tokio::sync::mpsc;

use super::world::{collect_pairs, WorldView};
use super::{system_hostname, Builtin, FuncError};

/// Identifies one running source: the function's display name and its arguments.
pub type StreamKey = (String, Vec<Value>);

/// A new value (or error) of one source.
#[derive(Clone, Debug)]
pub struct StreamEvent {
    /// The source.
    pub key: StreamKey,
    /// Its new value.
    pub value: Result<Value, FuncError>,
}

/// What sources need: where to send events and the world to read.
#[derive(Clone)]
pub struct StreamCtx {
    /// Events go here.
    pub tx: mpsc::UnboundedSender<StreamEvent>,
    /// The cluster view.
    pub world: Arc<dyn WorldView>,
}

/// A running source; dropping it stops it.
#[derive(Default)]
pub struct Source {
    task: Option<tokio::task::JoinHandle<()>>,
    watcher: Option<notify::RecommendedWatcher>,
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.watcher.take();
    }
}

/// Reads a file for `os.readfile` (a missing or unreadable file is catchable).
pub fn read_file(path: &str) -> Result<Value, FuncError> {
    std::fs::read(path)
        .map(|b| Value::Str(String::from_utf8_lossy(&b).into_owned()))
        .map_err(|e| FuncError::catchable(format!("os.readfile: {path}: {e}")))
}

/// A sender that forwards only values different from the previous one.
#[derive(Clone)]
struct Dedup {
    key: StreamKey,
    tx: mpsc::UnboundedSender<StreamEvent>,
    last: Arc<Mutex<Result<Value, FuncError>>>,
}

impl Dedup {
    fn new(
        key: StreamKey,
        tx: mpsc::UnboundedSender<StreamEvent>,
        first: &Result<Value, FuncError>,
    ) -> Self {
        Dedup {
            key,
            tx,
            last: Arc::new(Mutex::new(first.clone())),
        }
    }

    /// Sends `v` if it differs from the last value; false when the receiver is gone.
    fn offer(&self, v: Result<Value, FuncError>) -> bool {
        let mut last = self.last.lock().expect("poisoned");
        if *last == v {
            return !self.tx.is_closed();
        }
        *last = v.clone();
        self.tx
            .send(StreamEvent {
                key: self.key.clone(),
                value: v,
            })
            .is_ok()
    }
}

fn spawn_poll<F>(
    d: Dedup,
    every: Duration,
    align_to_second: bool,
    f: F,
) -> Option<tokio::task::JoinHandle<()>>
where
    F: Fn() -> Result<Value, FuncError> + Send + 'static,
{
    let rt = tokio::runtime::Handle::try_current().ok()?;
    Some(rt.spawn(async move {
        loop {
            let wait = if align_to_second {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos()))
            } else {
                every
            };
            tokio::time::sleep(wait).await;
            if !d.offer(f()) {
                return;
            }
        }
    }))
}

fn watch_path(d: Dedup, path: String, f: fn(&str) -> Result<Value, FuncError>) -> Source {
    let p = path.clone();
    watch_file(d, &path, move || f(&p))
}

/// A source that calls the built-in `module.name` (no arguments) every `secs` seconds.
fn poll(d: Dedup, secs: u64, (module, name): (&str, &str)) -> Source {
    let Some(b) = super::lookup(module, name) else {
        return Source::default();
    };
    Source {
        task: spawn_poll(d, Duration::from_secs(secs), false, move || {
            super::call_simple(b, &[])
        }),
        watcher: None,
    }
}

/// A source that calls `f` whenever `file` (watched through its directory, `.` for a bare
/// name) changes; without a watch (the directory is missing, or inotify is exhausted) it
/// polls every 500 ms.
fn watch_file<F>(d: Dedup, file: &str, f: F) -> Source
where
    F: Fn() -> Result<Value, FuncError> + Send + Sync + 'static,
{
    let f = Arc::new(f);
    let dir = match Path::new(file).parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    let d2 = d.clone();
    let f2 = f.clone();
    let watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        d2.offer(f2());
    })
    .ok()
    .and_then(|mut w| {
        w.watch(&dir, notify::RecursiveMode::NonRecursive)
            .ok()
            .map(|_| w)
    });
    let task = if watcher.is_none() {
        spawn_poll(d, Duration::from_millis(500), false, move || f())
    } else {
        None
    };
    Source { task, watcher }
}

/// A source that calls `b` again on each event of a netlink subscription (link and address
/// changes, or uevents: [`super::net::NetEvents`]); where netlink cannot be subscribed to,
/// every 5 s.
fn net_source(
    d: Dedup,
    b: &'static Builtin,
    args: Vec<Value>,
    subscribe: fn() -> std::io::Result<super::net::NetEvents>,
) -> Source {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return Source::default();
    };
    let events = {
        let _in = rt.enter();
        subscribe()
    };
    if let Err(e) = &events {
        tracing::warn!(
            "{}: no netlink subscription ({e}); polling every 5 s",
            b.display_name()
        );
    }
    let task = rt.spawn(async move {
        // A change between the first value and the subscription is not missed.
        if !d.offer(super::call_simple(b, &args)) {
            return;
        }
        loop {
            match &events {
                Ok(ev) => {
                    if let Err(e) = ev.changed().await {
                        tracing::warn!("{}: netlink: {e}; polling every 5 s", b.display_name());
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    // A change comes as a burst of messages (link, then each address).
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(5)).await,
            }
            if !d.offer(super::call_simple(b, &args)) {
                return;
            }
        }
    });
    Source {
        task: Some(task),
        watcher: None,
    }
}

/// A source that reads `value` resources' table again on each change of it.
fn values_source(d: Dedup, b: &'static Builtin, args: Vec<Value>) -> Source {
    use futures::StreamExt;
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return Source::default();
    };
    let mut changes = tend_model::values::subscribe();
    let task = rt.spawn(async move {
        // A change between the first value and the subscription is not missed.
        if !d.offer(super::call_simple(b, &args)) {
            return;
        }
        while changes.next().await.is_some() {
            if !d.offer(super::call_simple(b, &args)) {
                return;
            }
        }
    });
    Source {
        task: Some(task),
        watcher: None,
    }
}

/// `os.system(cmd)`: runs `sh -c cmd` (in a process group of its own, killed with the
/// source) and sends each line of its standard output as the new value; standard error goes
/// to the log. When the command ends the last line stays the value. An argument that changes
/// starts a new source (the old command is killed), as mgmt's runs one command at a time.
fn system_source(d: Dedup, cmd: String) -> Source {
    use tokio::io::AsyncBufReadExt;
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return Source::default();
    };
    let task = rt.spawn(async move {
        let mut c = tokio::process::Command::new("sh");
        c.arg("-c")
            .arg(&cmd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match c.spawn() {
            Ok(c) => c,
            Err(e) => {
                d.offer(Err(FuncError::fatal(format!(
                    "os.system: cannot run `sh -c {cmd:?}`: {e}"
                ))));
                return;
            }
        };
        // Dropped with the task (the source): the whole group goes, not only `sh`.
        let mut group = KillGroup(child.id());
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            return;
        };
        let shown = cmd.clone();
        let errs = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(err).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tracing::info!("os.system: {shown:?}: stderr: {l}");
            }
        });
        let mut lines = tokio::io::BufReader::new(out).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(l)) => {
                    if !d.offer(Ok(Value::Str(l))) {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("os.system: {cmd:?}: reading its output: {e}");
                    break;
                }
            }
        }
        let _ = child.wait().await;
        // Ended on its own: what it left running in the background stays, as in mgmt.
        group.0 = None;
        errs.abort();
    });
    Source {
        task: Some(task),
        watcher: None,
    }
}

/// Kills a process group when dropped.
struct KillGroup(Option<u32>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) of a process group this source created.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

fn world_source<F>(d: Dedup, world: Arc<dyn WorldView>, f: F) -> Source
where
    F: Fn(&dyn WorldView) -> Result<Value, FuncError> + Send + 'static,
{
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return Source::default();
    };
    let mut rx = world.changes();
    let task = rt.spawn(async move {
        while rx.changed().await.is_ok() {
            if !d.offer(f(world.as_ref())) {
                return;
            }
        }
    });
    Source {
        task: Some(task),
        watcher: None,
    }
}

fn str_arg(args: &[Value]) -> String {
    args.first()
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn getval(w: &dyn WorldView, key: &str) -> Result<Value, FuncError> {
    if key.is_empty() {
        return Err(FuncError::fatal("world.getval: the key is empty"));
    }
    let v = w.getval(key).map_err(FuncError::fatal)?;
    Ok(Value::Struct(vec![
        ("value".into(), Value::Str(v.clone().unwrap_or_default())),
        ("exists".into(), Value::Bool(v.is_some())),
    ]))
}

fn kvlookup(w: &dyn WorldView, ns: &str) -> Result<Value, FuncError> {
    let m = w.kvlookup(ns).map_err(FuncError::fatal)?;
    Ok(Value::Map(
        m.into_iter()
            .map(|(k, v)| (Value::Str(k), Value::Str(v)))
            .collect(),
    ))
}

fn schedule(w: &dyn WorldView, ns: &str) -> Result<Value, FuncError> {
    let l = w.schedule(ns).map_err(FuncError::fatal)?;
    Ok(Value::List(l.into_iter().map(Value::Str).collect()))
}

fn collect_res(w: &dyn WorldView, kind: &str) -> Result<Value, FuncError> {
    collect_pairs(w, kind).map_err(FuncError::fatal)
}

/// Starts the source for a stream built-in called with `args`: returns its current value and
/// the running source. `known_kind` says whether a kind exists (for `collect.res`).
pub fn start(
    b: &Builtin,
    args: &[Value],
    ctx: &StreamCtx,
    known_kind: &dyn Fn(&str) -> bool,
) -> (Result<Value, FuncError>, Source) {
    let key: StreamKey = (b.display_name(), args.to_vec());
    let arg = str_arg(args);
    let first: Result<Value, FuncError> = match (b.module, b.name) {
        ("world", "getval") => getval(ctx.world.as_ref(), &arg),
        ("world", "kvlookup") => kvlookup(ctx.world.as_ref(), &arg),
        ("world", "schedule") => match args.get(1) {
            // mgmt's older form: calling it joins the pool.
            Some(opts) => super::world::schedule_opts(opts)
                .and_then(|o| ctx.world.schedule_join(&arg, &o))
                .map_err(FuncError::fatal)
                .and_then(|()| schedule(ctx.world.as_ref(), &arg)),
            None => schedule(ctx.world.as_ref(), &arg),
        },
        ("world/collect", "res") => {
            if known_kind(&arg) {
                collect_res(ctx.world.as_ref(), &arg)
            } else {
                Err(FuncError::fatal(format!(
                    "collect.res: unknown kind `{arg}`"
                )))
            }
        }
        _ => super::call_simple(b, args),
    };
    if matches!(&first, Err(e) if !e.catchable && !e.is_pending()) {
        return (first, Source::default());
    }
    let d = Dedup::new(key, ctx.tx.clone(), &first);
    let w = ctx.world.clone();
    let src = match (b.module, b.name) {
        ("datetime", "now") => Source {
            task: spawn_poll(d, Duration::from_secs(1), true, || {
                super::call_simple(super::lookup("datetime", "now").expect("exists"), &[])
            }),
            watcher: None,
        },
        ("datetime", "str_now") => Source {
            task: spawn_poll(d, Duration::from_secs(1), true, || {
                super::call_simple(super::lookup("datetime", "str_now").expect("exists"), &[])
            }),
            watcher: None,
        },
        ("sys", "hostname") => Source {
            task: spawn_poll(d, Duration::from_secs(5), false, || {
                Ok(Value::Str(system_hostname()))
            }),
            watcher: None,
        },
        ("sys", "load") => poll(d, 5, ("sys", "load")),
        ("sys", "uptime") => poll(d, 1, ("sys", "uptime")),
        ("sys", "cpu_count") => poll(d, 5, ("sys", "cpu_count")),
        ("net", "macs")
        | ("net", "interface_cidr")
        | ("net", "wired_interface")
        | ("util", "hostname_mapper") => match super::lookup(b.module, b.name) {
            Some(b) => net_source(d, b, args.to_vec(), super::net::NetEvents::new),
            None => Source::default(),
        },
        ("os", "modinfo_loaded") => match super::lookup(b.module, b.name) {
            Some(b) => net_source(d, b, args.to_vec(), super::net::NetEvents::uevents),
            None => Source::default(),
        },
        ("value", _) => match super::lookup(b.module, b.name) {
            Some(b) => values_source(d, b, args.to_vec()),
            None => Source::default(),
        },
        ("os", "system") => system_source(d, arg),
        ("os", "user_exists") => {
            let name = args.to_vec();
            watch_file(d, "/etc/passwd", move || {
                super::call_simple(super::lookup("os", "user_exists").expect("exists"), &name)
            })
        }
        ("secret", "file") => {
            let args = args.to_vec();
            watch_file(d, &arg, move || {
                super::call_simple(super::lookup("secret", "file").expect("exists"), &args)
            })
        }
        ("os", "readfile") => watch_path(d, arg, read_file),
        ("os", "file_exists") => watch_path(d, arg, |p| Ok(Value::Bool(Path::new(p).exists()))),
        ("world", "getval") => world_source(d, w, move |w| getval(w, &arg)),
        ("world", "kvlookup") => world_source(d, w, move |w| kvlookup(w, &arg)),
        ("world", "schedule") => world_source(d, w, move |w| schedule(w, &arg)),
        ("world/collect", "res") => world_source(d, w, move |w| collect_res(w, &arg)),
        _ => Source::default(),
    };
    (first, src)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::funcs::{lookup, world::MemWorld};

    #[tokio::test]
    async fn readfile_sends_changes_and_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "one").unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ctx = StreamCtx {
            tx,
            world: MemWorld::new("h"),
        };
        let b = lookup("os", "readfile").unwrap();
        let p = Value::from(path.to_str().unwrap());
        let (first, _src) = start(b, &[p], &ctx, &|_| true);
        assert_eq!(first.unwrap(), Value::from("one"));
        // Replace atomically: a plain write truncates first, and a watcher may see that.
        let tmp = dir.path().join("f.tmp");
        std::fs::write(&tmp, "two").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ev.value.unwrap(), Value::from("two"));
        std::fs::remove_file(&path).unwrap();
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap()
                .unwrap();
            if let Err(e) = ev.value {
                assert!(e.catchable);
                break;
            }
        }
    }

    /// A veth pair with a unique name, removed when dropped.
    struct Veth(String);

    impl Veth {
        fn new() -> Veth {
            let name = format!("tnd{}", std::process::id() % 100_000);
            let peer = format!("{name}p");
            let ok = std::process::Command::new("ip")
                .args(["link", "add", &name, "type", "veth", "peer", "name", &peer])
                .status()
                .expect("running ip (iproute2)")
                .success();
            assert!(ok, "ip link add {name} (needs root)");
            Veth(name)
        }

        fn ip(&self, args: &[&str]) {
            let ok = std::process::Command::new("ip")
                .args(args)
                .status()
                .unwrap()
                .success();
            assert!(ok, "ip {args:?}");
        }
    }

    impl Drop for Veth {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &self.0])
                .status();
        }
    }

    async fn next_event(rx: &mut mpsc::UnboundedReceiver<StreamEvent>) -> Result<Value, FuncError> {
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        ev.expect("a new value").expect("open").value
    }

    async fn next_value(rx: &mut mpsc::UnboundedReceiver<StreamEvent>, what: &str) -> Value {
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no new value: {what}"))
            .unwrap();
        ev.value.unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// `net.macs` and `net.interface_cidr` send new values when a link and an address
    /// appear, from the kernel's netlink announcements (not a poll: each is seen well
    /// within the 5 s the fallback poll would take).
    #[tokio::test]
    async fn interfaces_stream_on_link_and_address_changes() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ctx = StreamCtx {
            tx,
            world: MemWorld::new("h"),
        };
        let macs = lookup("net", "macs").unwrap();
        let (first, _src) = start(macs, &[], &ctx, &|_| true);
        let Value::List(before) = first.unwrap() else {
            panic!("a list");
        };
        // The uevent subscription (`os.modinfo_loaded`'s) hears a new device too.
        let uevents = super::super::net::NetEvents::uevents().expect("uevent netlink socket");
        let t = std::time::Instant::now();
        let veth = Veth::new();
        tokio::time::timeout(Duration::from_secs(5), uevents.changed())
            .await
            .expect("a uevent for the new link")
            .unwrap();
        let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", veth.0)).unwrap();
        let mac = Value::from(mac.trim());
        assert!(!before.contains(&mac));
        loop {
            let Value::List(now) = next_value(&mut rx, "net.macs after ip link add").await else {
                panic!("a list");
            };
            if now.contains(&mac) {
                break;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());

        let (tx2, mut rx2) = mpsc::unbounded_channel();
        let ctx2 = StreamCtx {
            tx: tx2,
            world: MemWorld::new("h"),
        };
        let cidr = lookup("net", "interface_cidr").unwrap();
        let (first, _src2) = start(cidr, &[Value::from(veth.0.as_str())], &ctx2, &|_| true);
        assert!(first
            .unwrap_err()
            .msg
            .contains("no global-unicast IPv4 address"));
        let t = std::time::Instant::now();
        veth.ip(&["addr", "add", "198.51.100.7/24", "dev", &veth.0]);
        assert_eq!(
            next_value(&mut rx2, "net.interface_cidr after ip addr add").await,
            Value::from("198.51.100.7/24")
        );
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    }

    /// `os.system` has no value until the first line, then one per line; dropping the
    /// source kills the command's whole process group.
    #[tokio::test]
    async fn system_sends_each_line_and_dies_with_its_source() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ctx = StreamCtx {
            tx,
            world: MemWorld::new("h"),
        };
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let cmd = format!(
            "echo one; sleep 0.2; echo two; sleep 300 & echo $! > {}; wait",
            pidfile.display()
        );
        let b = lookup("os", "system").unwrap();
        let (first, src) = start(b, &[Value::from(cmd.as_str())], &ctx, &|_| true);
        assert!(first.unwrap_err().is_pending());
        assert_eq!(
            next_value(&mut rx, "the first line").await,
            Value::from("one")
        );
        assert_eq!(
            next_value(&mut rx, "the second line").await,
            Value::from("two")
        );
        let mut pid = String::new();
        for _ in 0..100 {
            pid = std::fs::read_to_string(&pidfile).unwrap_or_default();
            if !pid.trim().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let proc = format!("/proc/{}", pid.trim());
        assert!(Path::new(&proc).exists(), "the background sleep runs");
        drop(src);
        let mut gone = false;
        for _ in 0..100 {
            // Killed (and reaped by its parent sh, itself killed and reaped by tokio), or a
            // zombie at worst.
            let st = std::fs::read_to_string(format!("{proc}/stat")).unwrap_or_default();
            if st.is_empty() || st.contains(") Z ") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "the command's group outlived its source");
    }

    /// `value.get` (with its solved result type as the evaluator passes it) sends a new value
    /// each time the key is set, an error naming the key for a value of another type, and
    /// the type's zero, not ready, once the key is removed.
    #[tokio::test]
    async fn value_get_streams_the_held_value() {
        let key = format!("tend-lang-stream-value-get-{}", std::process::id());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ctx = StreamCtx {
            tx,
            world: MemWorld::new("h"),
        };
        let b = lookup("value", "get").unwrap();
        let t = Value::from("struct{value []int; ready bool}");
        let (first, _src) = start(b, &[Value::from(key.as_str()), t], &ctx, &|_| true);
        let not_ready = Value::Struct(vec![
            ("value".into(), Value::List(vec![])),
            ("ready".into(), Value::Bool(false)),
        ]);
        assert_eq!(first.unwrap(), not_ready);
        let held = Value::List(vec![Value::Int(1), Value::Int(2)]);
        tend_model::values::set(&key, Some(held.clone()));
        let v = next_event(&mut rx).await.unwrap();
        assert_eq!(v.field("value"), Some(&held));
        assert_eq!(v.field("ready"), Some(&Value::Bool(true)));
        tend_model::values::set(&key, Some(Value::List(vec![Value::from("x")])));
        let e = next_event(&mut rx).await.unwrap_err();
        assert_eq!(
            e.msg,
            format!(
                "value.get: type mismatch, check type in Value[{key}]: it holds a []str, not a []int"
            )
        );
        tend_model::values::set(&key, None);
        assert_eq!(next_event(&mut rx).await.unwrap(), not_ready);
    }

    #[tokio::test]
    async fn world_values_stream() {
        let w = MemWorld::new("h");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ctx = StreamCtx {
            tx,
            world: w.clone(),
        };
        let b = lookup("world", "getval").unwrap();
        let (first, _src) = start(b, &[Value::from("k")], &ctx, &|_| true);
        assert_eq!(first.unwrap().field("exists"), Some(&Value::Bool(false)));
        w.set_value("k", "v");
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ev.value.unwrap().field("value"), Some(&Value::from("v")));
        let c = lookup("world/collect", "res").unwrap();
        let (first, _s) = start(c, &[Value::from("nope")], &ctx, &|k| k == "test");
        assert!(!first.unwrap_err().catchable);
    }
}
