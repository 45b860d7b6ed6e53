//! apt, the provider behind `pkg`: `apt-get` transactions and `apt-cache policy` look-ups,
//! each batched across resources by a process-wide [`Batcher`].
//!
//! Every command runs with `LC_ALL=C.UTF-8` (its messages are parsed) and without a
//! terminal. `apt-get` runs non-interactively (`DEBIAN_FRONTEND=noninteractive`, `-y`), keeps
//! locally modified configuration files (`--force-confdef --force-confold`), and waits up to
//! [`LOCK_TIMEOUT_S`] for the dpkg lock held by another apt or dpkg instead of failing.

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// How long `apt-get` waits for the dpkg lock (`DPkg::Lock::Timeout`).
pub(crate) const LOCK_TIMEOUT_S: u32 = 300;

/// How many trailing lines of apt's stderr an error quotes.
const TAIL_LINES: usize = 8;

/// What one package should become in a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Installed, or upgraded to the candidate version (`name`).
    Install,
    /// This exact version (`name=version`).
    Version(String),
    /// Removed, configuration kept (`name-`).
    Remove,
}

/// Transaction-wide `apt-get` options: jobs differing in them never share a transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Flags {
    /// `--allow-unauthenticated`.
    pub untrusted: bool,
    /// `--allow-downgrades`.
    pub downgrade: bool,
}

/// Why a job failed: a message, and the field of the resource it is about, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub field: Option<&'static str>,
    pub message: String,
}

impl Failure {
    fn new(message: impl Into<String>) -> Failure {
        Failure {
            field: None,
            message: message.into(),
        }
    }
}

/// One resource's request to the transaction batcher.
pub(crate) struct Job {
    /// The package (maybe with `:arch`).
    pub name: String,
    pub op: Op,
    pub flags: Flags,
    /// Refuse a candidate that comes only from a non-free component (`allownonfree: false`).
    pub free_only: bool,
    /// `Meta:autogroup: false`: a transaction of its own.
    pub alone: bool,
    pub reply: oneshot::Sender<Result<(), Failure>>,
}

impl Job {
    /// The job as an `apt-get install` argument.
    fn arg(&self) -> String {
        match &self.op {
            Op::Install => self.name.clone(),
            Op::Version(v) => format!("{}={v}", self.name),
            Op::Remove => format!("{}-", self.name),
        }
    }
}

