//! Front ends: what turns a program into the stream of graphs `tend run` swaps into the
//! engine. Each publishes [`Frame`]s on a `tokio::sync::watch` channel (a burst of new graphs
//! coalesces to the newest):
//!
//! - [`yaml`]: a YAML graph file, read again whenever it changes;
//! - [`mcl`]: an mcl program, a new graph whenever a value it reads changes;
//! - [`deploys`]: the World's deploys, each fetched, compiled through [`mcl`] and checked by
//!   the engine before the host takes it; a deploy that does not compile or check is rejected
//!   and the running program kept.
//!
//! Front ends only read their source: checking a graph is the engine's
//! ([`tend_engine::Engine::prepare`]), and a frame says where the engine's errors are in the
//! program ([`Frame::describe`]). [`bundle`] is what a deploy holds (and the check `tend
//! deploy` makes before publishing one); [`signing`] signs deploys and verifies them against a
//! host's trusted keys; [`view`] is the language's view of the World.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tend_engine::Prepared;
use tend_model::{GraphError, GraphSpec};

pub mod bundle;
pub mod deploys;
pub mod mcl;
pub mod signing;
pub mod view;
pub mod yaml;

/// Renders the engine's errors about a frame's graph, in the program's order.
pub type Describe = Box<dyn Fn(&[GraphError]) -> Vec<String> + Send + Sync>;

/// One graph from a front end, and how to say where an engine error about it came from.
pub struct Frame {
    /// The graph.
    pub graph: Arc<GraphSpec>,
    describe: Describe,
    /// The graph as the engine checked and built it, when the front end already had it
    /// checked (the deploy follower checks a deploy's first graph before taking the deploy).
    prepared: Mutex<Option<Prepared>>,
}

impl Frame {
    /// A frame of `graph`, whose engine errors `describe` renders.
    pub fn new(graph: Arc<GraphSpec>, describe: Describe) -> Frame {
        Frame {
            graph,
            describe,
            prepared: Mutex::new(None),
        }
    }

    /// The engine's errors about this graph, rendered in the program's order, each naming the
    /// file, line, resource and field.
    pub fn describe(&self, errors: &[GraphError]) -> Vec<String> {
        (self.describe)(errors)
    }

    /// Takes the graph as the engine already prepared it, if a front end had it checked (once:
    /// later calls give `None`, and the caller prepares it again).
    pub fn take_prepared(&self) -> Option<Prepared> {
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn set_prepared(&self, p: Prepared) {
        *self.prepared.lock().unwrap_or_else(|p| p.into_inner()) = Some(p);
    }
}

/// What a front end publishes: a graph, or why the program does not produce one now.
pub type FrameResult = Result<Frame, Vec<String>>;

/// The kind of program `tend run` was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// A YAML graph file.
    Yaml(PathBuf),
    /// An mcl program's entry file.
    Mcl(PathBuf),
}

impl Program {
    /// The kind of program at `path`: `.yaml`/`.yml` is a graph, `.mcl` or a directory
    /// (holding `main.mcl`) an mcl program.
    pub fn of(path: &Path) -> Result<Program, String> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext {
            "yaml" | "yml" => Ok(Program::Yaml(path.to_path_buf())),
            "mcl" => Ok(Program::Mcl(path.to_path_buf())),
            _ if path.is_dir() => Ok(Program::Mcl(path.join("main.mcl"))),
            _ => Err(format!(
                "{}: unknown program type (expected a `.yaml`/`.yml` graph, an `.mcl` file, or a directory holding main.mcl)",
                path.display()
            )),
        }
    }
}
