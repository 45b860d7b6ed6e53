//! `Meta:reverse`: undoing a resource that leaves the graph (mgmt's reversals).
//!
//! Before a resource with `Meta:reverse` first runs (applying: in its first check's task,
//! with the params it runs with, received ones included), the kind
//! ([`crate::Kind::reverse`]) is asked for the spec that puts back what it found, kept under
//! the state directory, one record per identity (`<state>/reversals/<kind>-<hash>.json`, mode
//! 0600, written to a temporary file, fsynced and renamed, the directory fsynced). A record that is
//! already there is kept: it holds the state found before the first change, which a restart
//! must not replace with the state the resource made. After each swap, once the removed
//! vertices are stopped, every record whose identity is not in the graph becomes a vertex of
//! its own (no edges): an ordinary resource with its own retries, kept across later swaps until
//! it has applied. Then its record is deleted and its watch stopped (it does not keep
//! enforcing the old state); it leaves the graph at the next swap. A `kill -9` anywhere in
//! between leaves the record, which the next process applies (idempotently: a reversal
//! already applied is found in state) and deletes: once, never twice. A dry run (`--noop`,
//! `Meta:noop`) keeps no record and deletes none.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tend_model::{GraphSpec, ResId, ResSpec};

use super::coord::Coord;
use super::vertex::Vertex;
use super::Msg;
use crate::registry::ReverseFn;

/// The directory of the pending reversals.
fn dir_of(state_dir: &Path) -> PathBuf {
    state_dir.join("reversals")
}

/// The record of identity `id`: the kind (letters kept), then a hash of the identity (names
/// may be long or hold anything; the record itself holds the identity).
fn record_path(state_dir: &Path, id: &ResId) -> PathBuf {
    let kind: String = id
        .kind
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    // FNV-1a, 64 bits: stable across versions and processes, unlike std's hashers.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.kind.bytes().chain([0]).chain(id.name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    dir_of(state_dir).join(format!("{kind}-{h:016x}.json"))
}

/// Keeps the reversal of `spec` unless one is kept already (run on a blocking thread before
/// the resource's first applying check).
pub(super) fn keep(state_dir: &Path, spec: &ResSpec, f: ReverseFn) -> Result<(), String> {
    if state_dir.as_os_str().is_empty() {
        return Err("`Meta:reverse` needs a state directory to keep the reversal in".into());
    }
    let path = record_path(state_dir, &spec.id());
    match std::fs::read(&path) {
        Ok(bytes) => {
            return match tend_model::export::decode_resource(&bytes) {
                Ok(r) if r.id() == spec.id() => Ok(()),
                Ok(r) => Err(format!(
                    "{} holds the reversal of {}, not of this resource",
                    path.display(),
                    r.id()
                )),
                Err(e) => Err(format!("{}: {e}", path.display())),
            };
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    }
    let mut rev = f(spec).map_err(|e| format!("finding what undoes it: {e}"))?;
    rev.kind.clone_from(&spec.kind);
    rev.name.clone_from(&spec.name);
    // The reversal runs with the resource's own meta parameters, but is never reversed,
    // exported or hidden itself.
    rev.meta = spec.meta.clone();
    rev.meta.reverse = false;
    rev.meta.realize = false;
    rev.meta.hidden = false;
    rev.meta.export.clear();
    write_atomic(&path, &tend_model::export::encode_resource(&rev))?;
    tracing::info!(resource = %spec.id(), record = %path.display(), "kept what undoes it");
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().expect("a record is in a directory");
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        // Only root reads it: it may hold a file's content.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("writing {}: {e}", path.display())
    })
}

/// The pending reversals: each record, decoded (or why not).
fn list(state_dir: &Path) -> Vec<(PathBuf, Result<ResSpec, String>)> {
    let Ok(rd) = std::fs::read_dir(dir_of(state_dir)) else {
        return Vec::new();
    };
    let mut out: Vec<_> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let spec = std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| tend_model::export::decode_resource(&b));
            (p, spec)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

