//! Publishing the status: recomputes the state of touched vertices (failed and blocked
//! propagate to descendants) and publishes what changed, throttled between convergence flips.

use std::time::Instant;

use super::coord::{Coord, PUBLISH_INTERVAL};
use super::vertex::Vertex;
use super::Msg;
use crate::events::Event;
use crate::status::VertexState;

impl Coord {
    pub(super) fn compute_state(&self, v: &Vertex) -> VertexState {
        if v.failed.is_some() {
            VertexState::Failed
        } else if v.preds.iter().any(|p| {
            matches!(
                self.verts[p].state,
                VertexState::Failed | VertexState::Blocked
            )
        }) {
            VertexState::Blocked
        } else if v.is_converged() {
            VertexState::Converged
        } else if !v.ever_ok {
            VertexState::Pending
        } else {
            VertexState::Dirty
        }
    }

    /// Recomputes the state of touched vertices (propagating failed/blocked to descendants)
    /// and publishes the status if anything changed.
    pub(super) fn publish(&mut self) {
        let mut work = std::mem::take(&mut self.touched);
        let touched_any = !work.is_empty();
        let mut changed = std::mem::take(&mut self.pending_status);
        while let Some(inc) = work.pop() {
            let Some(v) = self.verts.get(&inc) else {
                continue;
            };
            let new = self.compute_state(v);
            let old = v.state;
            if new == old && !v.status_changed {
                continue;
            }
            changed.insert(inc);
            self.verts.get_mut(&inc).expect("present").status_changed = false;
            if new != old {
                self.dec_count(old);
                self.counts[new as usize] += 1;
                let v = self.verts.get_mut(&inc).expect("present");
                v.state = new;
                v.status.state = new;
                let blockish = |s| matches!(s, VertexState::Failed | VertexState::Blocked);
                if blockish(old) || blockish(new) {
                    work.extend(v.succs.iter().copied());
                }
            }
        }
        if changed.is_empty() && !touched_any && !self.status_dirty && !self.republish {
            return;
        }
        let count = |s: VertexState| self.counts[s as usize];
        let converged = self.generation > 0
            && self.swapping.is_none()
            && self.swap_queue.is_empty()
            && self.running == 0
            && count(VertexState::Pending) == 0
            && count(VertexState::Dirty) == 0;
        // Convergence flips and new generations are published at once; progress in between
        // at most every PUBLISH_INTERVAL, so a watcher cloning the status is not swamped.
        let urgent = converged != self.converged
            || self.generation != self.published_generation
            || self.status_dirty;
        let now = Instant::now();
        if !urgent && now < self.last_publish + PUBLISH_INTERVAL {
            self.pending_status = changed;
            if !self.publish_armed {
                self.publish_armed = true;
                let tx = self.tx.clone();
                let at = self.last_publish + PUBLISH_INTERVAL;
                tokio::spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    let _ = tx.send(Msg::Publish);
                });
            }
            return;
        }
        self.republish = false;
        self.last_publish = now;
        self.published_generation = self.generation;
        let full = std::mem::replace(&mut self.status_dirty, false);
        let verts = &self.verts;
        let counts: std::collections::BTreeMap<VertexState, usize> =
            VertexState::ALL.iter().map(|s| (*s, count(*s))).collect();
        let generation = self.generation;
        // Emit first, so the metrics agree with the status as soon as a watcher sees it.
        if converged != self.converged {
            self.converged = converged;
            Event::Converged {
                generation,
                converged,
            }
            .emit(&self.sink);
        }
        self.status_tx.send_modify(|s| {
            s.generation = generation;
            s.converged = converged;
            s.total = verts.len();
            s.counts = counts;
            if full {
                s.vertices = verts
                    .values()
                    .map(|v| (v.id.clone(), v.status.clone()))
                    .collect();
            } else {
                for inc in &changed {
                    if let Some(v) = verts.get(inc) {
                        match s.vertices.get_mut(&v.id) {
                            Some(e) => e.clone_from(&v.status),
                            None => {
                                s.vertices.insert(v.id.clone(), v.status.clone());
                            }
                        }
                    }
                }
            }
        });
    }
}