/// A command with apt's environment.
fn command(program: &str) -> Command {
    let mut c = Command::new(program);
    c.env("LC_ALL", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("APT_LISTCHANGES_FRONTEND", "none")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// The `apt-get` command line of one transaction.
pub(crate) fn apt_get_args(flags: Flags, args: &[String]) -> Vec<String> {
    let mut v: Vec<String> = [
        "-y",
        "-q",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        "-o",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(format!("DPkg::Lock::Timeout={LOCK_TIMEOUT_S}"));
    v.push("install".into());
    if flags.downgrade {
        v.push("--allow-downgrades".into());
    }
    if flags.untrusted {
        v.push("--allow-unauthenticated".into());
    }
    v.extend(args.iter().cloned());
    v
}

/// A failed command: how it reads, its stderr (the last lines), and those lines.
struct Failed {
    summary: String,
    lines: Vec<String>,
}

/// The last [`TAIL_LINES`] non-empty lines of `text`.
fn tail(text: &[u8]) -> Vec<String> {
    let s = String::from_utf8_lossy(text);
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

fn run(program: &str, args: &[String]) -> Result<Output, Failed> {
    let line = format!("{program} {}", args.join(" "));
    let started = Instant::now();
    let out = command(program).args(args).output().map_err(|e| Failed {
        summary: format!("starting `{line}`: {e}"),
        lines: Vec::new(),
    })?;
    tracing::debug!(command = %line, secs = started.elapsed().as_secs_f64(), status = %out.status, "apt");
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        tracing::debug!(command = program, stream = "stdout", "{l}");
    }
    if out.status.success() {
        return Ok(out);
    }
    let lines = tail(&out.stderr);
    let status = crate::process::describe(&out.status);
    Err(Failed {
        summary: if lines.is_empty() {
            format!("`{line}` {status}")
        } else {
            format!("`{line}` {status}: {}", lines.join(" / "))
        },
        lines,
    })
}

/// What `apt-cache policy` says of one package.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    pub installed: Option<String>,
    pub candidate: Option<String>,
    /// Each known version with the archive components it comes from (`main`, `non-free`;
    /// empty for the dpkg status or a flat repository).
    pub versions: Vec<(String, Vec<String>)>,
}

impl Policy {
    /// Whether `version` is available only from non-free components (`non-free`,
    /// `non-free-firmware`, Ubuntu's `restricted` and `multiverse`).
    pub(crate) fn only_non_free(&self, version: &str) -> bool {
        let Some((_, comps)) = self.versions.iter().find(|(v, _)| v == version) else {
            return false;
        };
        !comps.is_empty() && comps.iter().all(|c| is_non_free(c))
    }
}

fn is_non_free(component: &str) -> bool {
    component.starts_with("non-free") || component == "restricted" || component == "multiverse"
}

fn none_is_none(s: &str) -> Option<String> {
    (s != "(none)" && !s.is_empty()).then(|| s.to_string())
}

/// Parses `apt-cache policy` output (in the C locale) into package -> policy; the key is the
/// package as apt prints it (`hello`, `libc6:i386`).
pub(crate) fn parse_policy(text: &str) -> HashMap<String, Policy> {
    let mut out: HashMap<String, Policy> = HashMap::new();
    let mut cur: Option<(String, Policy)> = None;
    let mut in_table = false;
    for line in text.lines() {
        if !line.starts_with(' ') {
            if let Some(name) = line.strip_suffix(':') {
                if let Some((n, p)) = cur.take() {
                    out.insert(n, p);
                }
                cur = Some((name.to_string(), Policy::default()));
                in_table = false;
            }
            continue;
        }
        let Some((_, p)) = cur.as_mut() else {
            continue;
        };
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Installed:") {
            p.installed = none_is_none(v.trim());
        } else if let Some(v) = t.strip_prefix("Candidate:") {
            p.candidate = none_is_none(v.trim());
        } else if t.starts_with("Version table:") {
            in_table = true;
        } else if in_table {
            // A version line (`     2.10-3 500`, ` *** 2.10-3 100`) is indented less than
            // its origin lines (`        500 http://deb.debian.org/debian bookworm/main ...`).
            let indent = line.len() - line.trim_start().len();
            let words: Vec<&str> = t.split_whitespace().collect();
            if indent <= 5 || words.first() == Some(&"***") {
                let w = if words.first() == Some(&"***") {
                    words.get(1)
                } else {
                    words.first()
                };
                if let Some(v) = w {
                    p.versions.push((v.to_string(), Vec::new()));
                }
            } else if let Some((_, comps)) = p.versions.last_mut() {
                // `<prio> <uri> <suite>/<component> <arch> Packages`
                if let Some(c) = words
                    .get(2)
                    .and_then(|s| s.split_once('/'))
                    .map(|(_, c)| c)
                    .filter(|c| !c.is_empty())
                {
                    comps.push(c.to_string());
                }
            }
        }
    }
    if let Some((n, p)) = cur {
        out.insert(n, p);
    }
    out
}

/// Finds `name`'s entry in parsed policy output.
pub(crate) fn policy_of<'a>(all: &'a HashMap<String, Policy>, name: &str) -> Option<&'a Policy> {
    all.get(name).or_else(|| {
        let base = name.split_once(':').map_or(name, |(b, _)| b);
        all.get(base)
    })
}

/// Runs `apt-cache policy` for these packages (unknown ones are left out of the answer).
fn policies(names: &[String]) -> Result<HashMap<String, Policy>, String> {
    let mut args = vec!["policy".to_string()];
    args.extend(names.iter().cloned());
    // apt-cache exits 0 even when it knows none of the names.
    run("apt-cache", &args)
        .map(|o| parse_policy(&String::from_utf8_lossy(&o.stdout)))
        .map_err(|f| f.summary)
}

