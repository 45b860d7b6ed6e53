//! Dispatch: a vertex's driver (init, then its watch or poll timer) and its checks, each in
//! its own task; the coordinator starts no more checks than `parallel` and queues the rest.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tend_model::parse_sema;
use tokio::sync::Semaphore;

use super::coord::Coord;
use super::vertex::panic_message;
use super::Msg;
use crate::resource::{CheckCtx, Watcher};

impl Coord {
    /// Spawns a vertex's driver: init (unless done), then its watch or its poll timer.
    pub(super) fn start(&mut self, inc: u64) {
        let Some(v) = self.verts.get_mut(&inc) else {
            return;
        };
        self.touched.push(inc);
        self.candidates.push(inc);
        if v.hidden() {
            v.started = true;
            v.dirty = false;
            v.ever_ok = true;
            return;
        }
        let restart = v.started;
        v.started = true;
        if restart {
            // A rewatch: forget the watch failure, check again once the watch is up.
            v.watch_failed = false;
            v.watch_running = false;
            v.failed = None;
            v.dirty = true;
            v.retries_left = v.spec().meta.retry;
        }
        let skip_init = v.flags.inited.load(Ordering::SeqCst);
        let flags = v.flags.clone();
        let res = v.res.clone();
        let tx = self.tx.clone();
        let ctx = self.init_ctx.clone();
        let poll = v.spec().meta.poll;
        v.epoch += 1;
        let epoch = v.epoch;
        v.driver = Some(tokio::spawn(async move {
            if !skip_init {
                let out = AssertUnwindSafe(res.init(&ctx)).catch_unwind().await;
                let err = match out {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(p) => Some(panic_message(p)),
                };
                if let Some(error) = err {
                    let _ = tx.send(Msg::Failed {
                        inc,
                        epoch,
                        phase: "init",
                        error,
                    });
                    return;
                }
                // No message: the coordinator only needs this at removal (cleanup is due)
                // and at a restart (init is not repeated), both after the driver is over.
                flags.inited.store(true, Ordering::SeqCst);
            }
            if poll != 0 {
                let _ = tx.send(Msg::Watch {
                    inc,
                    epoch,
                    running: true,
                    dirty: false,
                });
                if poll < 0 {
                    return;
                }
                let period = Duration::from_secs(poll as u64);
                let mut iv = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                loop {
                    iv.tick().await;
                    if tx
                        .send(Msg::Watch {
                            inc,
                            epoch,
                            running: true,
                            dirty: true,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            }
            let (w, r) = Watcher::channel();
            // The watch runs inside this task: aborting the driver drops it.
            let mut h = AssertUnwindSafe(res.watch(w)).catch_unwind();
            loop {
                tokio::select! {
                    out = &mut h => {
                        let sig = r.take();
                        let msg = match out {
                            Ok(Ok(())) => Msg::Watch { inc, epoch, running: true, dirty: sig.dirty },
                            Ok(Err(e)) => Msg::Failed { inc, epoch, phase: "watch", error: e.to_string() },
                            Err(p) => Msg::Failed { inc, epoch, phase: "watch", error: panic_message(p) },
                        };
                        let _ = tx.send(msg);
                        return;
                    }
                    sig = r.next() => {
                        if tx.send(Msg::Watch { inc, epoch, running: sig.running, dirty: sig.dirty }).is_err() {
                            return;
                        }
                    }
                }
            }
        }));
    }

    /// Dispatches every candidate that may run now.
    pub(super) fn schedule(&mut self) {
        // Those already waiting for a slot go first.
        while self.running < self.parallel {
            let Some(inc) = self.ready.pop_front() else {
                break;
            };
            if let Some(v) = self.verts.get_mut(&inc) {
                v.queued = false;
            }
            self.try_dispatch(inc);
        }
        let mut cands = std::mem::take(&mut self.candidates);
        cands.sort_unstable();
        cands.dedup();
        for inc in cands {
            self.try_dispatch(inc);
        }
    }

    pub(super) fn try_dispatch(&mut self, inc: u64) {
        let Some(v) = self.verts.get(&inc) else {
            return;
        };
        if v.deferred {
            // A receiver whose senders have run: built with what they sent, then started.
            if v.failed.is_none()
                && !v.retry_wait
                && v.preds.iter().all(|p| self.verts[p].is_converged())
            {
                self.verts.get_mut(&inc).expect("present").deferred = false;
                if !self.receive(inc) {
                    self.start(inc);
                } else if !self.verts[&inc].started {
                    // The values did not build: tried again as its failure says.
                    self.verts.get_mut(&inc).expect("present").deferred = true;
                }
            }
            return;
        }
        if !v.started
            || v.hidden()
            || !v.watch_running
            || !v.dirty
            || v.running
            || v.failed.is_some()
            || v.retry_wait
            || v.limit_wait
        {
            return;
        }
        if v.queued || !v.preds.iter().all(|p| self.verts[p].is_converged()) {
            return;
        }
        // Send/recv: a resource whose received values changed is built again first (and
        // runs once its new watch is up).
        if (!v.recv.is_empty() || !v.received.is_empty()) && self.receive(inc) {
            return;
        }
        let full = self.running >= self.parallel;
        let v = self.verts.get_mut(&inc).expect("present");
        if full {
            // Started when a slot frees up (see `schedule`).
            v.queued = true;
            self.ready.push_back(inc);
            return;
        }
        if let Some(b) = &mut v.bucket {
            if let Err(wait) = b.take() {
                v.limit_wait = true;
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = tx.send(Msg::LimitReady(inc));
                });
                return;
            }
        }
        v.running = true;
        v.dirty = false;
        v.upstream_inflight = std::mem::take(&mut v.upstream_changed);
        let refresh = !v.refresh_from.is_empty();
        v.refresh_inflight = v.refresh_from.drain().collect();
        let apply = !(self.noop || v.spec().meta.noop);
        let timeout = v.spec().meta.timeout;
        let mut names: Vec<(String, usize)> = v
            .spec()
            .meta
            .sema
            .iter()
            .filter_map(|s| parse_sema(s).ok())
            .collect();
        names.sort();
        names.dedup_by(|a, b| a.0 == b.0);
        let semas: Vec<Arc<Semaphore>> = names
            .into_iter()
            .map(|(name, n)| {
                self.semas
                    .entry(name)
                    .or_insert_with(|| Arc::new(Semaphore::new(n)))
                    .clone()
            })
            .collect();
        // `Meta:reverse`: what undoes it is kept before it first changes anything (not in a
        // dry run, which changes nothing), from the params it runs with (received ones too).
        let keep = (apply && v.spec().meta.reverse && !v.reverse_kept)
            .then(|| {
                let f = self.registry.get(&v.spec().kind)?.reverse?;
                let mut spec = v.spec().clone();
                for (k, val) in &v.received {
                    spec.params.insert(k.clone(), val.clone());
                }
                Some((f, spec, self.init_ctx.state_dir.clone()))
            })
            .flatten();
        let res = v.res.clone();
        let tx = self.tx.clone();
        let mut cancel = self.cancel_tx.subscribe();
        let flags = v.flags.clone();
        self.running += 1;
        self.touched.push(inc);
        v.check = Some(tokio::spawn(async move {
            let mut cancelled = std::pin::pin!(async move {
                if cancel.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            });
            let acquire = async {
                let mut permits = Vec::with_capacity(semas.len() + 1);
                for s in semas {
                    permits.push(s.acquire_owned().await);
                }
                permits
            };
            // Biased, the cancellation polled last: a check that finishes in its first poll
            // (most do) never registers with the shared cancellation channel.
            let permits = tokio::select! {
                biased;
                p = acquire => p,
                () = &mut cancelled => {
                    let _ = tx.send(Msg::CheckDone {
                        inc,
                        result: Err("cancelled".to_string()),
                        duration: Duration::ZERO,
                        apply,
                        refresh,
                        sent: Vec::new(),
                    });
                    return;
                }
            };
            if !flags.alive.load(Ordering::SeqCst) {
                // Removed from the graph while queued: never start.
                return;
            }
            let start = Instant::now();
            if let Some((f, spec, dir)) = keep {
                let kept =
                    tokio::task::spawn_blocking(move || super::reverse::keep(&dir, &spec, f))
                        .await
                        .unwrap_or_else(|e| Err(format!("panicked: {e}")));
                if let Err(e) = kept {
                    drop(permits);
                    let _ = tx.send(Msg::CheckDone {
                        inc,
                        result: Err(format!("keeping what undoes it (Meta:reverse): {e}")),
                        duration: start.elapsed(),
                        apply,
                        refresh,
                        sent: Vec::new(),
                    });
                    return;
                }
            }
            // check_apply runs inside this task; a timeout or a cancellation drops it.
            let call =
                AssertUnwindSafe(res.check_apply(CheckCtx { apply, refresh })).catch_unwind();
            let run = async {
                let joined = if timeout > 0 {
                    match tokio::time::timeout(Duration::from_millis(timeout), call).await {
                        Ok(j) => j,
                        Err(_) => return Err(format!("timed out after {timeout} ms")),
                    }
                } else {
                    call.await
                };
                match joined {
                    Ok(Ok(c)) => Ok(c),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(p) => Err(panic_message(p)),
                }
            };
            let result = tokio::select! {
                biased;
                r = run => r,
                () = &mut cancelled => Err("cancelled".to_string()),
            };
            drop(permits);
            // What it sends is read at once, before another event may run it again.
            let sent = match &result {
                Ok(_) => {
                    std::panic::catch_unwind(AssertUnwindSafe(|| res.sent())).unwrap_or_default()
                }
                Err(_) => Vec::new(),
            };
            let _ = tx.send(Msg::CheckDone {
                inc,
                result,
                duration: start.elapsed(),
                apply,
                refresh,
                sent,
            });
        }));
    }
}
