//! Graph swap: the [`GraphDiff`] of the running graph and the new one (computed apart, in
//! `diff.rs`) applied by the coordinator. Removed and changed vertices are stopped at once
//! and cleaned up in the background; additions start when that is done (at once when nothing
//! is removed).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use futures::FutureExt;
use tend_model::ResId;

use crate::resource::Resource;

use super::coord::{Coord, PendingSwap, QueuedSwap};
use super::diff::GraphDiff;
use super::vertex::{panic_message, Recv, Vertex};
use super::{Msg, SwapStats};
use crate::events::Event;
use crate::status::VertexState;

impl Coord {
    /// Starts the next queued swap if none is in progress: computes its [`GraphDiff`], then
    /// applies it: installs the new topology, stops removed and changed vertices at once, and
    /// spawns their cleanup; additions start when the cleanup is done
    /// ([`Coord::finish_swap`]).
    pub(super) fn next_swap(&mut self) {
        if self.swapping.is_some() {
            return;
        }
        let Some(q) = self.swap_queue.pop_front() else {
            return;
        };
        let mut stats = SwapStats::default();
        if q.exiting {
            stats.removed += self.leave_for_exit();
        }
        let mut diff = GraphDiff::compute(&q.graph, self.by_id.values().copied(), |spec| {
            let inc = *self.by_id.get(&spec.id())?;
            Some((inc, self.verts[&inc].spec()))
        });
        if !self.shutting_down {
            // A pending reversal stays until it is done (see `reverse.rs`).
            diff.remove.retain(|inc| !self.verts[inc].reversal);
            if self.must_realize_first(&diff) {
                // Held until they ran (the loop of `Coord::run` asks again).
                self.swap_queue.push_front(q);
                self.realize_wait = true;
                return;
            }
        }
        self.realize_wait = false;
        self.apply(diff, q, stats);
    }

    /// `Meta:realize`: whether a vertex the swap would remove or replace must converge once
    /// first (mgmt's documented meaning): one that has not run successfully yet and is
    /// neither failed nor blocked by a failed predecessor. Logged once per wait.
    fn must_realize_first(&mut self, diff: &GraphDiff<u64>) -> bool {
        let waiting: Vec<u64> = diff
            .remove
            .iter()
            .chain(diff.change.iter().map(|(inc, _)| inc))
            .copied()
            .filter(|inc| {
                let v = &self.verts[inc];
                v.spec().meta.realize
                    && !v.hidden()
                    && !v.ever_ok
                    && !matches!(v.state, VertexState::Failed | VertexState::Blocked)
            })
            .collect();
        if !self.realize_wait {
            for inc in &waiting {
                tracing::info!(resource = %self.verts[inc].id, "the graph swap waits for it to converge once (Meta:realize)");
            }
        }
        !waiting.is_empty()
    }

    /// The process exits next: a vertex with nothing to stop (see `shutdown_for_exit`) is left
    /// as it is, its driver running, its memory not freed (freeing 10,000 vertices would only
    /// delay the exit); the others stay in the graph, to be stopped by the swap. Returns how
    /// many were left.
    fn leave_for_exit(&mut self) -> usize {
        let mut stop = Vec::new();
        let mut stay = 0;
        for (inc, v) in &self.verts {
            if v.running || v.res.stop_at_exit() {
                stop.push(*inc);
            } else {
                v.flags.alive.store(false, Ordering::SeqCst);
                let n = &mut self.counts[v.state as usize];
                *n = n.saturating_sub(1);
                stay += 1;
            }
        }
        if stay > 0 {
            let mut verts = HashMap::with_capacity(stop.len());
            let mut by_id = HashMap::with_capacity(stop.len());
            for inc in stop {
                let v = self.verts.remove(&inc).expect("present");
                by_id.insert(v.id.clone(), inc);
                verts.insert(inc, v);
            }
            std::mem::forget(std::mem::replace(&mut self.verts, verts));
            std::mem::forget(std::mem::replace(&mut self.by_id, by_id));
        }
        stay
    }