impl Coord {
    /// After a swap's removals: every pending reversal whose identity is not in the graph
    /// becomes a vertex and starts.
    pub(super) fn add_reversals(&mut self) {
        let state_dir = self.init_ctx.state_dir.clone();
        if state_dir.as_os_str().is_empty() {
            return;
        }
        for (path, spec) in list(&state_dir) {
            let spec = match spec {
                Ok(s) => s,
                Err(error) => {
                    tracing::warn!(record = %path.display(), %error, "a pending reversal does not decode; left alone");
                    continue;
                }
            };
            let id = spec.id();
            if self.by_id.contains_key(&id) {
                // In the graph (it came back, or is being reversed): nothing to undo yet.
                continue;
            }
            let built = self
                .registry
                .get(&spec.kind)
                .ok_or_else(|| format!("unknown kind `{}`", spec.kind))
                .and_then(|k| {
                    for (name, value) in &spec.params {
                        k.schema
                            .check_param(name, value)
                            .map_err(|e| format!("field `{}`: {}", e.field, e.reason))?;
                    }
                    (k.build)(&spec).map_err(|e| e.to_string())
                });
            let res = match built {
                Ok(r) => r,
                Err(error) => {
                    tracing::warn!(resource = %id, record = %path.display(), %error, "a pending reversal does not build; left alone");
                    continue;
                }
            };
            tracing::info!(resource = %id, "undoing it: it left the graph");
            let inc = self.next_inc;
            self.next_inc += 1;
            let mut v = Vertex::new(
                Arc::new(GraphSpec {
                    resources: vec![spec],
                    edges: Vec::new(),
                }),
                0,
                Arc::from(res),
            );
            v.reversal = true;
            self.by_id.insert(v.id.clone(), inc);
            self.counts[v.state as usize] += 1;
            self.verts.insert(inc, Box::new(v));
            self.status_dirty = true;
            self.start(inc);
        }
    }

    /// The reversal vertex `inc` applied: it never runs again (it leaves the graph at the next
    /// swap) and its record is deleted, on a blocking thread, the vertex counting as running
    /// until that is done (so a one-shot run does not exit before). A record that could not
    /// be deleted is found by the next swap or process, and applied again: found in state.
    pub(super) fn reversal_done(&mut self, inc: u64) {
        let state_dir = self.init_ctx.state_dir.clone();
        let Some(v) = self.verts.get_mut(&inc) else {
            return;
        };
        tracing::info!(resource = %v.id, "undone");
        v.reversal = false;
        if let Some(d) = &v.driver {
            d.abort();
        }
        // Not for an event that came while it ran (its own write's), nor for what its watch
        // may still say (an aborted driver finishes the poll it is in).
        v.dirty = false;
        v.epoch += 1;
        v.running = true;
        self.running += 1;
        let path = record_path(&state_dir, &v.id);
        let id = v.id.clone();
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let removed = match std::fs::remove_file(&path) {
                Ok(()) => path.parent().map_or(Ok(()), |d| {
                    std::fs::File::open(d).and_then(|f| f.sync_all())
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = removed {
                tracing::warn!(resource = %id, record = %path.display(), error = %e, "could not delete a reversal's record");
            }
            let _ = tx.send(Msg::ReversalDeleted(inc));
        });
    }

    /// The record of reversal vertex `inc` is deleted (see [`Coord::reversal_done`]).
    pub(super) fn on_reversal_deleted(&mut self, inc: u64) {
        if let Some(v) = self.verts.get_mut(&inc) {
            if v.running && v.check.is_none() {
                v.running = false;
                self.running -= 1;
                v.status_changed = true;
                self.touched.push(inc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_named_by_kind_and_a_stable_hash() {
        let d = Path::new("/s");
        let a = record_path(d, &ResId::new("file", "/etc/motd"));
        assert_eq!(a, record_path(d, &ResId::new("file", "/etc/motd")));
        assert_ne!(a, record_path(d, &ResId::new("file", "/etc/motd2")));
        assert_ne!(
            record_path(d, &ResId::new("ab", "c")),
            record_path(d, &ResId::new("a", "bc"))
        );
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("file-") && name.ends_with(".json"),
            "{name}"
        );
        assert!(a.starts_with("/s/reversals"));
    }
}
