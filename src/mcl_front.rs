//! The mcl front end of `tend run`: compiles the program once and publishes a new frame for
//! every new graph the running program yields (spec/mcl.md §7). The world functions and
//! `collect` read the World through the [`WorldView`] they are given.

use std::path::PathBuf;
use std::sync::Arc;

use tend_engine::{GraphSpec, Registry};
use tend_lang::funcs::world::WorldView;
use tend_lang::program::{compile, Options};
use tokio::sync::watch;

use crate::run::{Frame, FrameResult};

/// Strips the `error: ` prefix `tend run` adds itself when it prints errors.
fn bare(text: &str) -> String {
    text.trim_end()
        .strip_prefix("error: ")
        .unwrap_or(text.trim_end())
        .to_string()
}

fn frame(graph: GraphSpec) -> Frame {
    Frame {
        graph: Arc::new(graph),
        describe: Box::new(|e| e.to_string()),
    }
}

/// Compiles `path` and waits for its first graph; then keeps publishing new graphs (or a
/// rendered run-time error) on the returned channel. Must run on a multi-thread runtime.
pub fn start(
    path: PathBuf,
    registry: Arc<Registry>,
    hostname: String,
    world: Arc<dyn WorldView>,
) -> Result<watch::Receiver<Arc<FrameResult>>, Vec<String>> {
    let validator = registry.clone();
    let opts = Options {
        world,
        hostname,
        schemas: registry.schemas(),
        validate: Some(Arc::new(move |spec| {
            validator.validate(spec).map_err(|e| e.to_string())
        })),
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
