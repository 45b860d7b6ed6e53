//! The YAML front end of `tend run`: a graph file (see `tend_yaml`), published once and again
//! whenever the file changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tend_engine::Registry;
use tokio::sync::watch;

use crate::{Frame, FrameResult};

/// Reads a graph file into a frame. Mistakes found while reading are reported together with
/// what the engine's check finds in the rest; a graph read without mistakes is checked by the
/// engine when it is swapped in, and the frame locates those errors in the file.
pub fn load(path: &Path, registry: &Registry) -> FrameResult {
    let env = |name: &str| std::env::var(name).ok();
    let loaded = tend_yaml::load(path, registry.schemas(), &env)
        .finish(|g, complete| tend_engine::check_partial(registry, g, complete));
    match loaded {
        Ok(mut loaded) => {
            // The frame owns the graph; `loaded` keeps only what locates errors.
            let graph = Arc::new(std::mem::take(&mut loaded.graph));
            Ok(Frame::new(
                graph,
                Box::new(move |errs| {
                    loaded
                        .locate_all(errs)
                        .iter()
                        .map(ToString::to_string)
                        .collect()
                }),
            ))
        }
        Err(errs) => Err(errs.iter().map(ToString::to_string).collect()),
    }
}

/// Starts the YAML front end: publishes the file's first frame before returning, then a new
/// one each time the file changes. Must be called inside a tokio runtime.
pub fn start(path: PathBuf, registry: Arc<Registry>) -> watch::Receiver<Arc<FrameResult>> {
    let first = load(&path, &registry);
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(follow(path, registry, tx));
    rx
}

/// Re-reads the YAML file whenever its modification time or size changes (checked every
/// second, which also survives editors that replace the file).
async fn follow(path: PathBuf, registry: Arc<Registry>, tx: watch::Sender<Arc<FrameResult>>) {
    let stamp = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
    };
    let mut last = stamp(&path);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if tx.is_closed() {
            return;
        }
        let now = stamp(&path);
        if now == last {
            continue;
        }
        last = now;
        tracing::info!(file = %path.display(), "graph file changed, reloading");
        let frame = load(&path, &registry);
        if tx.send(Arc::new(frame)).is_err() {
            return;
        }
    }
}
