//! Send/recv: the values an edge `A.send -> B.recv` carries. After each successful check a
//! vertex's [`crate::Resource::sent`] values are kept on it (`Vertex::sent`); before a receiver
//! runs, the values its predecessors sent are compared with those its resource was built with
//! (`Vertex::received`), and when they differ the resource is built again from its spec with
//! the received params in place of the program's (the kind's own constructor, after the
//! schema's check of each value: the same validation as any spec), its old resource stopped
//! and cleaned up, and the new one initialised and watched before it runs. A new receiver is
//! not started before its senders ran (`Vertex::deferred`, started by `try_dispatch`), so it
//! is built with what they sent and watched once. A sent value that changes makes its
//! receivers dirty, as a drift event would. A value not sent yet leaves the program's param
//! (or the default) in place.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tend_model::Value;

use super::coord::Coord;
use super::vertex::{panic_message, Flags, Vertex};
use crate::events::Event;

impl Coord {
    /// The params `v` should be built with now: each value its predecessors sent, by param.
    fn wanted(&self, v: &Vertex) -> Vec<(String, Value)> {
        let mut out: Vec<(String, Value)> = v
            .recv
            .iter()
            .filter_map(|r| {
                let from = self.verts.get(&r.from)?;
                let (_, val) = from.sent.iter().find(|(k, _)| *k == r.send)?;
                Some((r.recv.clone(), val.clone()))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Whether every param `v` received still comes in on one of its edges.
    pub(super) fn still_received(&self, v: &Vertex) -> bool {
        v.received
            .iter()
            .all(|(k, _)| v.recv.iter().any(|r| r.recv == *k))
    }

    /// Before vertex `inc` runs: builds its resource again if the values it receives changed.
    /// Returns whether it did (the check then waits for the new resource's watch) or failed
    /// to (the failure is the check's).
    pub(super) fn receive(&mut self, inc: u64) -> bool {
        let v = &self.verts[&inc];
        let want = self.wanted(v);
        if want == v.received {
            return false;
        }
        let built = self.build_received(v, &want);
        let v = self.verts.get_mut(&inc).expect("present");
        let res = match built {
            Ok(r) => r,
            Err(error) => {
                // A failed check, with its retries: the same values are tried again after the
                // wait, new ones at once (see `sent_changed`).
                let apply = !(self.noop || v.spec().meta.noop);
                v.running = true;
                self.running += 1;
                self.on_check_done(inc, Err(error), Duration::ZERO, apply, false, Vec::new());
                return true;
            }
        };
        for (k, val) in &want {
            if v.received.iter().all(|(k2, v2)| k2 != k || v2 != val) {
                tracing::info!(resource = %v.id, param = %k, value = %short(val), "received");
            }
        }
        v.received = want;
        // Stop the old resource (its driver, then its cleanup once init had succeeded) and
        // start the new one: init, then its watch; it stays dirty, so it runs once watched.
        let old = std::mem::replace(&mut v.res, res);
        let old_flags = std::mem::replace(&mut v.flags, Flags::fresh());
        old_flags.alive.store(false, Ordering::SeqCst);
        let old_driver = v.driver.take();
        if let Some(d) = &old_driver {
            d.abort();
        }
        v.started = false;
        v.watch_running = false;
        v.watch_failed = false;
        let id = v.id.clone();
        let sink = self.sink.clone();
        tokio::spawn(async move {
            if let Some(d) = old_driver {
                let _ = d.await;
            }
            if !old_flags.inited.load(Ordering::SeqCst) {
                return;
            }
            let error = match AssertUnwindSafe(old.cleanup()).catch_unwind().await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e.to_string(),
                Err(p) => panic_message(p),
            };
            Event::CleanupFailed { id, error }.emit(&sink);
        });
        self.start(inc);
        true
    }

    /// `v`'s resource built from its spec with the received params `want`.
    fn build_received(
        &self,
        v: &Vertex,
        want: &[(String, Value)],
    ) -> Result<Arc<dyn crate::Resource>, String> {
        let spec = v.spec();
        let Some(kind) = self.registry.get(&spec.kind) else {
            return Err(format!("unknown kind `{}`", spec.kind));
        };
        let mut spec = spec.clone();
        for (k, val) in want {
            let from = v
                .recv
                .iter()
                .find(|r| r.recv == *k)
                .and_then(|r| self.verts.get(&r.from))
                .map(|f| f.id.to_string())
                .unwrap_or_default();
            if let Err(e) = kind.schema.check_param(k, val) {
                return Err(format!(
                    "the value received into `{}` from {from} does not fit: {}",
                    e.field, e.reason
                ));
            }
            spec.params.insert(k.clone(), val.clone());
        }
        match std::panic::catch_unwind(AssertUnwindSafe(|| (kind.build)(&spec))) {
            Ok(Ok(r)) => Ok(Arc::from(r)),
            Ok(Err(e)) => Err(format!("with the values it received: {e}")),
            Err(p) => Err(format!("with the values it received: {}", panic_message(p))),
        }
    }

    /// Vertex `inc` sent new values: each receiver whose values changed is checked again
    /// (a failed one, or one waiting for a retry, at once).
    pub(super) fn sent_changed(&mut self, inc: u64) {
        let succs = self.verts[&inc].succs.clone();
        for s in succs {
            let v = &self.verts[&s];
            if v.hidden() || !v.recv.iter().any(|r| r.from == inc) || self.wanted(v) == v.received {
                continue;
            }
            let v = self.verts.get_mut(&s).expect("present");
            if (v.failed.is_some() && !v.watch_failed) || v.retry_wait {
                v.failed = None;
                v.retry_wait = false;
                v.retry_seq += 1;
                v.retries_left = v.spec().meta.retry;
            }
            v.dirty = true;
            self.candidates.push(s);
            self.touched.push(s);
        }
    }
}

/// A value for a log line: strings cut at 60 characters.
fn short(v: &Value) -> String {
    let s = match v {
        Value::Str(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if s.chars().count() > 60 {
        let head: String = s.chars().take(60).collect();
        format!("{head}...")
    } else {
        s
    }
}