/// A worker thread that takes jobs one at a time from a queue, gathers them into batches and
/// runs each batch with one call: after the first job of a batch arrives, it waits until no
/// new job has come for `quiet`, or `max` has passed since the first one, whichever is
/// first. Jobs submitted while a batch runs form the next batch. A thread (not a task) so
/// that it outlives any one tokio runtime and a command is never abandoned halfway when a
/// caller stops waiting.
pub(crate) struct Batcher<J: Send + 'static> {
    name: &'static str,
    quiet: Duration,
    max: Duration,
    run: fn(Vec<J>),
    tx: Mutex<Option<mpsc::Sender<J>>>,
}

impl<J: Send + 'static> Batcher<J> {
    pub(crate) const fn new(
        name: &'static str,
        quiet: Duration,
        max: Duration,
        run: fn(Vec<J>),
    ) -> Self {
        Batcher {
            name,
            quiet,
            max,
            run,
            tx: Mutex::new(None),
        }
    }

    /// Queues a job, starting the worker thread if it is not running.
    pub(crate) fn submit(&'static self, job: J) -> Result<(), String> {
        let mut tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let job = match tx.as_ref() {
            Some(t) => match t.send(job) {
                Ok(()) => return Ok(()),
                // The worker is gone (it cannot be, short of a panic in a batch): start
                // another.
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let (t, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(self.name.into())
            .spawn(move || self.work(rx))
            .map_err(|e| format!("starting the {} thread: {e}", self.name))?;
        t.send(job)
            .map_err(|_| format!("the {} thread stopped", self.name))?;
        *tx = Some(t);
        Ok(())
    }

    fn work(&self, rx: mpsc::Receiver<J>) {
        while let Ok(first) = rx.recv() {
            let start = Instant::now();
            let mut last = start;
            let mut batch = vec![first];
            loop {
                let deadline = (last + self.quiet).min(start + self.max);
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match rx.recv_timeout(left) {
                    Ok(j) => {
                        batch.push(j);
                        last = Instant::now();
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            (self.run)(batch);
        }
    }
}

/// Transactions: after the first request, until no new one for 30 ms, at most 500 ms.
pub(crate) static TRANSACTIONS: Batcher<Job> = Batcher::new(
    "tend-apt-get",
    Duration::from_millis(30),
    Duration::from_millis(500),
    run_transactions,
);

/// One `apt-cache policy` look-up.
pub(crate) struct Lookup {
    pub name: String,
    pub reply: oneshot::Sender<Result<Option<Policy>, String>>,
}

/// Look-ups: after the first request, until no new one for 10 ms, at most 100 ms.
pub(crate) static LOOKUPS: Batcher<Lookup> = Batcher::new(
    "tend-apt-cache",
    Duration::from_millis(10),
    Duration::from_millis(100),
    run_lookups,
);

fn run_lookups(batch: Vec<Lookup>) {
    let mut names: Vec<String> = batch.iter().map(|l| l.name.clone()).collect();
    names.sort();
    names.dedup();
    match policies(&names) {
        Ok(all) => {
            for l in batch {
                let _ = l.reply.send(Ok(policy_of(&all, &l.name).cloned()));
            }
        }
        Err(e) => {
            for l in batch {
                let _ = l.reply.send(Err(e.clone()));
            }
        }
    }
}

/// Runs a batch of jobs: the `alone` ones one by one, the others in one transaction per
/// distinct [`Flags`].
fn run_transactions(batch: Vec<Job>) {
    let batch = refuse_non_free(batch);
    let mut groups: Vec<(Flags, Vec<Job>)> = Vec::new();
    let mut alone = Vec::new();
    for j in batch {
        if j.alone {
            alone.push(j);
            continue;
        }
        match groups.iter_mut().find(|(f, _)| *f == j.flags) {
            Some((_, g)) => g.push(j),
            None => groups.push((j.flags, vec![j])),
        }
    }
    for (flags, jobs) in groups {
        transact(flags, jobs);
    }
    for j in alone {
        transact(j.flags, vec![j]);
    }
}

/// Answers, with an error, the installs whose candidate comes only from a non-free
/// component when their resource does not allow it (one `apt-cache policy` for all);
/// returns the others.
fn refuse_non_free(batch: Vec<Job>) -> Vec<Job> {
    let mut names: Vec<String> = batch
        .iter()
        .filter(|j| j.free_only && j.op != Op::Remove)
        .map(|j| j.name.clone())
        .collect();
    if names.is_empty() {
        return batch;
    }
    names.sort();
    names.dedup();
    // When the look-up fails, apt-get's own run will say what is wrong.
    let Ok(all) = policies(&names) else {
        return batch;
    };
    let mut keep = Vec::with_capacity(batch.len());
    for j in batch {
        let version = match &j.op {
            Op::Remove => None,
            Op::Version(v) => Some(v.clone()),
            Op::Install => policy_of(&all, &j.name).and_then(|p| p.candidate.clone()),
        };
        let non_free = match (&version, policy_of(&all, &j.name)) {
            (Some(v), Some(p)) if j.free_only => p.only_non_free(v),
            _ => false,
        };
        if non_free {
            let v = version.unwrap_or_default();
            let _ = j.reply.send(Err(Failure {
                field: Some("allownonfree"),
                message: format!(
                    "{} {v} comes only from a non-free component; set allownonfree to install it",
                    j.name
                ),
            }));
        } else {
            keep.push(j);
        }
    }
    keep
}

/// Whether an apt error line is about this job's package (`Unable to locate package x`,
/// `Package 'x' has no installation candidate`, `Version '1' for 'x' was not found`).
fn mentions(line: &str, job: &Job) -> bool {
    let name = job.name.as_str();
    line.starts_with("E:")
        && (line.ends_with(&format!(" {name}"))
            || line.contains(&format!("'{name}'"))
            || line.contains(&format!(" {name} ")))
}

/// `apt-get` transactions started by this process (each run of `apt-get`, retries included).
static STARTED: AtomicU64 = AtomicU64::new(0);

/// How many `apt-get` transactions this process has started (for tests and benchmarks).
pub(crate) fn transactions_started() -> u64 {
    STARTED.load(Ordering::Relaxed)
}

/// Runs one transaction for `jobs`. When it fails, the jobs apt's error lines name are failed
/// with those lines and the rest tried again as one transaction; when apt names none of them
/// (a dependency problem, a failing maintainer script), each job runs alone, so that a bad
/// package fails only its own resource.
fn transact(flags: Flags, mut jobs: Vec<Job>) {
    while !jobs.is_empty() {
        let args: Vec<String> = jobs.iter().map(Job::arg).collect();
        let started = Instant::now();
        STARTED.fetch_add(1, Ordering::Relaxed);
        let res = run("apt-get", &apt_get_args(flags, &args));
        tracing::info!(
            packages = %args.join(" "),
            secs = started.elapsed().as_secs_f64(),
            ok = res.is_ok(),
            "apt-get transaction"
        );
        let failed = match res {
            Ok(_) => {
                for j in jobs {
                    let _ = j.reply.send(Ok(()));
                }
                return;
            }
            Err(f) => f,
        };
        if jobs.len() == 1 {
            let j = jobs.pop().expect("one job");
            let _ = j.reply.send(Err(Failure::new(failed.summary)));
            return;
        }
        let (bad, good): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|j| failed.lines.iter().any(|l| mentions(l, j)));
        if bad.is_empty() {
            for j in good {
                transact(flags, vec![j]);
            }
            return;
        }
        for j in bad {
            let own: Vec<&str> = failed
                .lines
                .iter()
                .filter(|l| mentions(l, &j))
                .map(String::as_str)
                .collect();
            let msg = format!("apt-get install {}: {}", j.arg(), own.join(" / "));
            let _ = j.reply.send(Err(Failure::new(msg)));
        }
        jobs = good;
    }
}

/// Submits a job to [`TRANSACTIONS`] and waits for its answer.
pub(crate) async fn transaction(
    name: String,
    op: Op,
    flags: Flags,
    free_only: bool,
    alone: bool,
) -> Result<(), Failure> {
    let (reply, rx) = oneshot::channel();
    TRANSACTIONS
        .submit(Job {
            name,
            op,
            flags,
            free_only,
            alone,
            reply,
        })
        .map_err(Failure::new)?;
    rx.await
        .unwrap_or_else(|_| Err(Failure::new("the apt-get thread stopped")))
}

/// Looks a package up with `apt-cache policy`, batched with the look-ups of other resources.
pub(crate) async fn lookup(name: String) -> Result<Option<Policy>, String> {
    let (reply, rx) = oneshot::channel();
    LOOKUPS.submit(Lookup { name, reply })?;
    rx.await
        .unwrap_or_else(|_| Err("the apt-cache thread stopped".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "\
hello:
  Installed: (none)
  Candidate: 2.10-3
  Version table:
     2.10-3 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
jq:
  Installed: 1.6-2.1+deb12u1
  Candidate: 1.6-2.1+deb12u3
  Version table:
     1.6-2.1+deb12u3 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
 *** 1.6-2.1+deb12u1 100
        100 /var/lib/dpkg/status
firmware-misc-nonfree:
  Installed: (none)
  Candidate: 20230210-5
  Version table:
     20230210-5 500
        500 http://deb.debian.org/debian bookworm/non-free-firmware amd64 Packages
";

    #[test]
    fn policy_output_is_parsed() {
        let all = parse_policy(POLICY);
        let h = &all["hello"];
        assert_eq!(h.installed, None);
        assert_eq!(h.candidate.as_deref(), Some("2.10-3"));
        assert_eq!(
            h.versions,
            [("2.10-3".to_string(), vec!["main".to_string()])]
        );
        let jq = &all["jq"];
        assert_eq!(jq.installed.as_deref(), Some("1.6-2.1+deb12u1"));
        assert_eq!(jq.versions.len(), 2);
        assert_eq!(jq.versions[1], ("1.6-2.1+deb12u1".to_string(), vec![]));
        assert!(!jq.only_non_free("1.6-2.1+deb12u1"));
        assert!(all["firmware-misc-nonfree"].only_non_free("20230210-5"));
        assert!(policy_of(&all, "hello:amd64").is_some());
        assert!(policy_of(&all, "nope").is_none());
    }

    fn job(name: &str) -> Job {
        Job {
            name: name.into(),
            op: Op::Install,
            flags: Flags::default(),
            free_only: false,
            alone: false,
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn error_lines_are_matched_to_their_package() {
        let j = job("hellox");
        assert!(mentions("E: Unable to locate package hellox", &j));
        assert!(mentions(
            "E: Package 'hellox' has no installation candidate",
            &j
        ));
        assert!(mentions("E: Version '9' for 'hellox' was not found", &j));
        assert!(!mentions("E: Unable to locate package hellox2", &j));
        assert!(!mentions("W: Unable to locate package hellox", &j));
    }

    #[test]
    fn the_command_line_is_non_interactive_and_waits_for_the_lock() {
        let a = apt_get_args(
            Flags {
                untrusted: true,
                downgrade: false,
            },
            &["a".into(), "b-".into()],
        );
        let s = a.join(" ");
        assert!(s.starts_with("-y -q "), "{s}");
        assert!(s.contains("Dpkg::Options::=--force-confold"), "{s}");
        assert!(
            s.contains(&format!("DPkg::Lock::Timeout={LOCK_TIMEOUT_S}")),
            "{s}"
        );
        assert!(s.ends_with("install --allow-unauthenticated a b-"), "{s}");
    }

    #[test]
    fn the_batcher_gathers_jobs_submitted_close_together() {
        static SEEN: Mutex<Vec<usize>> = Mutex::new(Vec::new());
        static B: Batcher<u32> = Batcher::new(
            "tend-test-batcher",
            Duration::from_millis(50),
            Duration::from_secs(2),
            |b| SEEN.lock().unwrap().push(b.len()),
        );
        for i in 0..5 {
            B.submit(i).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while SEEN.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the batch never ran");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*SEEN.lock().unwrap(), [5]);
    }
}
