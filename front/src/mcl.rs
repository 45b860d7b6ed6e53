//! The mcl front end: compiles the program once and publishes a new frame for every new graph
//! the running program yields (spec/mcl.md §7). The world functions and `collect` read the
//! World through the [`WorldView`] they are given.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tend_lang::funcs::world::WorldView;
use tend_lang::program::{compile, Graph, Options};
use tend_model::KindSchema;
use tokio::sync::watch;

use crate::{Frame, FrameResult};

/// Strips the `error: ` prefix `tend run` adds itself when it prints errors.
fn bare(text: &str) -> String {
    text.trim_end()
        .strip_prefix("error: ")
        .unwrap_or(text.trim_end())
        .to_string()
}

/// A frame of one graph of the program: the engine's errors about it are placed back in the
/// program, rendered as the language renders its own.
fn frame(mut g: Graph) -> Frame {
    let graph = Arc::new(std::mem::take(&mut g.spec));
    Frame::new(
        graph,
        Box::new(move |errs| {
            g.errors(errs)
                .iter()
                .map(|e| bare(&e.render(&g.sources)))
                .collect()
        }),
    )
}

/// Compiles `path` and waits for its first graph; then keeps publishing new graphs (or a
/// rendered run-time error) on the returned channel. Must run on a multi-thread runtime.
pub fn start(
    path: PathBuf,
    schemas: BTreeMap<String, KindSchema>,
    hostname: String,
    world: Arc<dyn WorldView>,
) -> Result<watch::Receiver<Arc<FrameResult>>, Vec<String>> {
    let opts = Options {
        world,
        hostname,
        schemas,
    };
    let prog = compile(&path, opts).map_err(|f| {
        f.errors
            .iter()
            .map(|e| bare(&e.render(&f.map)))
            .collect::<Vec<_>>()
    })?;
    let mut rx = prog.run();
    let handle = tokio::runtime::Handle::current();
    let first = tokio::task::block_in_place(|| handle.block_on(rx.recv()));
    let first = match first {
        Some(Ok(g)) => g,
        Some(Err(text)) => return Err(vec![bare(&text)]),
        None => {
            return Err(vec![format!(
                "{}: the program stopped before its first graph",
                path.display()
            )])
        }
    };
    let (tx, out) = watch::channel(Arc::new(Ok(frame(first))));
    tokio::spawn(async move {
        while let Some(next) = rx.recv().await {
            let f = match next {
                Ok(g) => Ok(frame(g)),
                Err(text) => Err(vec![bare(&text)]),
            };
            if tx.send(Arc::new(f)).is_err() {
                return;
            }
        }
    });
    Ok(out)
}