    /// Applies a swap's diff (see [`Coord::next_swap`]).
    fn apply(&mut self, diff: GraphDiff<u64>, q: QueuedSwap, mut stats: SwapStats) {
        let QueuedSwap {
            graph,
            edges,
            built,
            started,
            reply,
            ..
        } = q;
        // `prepare` built every resource of the graph, in order (the shutdown's empty graph
        // has none).
        debug_assert_eq!(built.len(), graph.resources.len());
        let mut built: Vec<Option<Arc<dyn Resource>>> = built.into_iter().map(Some).collect();
        stats.kept = diff.keep.len();
        // Kept vertices now read their (equal) spec from the new graph.
        for &(inc, idx) in &diff.keep {
            let v = self.verts.get_mut(&inc).expect("present");
            v.graph = graph.clone();
            v.idx = idx;
        }

        // Stop removed and replaced vertices now; clean them up in the background.
        let changed: HashSet<u64> = diff.change.iter().map(|(inc, _)| *inc).collect();
        let gone = diff.remove.len() + diff.change.len();
        // Everything goes (e.g. at shutdown): take the maps whole instead of entry by entry.
        let leaving: Vec<(u64, Box<Vertex>)> = if gone == self.verts.len() {
            self.by_id.clear();
            self.verts.drain().collect()
        } else {
            diff.remove
                .iter()
                .chain(changed.iter())
                .map(|inc| {
                    let v = self.verts.remove(inc).expect("present");
                    self.by_id.remove(&v.id);
                    (*inc, v)
                })
                .collect()
        };
        let mut carried: HashMap<u64, Vertex> = HashMap::with_capacity(changed.len());
        let mut removals = Vec::with_capacity(leaving.len());
        for (inc, mut v) in leaving {
            self.dec_count(v.state);
            if changed.contains(&inc) {
                stats.changed += 1;
                carried.insert(inc, v.take_carried());
            } else {
                stats.removed += 1;
            }
            v.flags.alive.store(false, Ordering::SeqCst);
            if let Some(d) = &v.driver {
                d.abort();
            }
            if v.running {
                self.running -= 1;
            }
            removals.push((v.id, v.res, v.driver.take(), v.check.take(), v.flags));
        }

        // Insert additions. With nothing to remove first (always so for the first graph),
        // each one starts at once: its driver (init, watch) runs on another worker while the
        // rest are inserted. A driver's messages wait until this swap is done, so no check
        // runs before the adjacency below is complete. Otherwise they start once the
        // removals are cleaned up.
        let start_now = removals.is_empty();
        let fresh = diff.add.len() + diff.change.len();
        let mut to_start = Vec::with_capacity(if start_now { 0 } else { fresh });
        self.verts.reserve(fresh);
        self.by_id.reserve(fresh);
        // Send/recv receivers start (init, watch) once their senders ran, built with what they
        // receive: not built and watched twice.
        let receivers: HashSet<&ResId> = edges
            .iter()
            .filter(|e| !e.send.is_empty())
            .map(|e| &e.to)
            .collect();
        for (idx, replaces) in diff.new_vertices() {
            if replaces.is_none() {
                stats.added += 1;
            }
            let res = built[idx].take().expect("built by prepare");
            let inc = self.next_inc;
            self.next_inc += 1;
            let mut v = Vertex::new(graph.clone(), idx, res);
            if let Some(old) = replaces.and_then(|r| carried.remove(&r)) {
                v.carry_over(old);
            }
            v.deferred = !receivers.is_empty() && !v.hidden() && receivers.contains(&*v.id);
            let deferred = v.deferred;
            self.by_id.insert(v.id.clone(), inc);
            self.counts[v.state as usize] += 1;
            self.verts.insert(inc, Box::new(v));
            if deferred {
                // Started by `try_dispatch`.
            } else if start_now {
                self.start(inc);
            } else {
                to_start.push(inc);
            }
        }

        // Rebuild the adjacency of the whole graph.
        for v in self.verts.values_mut() {
            v.preds.clear();
            v.succs.clear();
            v.notify_succs.clear();
            v.recv.clear();
        }
        let mut notify_pairs: HashSet<(ResId, ResId)> = HashSet::new();
        for e in &edges {
            let (Some(&f), Some(&t)) = (self.by_id.get(&e.from), self.by_id.get(&e.to)) else {
                continue;
            };
            let from = self.verts.get_mut(&f).expect("present");
            from.succs.push(t);
            if e.notify {
                from.notify_succs.push(t);
                notify_pairs.insert((e.from.clone(), e.to.clone()));
            }
            let to = self.verts.get_mut(&t).expect("present");
            to.preds.push(f);
            to.recv.extend(e.send.iter().map(|sr| Recv {
                from: f,
                send: sr.send.clone(),
                recv: sr.recv.clone(),
            }));
        }
        // Refresh flags survive on kept notify edges only.
        for v in self.verts.values_mut() {
            if v.refresh_from.is_empty() {
                continue;
            }
            let to = ResId::clone(&v.id);
            v.refresh_from
                .retain(|from| notify_pairs.contains(&(from.clone(), to.clone())));
        }
        // A kept receiver that lost a send/recv edge runs again with its own param.
        let lost: Vec<u64> = self
            .verts
            .iter()
            .filter(|(_, v)| !v.received.is_empty() && !self.still_received(v))
            .map(|(inc, _)| *inc)
            .collect();
        for inc in lost {
            self.verts.get_mut(&inc).expect("present").dirty = true;
        }
        // Restart failed watches on request.
        for &(inc, _) in &diff.keep {
            let v = &self.verts[&inc];
            if v.watch_failed && v.spec().meta.rewatch && !v.hidden() {
                to_start.push(inc);
            }
        }

        self.generation += 1;
        // Every vertex's state may depend on new predecessors.
        self.touched.extend(self.verts.keys().copied());
        self.candidates.extend(self.verts.keys().copied());
        self.status_dirty = true;
        self.swapping = Some(PendingSwap {
            reply,
            started,
            stats,
            to_start,
        });

        if start_now {
            // Nothing to wait for: the additions are started; the rewatches start now.
            self.finish_swap();
            return;
        }
        let tx = self.tx.clone();
        let sink = self.sink.clone();
        tokio::spawn(async move {
            // Aborted drivers end at their next await point: wait for each in turn (cheap:
            // most are done by then), so that no watch outlives its removal.
            let mut rest = Vec::with_capacity(removals.len());
            for (id, res, driver, check, flags) in removals {
                if let Some(d) = driver {
                    let _ = d.await;
                }
                // Read once the driver is over: an init that just succeeded counts.
                rest.push((id, res, check, flags.inited.load(Ordering::SeqCst)));
            }
            // Then each vertex waits for its running check (never cut short) and is cleaned
            // up; cleanups that finish at once are not queued, the others run concurrently.
            let mut failed = Vec::new();
            let mut slow = futures::stream::FuturesUnordered::new();
            for (id, res, check, inited) in rest {
                let mut fut = Box::pin(async move {
                    if let Some(c) = check {
                        let _ = c.await;
                    }
                    if !inited {
                        return None;
                    }
                    match AssertUnwindSafe(res.cleanup()).catch_unwind().await {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some((id, e.to_string())),
                        Err(p) => Some((id, panic_message(p))),
                    }
                });
                match futures::poll!(fut.as_mut()) {
                    std::task::Poll::Ready(r) => failed.extend(r),
                    std::task::Poll::Pending => slow.push(fut),
                }
            }
            while let Some(r) = futures::StreamExt::next(&mut slow).await {
                failed.extend(r);
            }
            for (id, error) in failed {
                Event::CleanupFailed { id, error }.emit(&sink);
            }
            let _ = tx.send(Msg::RemovalsDone);
        });
    }

    pub(super) fn finish_swap(&mut self) {
        let Some(p) = self.swapping.take() else {
            return;
        };
        if !self.shutting_down {
            // Removals are over: what they left to undo can start.
            self.add_reversals();
        }
        for inc in p.to_start {
            self.start(inc);
        }
        // Published before the reply, so that whoever awaited the swap sees its generation;
        // after the drivers are spawned, which meanwhile start on the other workers.
        self.republish = true;
        self.publish();
        let mut stats = p.stats;
        stats.duration = p.started.elapsed();
        Event::GraphSwapped {
            generation: self.generation,
            stats: stats.clone(),
        }
        .emit(&self.sink);
        if let Some(r) = p.reply {
            let _ = r.send(Ok(stats));
        }
        self.next_swap();
        self.maybe_shutdown_done();
    }
}
