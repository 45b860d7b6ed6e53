//! The public entry point: load a program (a `.mcl` file or a directory holding `main.mcl`)
//! with the local files it imports, compile it through every static stage (lex/parse, init,
//! interpolate, set-scope, unify), then run it: a stream of `GraphSpec`s, one per distinct
//! table of values (spec §7).

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use tend_model::{GraphError, GraphSpec, KindSchema};
use tokio::sync::mpsc;

use crate::diag::{Error, SourceMap, Stage};
use crate::funcs::stream::{StreamCtx, StreamEvent};
use crate::funcs::world::WorldView;
use crate::graph::{self, EvalEnv, Streams};
use crate::interp::{self, InterpEnv, Locations};
use crate::scope::Modules;
use crate::syntax::ast::{Stmt, StmtKind};
use crate::syntax::span::{FileId, Span};

/// Everything a program needs from its host.
#[derive(Clone)]
pub struct Options {
    /// `$hostname`.
    pub hostname: String,
    /// The kinds' schemas.
    pub schemas: BTreeMap<String, KindSchema>,
    /// The cluster view (an in-memory world for `check`).
    pub world: Arc<dyn WorldView>,
}

/// Errors of a program together with the sources needed to render them.
#[derive(Debug)]
pub struct Failure {
    /// The files read so far.
    pub map: SourceMap,
    /// The errors (all of one stage).
    pub errors: Vec<Error>,
}

impl Failure {
    /// Renders every error as spec §11.2 describes.
    pub fn render(&self) -> String {
        self.map.render_all(&self.errors)
    }
}

/// A compiled program, ready to run.
pub struct Compiled {
    modules: Modules,
    call_types: crate::unify::CallTypes,
    map: Arc<SourceMap>,
    opts: Options,
}

/// One graph of a running program, and where its resources were written: what a front end
/// needs to place the engine's check of the graph back in the program.
#[derive(Clone, Debug)]
pub struct Graph {
    /// The graph.
    pub spec: GraphSpec,
    /// The program's files.
    pub sources: Arc<SourceMap>,
    /// Where each resource and field was written.
    pub locations: Locations,
    /// Whether the table has `collect` statements (which read the World while the table is
    /// interpreted, so a change of the World must interpret it again).
    pub collects: bool,
}

impl Graph {
    /// The engine's errors about this graph as language errors, in program order.
    pub fn errors(&self, errors: &[GraphError]) -> Vec<Error> {
        let mut out: Vec<Error> = errors.iter().map(|e| self.locations.error(e)).collect();
        out.sort_by_key(|e| (e.span.file, e.span.start));
        out
    }

    /// Renders the engine's errors about this graph as spec §11.2 describes, in program
    /// order.
    pub fn render(&self, errors: &[GraphError]) -> String {
        self.sources.render_all(&self.errors(errors))
    }

    /// Renders one engine error about this graph (headline, source line, caret).
    pub fn render_one(&self, e: &GraphError) -> String {
        self.locations.error(e).render(&self.sources)
    }
}

/// Reads, parses and checks a program.
pub fn compile(path: &Path, opts: Options) -> Result<Compiled, Failure> {
    let path = path.to_path_buf();
    on_big_stack(move || compile_here(&path, opts)).unwrap_or_else(|msg| {
        Err(Failure {
            map: SourceMap::new(),
            errors: vec![Error::new(Stage::LexParse, msg, Span::default())],
        })
    })
}

fn compile_here(path: &Path, opts: Options) -> Result<Compiled, Failure> {
    let mut map = SourceMap::new();
    let modules = match load(path, &mut map) {
        Ok(m) => m,
        Err(errors) => return Err(Failure { map, errors }),
    };
    let fail = |map: SourceMap, errors: Vec<Error>, modules: &Modules| Failure {
        errors: errors
            .into_iter()
            .map(|e| with_importers(e, modules))
            .collect(),
        map,
    };
    let schemas = &opts.schemas;
    let is_const = |rest: &str| graph::constant(schemas, rest).is_some();
    let errors = crate::scope::check(&modules, &is_const);
    if !errors.is_empty() {
        return Err(fail(map, errors, &modules));
    }
    let call_types = match crate::unify::check(&modules, schemas) {
        Ok(t) => t,
        Err(e) => return Err(fail(map, vec![e], &modules)),
    };
    if let Err(e) = graph::check_static(&modules) {
        return Err(fail(map, vec![e], &modules));
    }
    Ok(Compiled {
        modules,
        call_types,
        map: Arc::new(map),
        opts,
    })
}

fn with_importers(mut e: Error, m: &Modules) -> Error {
    let mut file = e.span.file;
    let mut guard = 0;
    while file != m.files[0].file && guard < 64 {
        guard += 1;
        let Some(idx) = m.files.iter().position(|f| f.file == file) else {
            break;
        };
        let Some(at) = m.imported_at.get(&idx) else {
            break;
        };
        e = e.imported_at(*at);
        file = at.file;
    }
    e
}

fn is_clean(p: &str) -> bool {
    !p.starts_with('/')
        && !p.contains("//")
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        && !p.starts_with("./")
}

/// Reads the entry file and every local file it imports (transitively).
fn load(path: &Path, map: &mut SourceMap) -> Result<Modules, Vec<Error>> {
    let (root, main) = if path.is_dir() {
        (path.to_path_buf(), path.join("main.mcl"))
    } else {
        let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
        (root, path.to_path_buf())
    };
    let mut m = Modules {
        files: Vec::new(),
        imports: HashMap::new(),
        imported_at: HashMap::new(),
        root: root.clone(),
        dirs: HashMap::new(),
    };
    let mut by_path: HashMap<PathBuf, usize> = HashMap::new();
    let mut queue: Vec<(PathBuf, Option<Span>)> = vec![(main, None)];
    let mut links: Vec<((FileId, String), PathBuf)> = Vec::new();
    while !queue.is_empty() {
        let (file, at) = queue.remove(0);
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                let span = at.unwrap_or_default();
                let msg = format!("cannot read {}: {e}", file.display());
                let stage = if at.is_some() {
                    Stage::SetScope
                } else {
                    Stage::LexParse
                };
                if at.is_none() {
                    map.add(
                        format!(
                            "/{}",
                            file.file_name().unwrap_or_default().to_string_lossy()
                        ),
                        "",
                    );
                }
                return Err(vec![Error::new(stage, msg, span)]);
            }
        };
        let rel = file.strip_prefix(&root).unwrap_or(&file);
        let id = map.add(format!("/{}", rel.display()), text.clone());
        let in_dir = rel
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        m.dirs.insert(
            id,
            if in_dir.is_empty() {
                "/".to_string()
            } else {
                format!("/{in_dir}/")
            },
        );
        let prog = match crate::syntax::front(id, &text) {
            Ok(p) => p,
            Err(errors) => {
                return Err(match at {
                    // An error inside an imported file is a set-scope error of the import.
                    Some(at) => errors
                        .into_iter()
                        .map(|mut e| {
                            e.stage = Stage::SetScope;
                            e.imported_at(at)
                        })
                        .collect(),
                    None => errors,
                });
            }
        };
        let idx = m.files.len();
        by_path.insert(file.clone(), idx);
        if let Some(at) = at {
            m.imported_at.insert(idx, at);
        }
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut imports = Vec::new();
        collect_imports(&prog.stmts, &mut imports);
        m.files.push(prog);
        for (p, span) in imports {
            if crate::funcs::is_core_module(&p) {
                continue;
            }
            if p.contains("://") {
                return Err(vec![Error::new(
                    Stage::SetScope,
                    format!("remote module `{p}` is not supported yet"),
                    span,
                )]);
            }
            if !is_clean(&p) || !(p.ends_with(".mcl") || p.ends_with('/')) {
                let msg = if crate::funcs::is_unbuilt_module(&p) {
                    format!("core module `{p}` is not supported yet")
                } else if p.ends_with(".mcl") || p.ends_with('/') {
                    format!("import path `{p}` must be relative and clean")
                } else {
                    format!("no core module `{p}`")
                };
                return Err(vec![Error::new(Stage::SetScope, msg, span)]);
            }
            let target = if p.ends_with('/') {
                let d = dir.join(&p);
                let meta = d.join("metadata.yaml");
                let main = std::fs::read_to_string(&meta)
                    .ok()
                    .and_then(|t| serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&t).ok())
                    .and_then(|v| v.get("main").and_then(|x| x.as_str()).map(str::to_string))
                    .unwrap_or_else(|| "main.mcl".into());
                d.join(main)
            } else {
                dir.join(&p)
            };
            if !target.is_file() {
                return Err(vec![Error::new(
                    Stage::SetScope,
                    format!("no module file for `{p}`"),
                    span,
                )]);
            }
            if !by_path.contains_key(&target) && !queue.iter().any(|(q, _)| *q == target) {
                queue.push((target.clone(), Some(span)));
            }
            links.push(((id, p.clone()), target));
        }
    }
    for (k, t) in links {
        if let Some(i) = by_path.get(&t) {
            m.imports.insert(k, *i);
        }
    }
    Ok(m)
}

fn collect_imports(stmts: &[Stmt], out: &mut Vec<(String, Span)>) {
    for st in stmts {
        match &st.kind {
            // Errors about an import point at the whole statement, as mgmt's.
            StmtKind::Import(im) => out.push((im.path.clone(), st.span)),
            StmtKind::If(i) => {
                collect_imports(&i.then.stmts, out);
                if let Some(b) = &i.els {
                    collect_imports(&b.stmts, out);
                }
            }
            StmtKind::Class(c) => collect_imports(&c.body.stmts, out),
            _ => {}
        }
    }
}

impl Compiled {
    /// The source files (to render errors).
    pub fn sources(&self) -> &SourceMap {
        &self.map
    }

    /// Evaluates and interprets once against the current stream values.
    pub fn graph_once(&self, streams: &mut Streams, ctx: &StreamCtx) -> Result<Graph, Error> {
        let env = EvalEnv {
            hostname: self.opts.hostname.clone(),
            schemas: &self.opts.schemas,
            ctx,
            call_types: &self.call_types,
        };
        let out = graph::evaluate(&self.modules, &env, streams);
        streams.prune();
        let out = out?;
        let collects = out.resources.iter().any(|r| r.collect);
        let (spec, locations) = interp::build(
            &out,
            &InterpEnv {
                schemas: &self.opts.schemas,
                world: self.opts.world.as_ref(),
            },
        )?;
        Ok(Graph {
            spec,
            sources: self.map.clone(),
            locations,
            collects,
        })
    }

    /// Runs the program: sends a new graph whenever the values it reads change (never the same
    /// graph twice in a row), or a rendered error (after which the run ends). Stops when the
    /// receiver is dropped. Must be called inside a tokio runtime.
    pub fn run(self) -> mpsc::Receiver<Result<Graph, String>> {
        let (out_tx, out_rx) = mpsc::channel(4);
        let (tx, events) = mpsc::unbounded_channel();
        let rt = tokio::runtime::Handle::current();
        // When the consumer goes away, wake the driver with an empty key so it stops.
        let stop = tx.clone();
        let closed = out_tx.clone();
        rt.spawn(async move {
            closed.closed().await;
            let _ = stop.send(StreamEvent {
                key: (String::new(), Vec::new()),
                value: Ok(tend_model::Value::Bool(false)),
            });
        });
        // Evaluation is synchronous and recursive: it runs on its own thread with a large
        // stack, entering the runtime so stream sources can spawn their tasks.
        let spawned = std::thread::Builder::new()
            .name("mcl-eval".into())
            .stack_size(STACK)
            .spawn(move || {
                let _guard = rt.enter();
                self.drive(out_tx, tx, events);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the mcl evaluation thread");
        }
        out_rx
    }

    fn drive(
        &self,
        out_tx: mpsc::Sender<Result<Graph, String>>,
        tx: mpsc::UnboundedSender<StreamEvent>,
        mut events: mpsc::UnboundedReceiver<StreamEvent>,
    ) {
        // `collect` statements read the World's exports while the table is interpreted: a change
        // of the World re-runs the interpretation (an unchanged graph is not sent again).
        {
            let tx = tx.clone();
            let mut rx = self.opts.world.changes();
            tokio::runtime::Handle::current().spawn(async move {
                while rx.changed().await.is_ok() {
                    let ev = StreamEvent {
                        key: (COLLECT_KEY.to_string(), Vec::new()),
                        value: Ok(tend_model::Value::Bool(true)),
                    };
                    if tx.send(ev).is_err() {
                        return;
                    }
                }
            });
        }
        let ctx = StreamCtx {
            tx,
            world: self.opts.world.clone(),
        };
        let mut streams = Streams::default();
        let mut last: Option<GraphSpec> = None;
        let mut waiting_for: Option<String> = None;
        // Until the first table says otherwise, a change of the World is evaluated.
        let mut collects = true;
        loop {
            let started = std::time::Instant::now();
            let evaluated = self.graph_once(&mut streams, &ctx);
            // Under load (a large table, a busy machine) an evaluation takes longer: the World's
            // changes are then gathered for as long, so a host spends at most about half its
            // time evaluating and a fleet's exports arrive in fewer, larger tables.
            let batch = COLLECT_BATCH.max(started.elapsed().min(MAX_COLLECT_BATCH));
            match evaluated {
                Ok(g) => {
                    waiting_for = None;
                    collects = g.collects;
                    if last.as_ref() != Some(&g.spec) {
                        last = Some(g.spec.clone());
                        if out_tx.blocking_send(Ok(g)).is_err() {
                            return;
                        }
                    }
                }
                // A source with no value yet: no graph until it has one (the last graph, if
                // any, keeps running).
                Err(e) if e.message.contains(crate::funcs::PENDING) => {
                    let what = e.message.replace(crate::funcs::PENDING, "");
                    if waiting_for.as_deref() != Some(what.as_str()) {
                        tracing::info!("waiting for a value: {what}");
                        waiting_for = Some(what);
                    }
                }
                Err(e) => {
                    let _ = out_tx.blocking_send(Err(self.map.render_all(&[e])));
                    return;
                }
            }
            // Wait for a value that differs, then take every event already queued so one
            // burst yields one table.
            loop {
                let Some(ev) = events.blocking_recv() else {
                    return;
                };
                if ev.key.0.is_empty() {
                    return;
                }
                // Without `collect` statements, what the program reads of the World comes
                // through its stream sources (`world.getval`, `collect.res`...): their own
                // events say when, and the World's change events are not needed.
                let collect = ev.key.0 == COLLECT_KEY;
                if collect && !collects {
                    continue;
                }
                let mut changed = collect || streams.update(&ev.key, ev.value);
                // The World's changes come one record at a time (a fleet's exports appear
                // host by host): gather what arrives within COLLECT_BATCH into one table
                // rather than evaluating the program once per record.
                if collect {
                    std::thread::sleep(batch);
                }
                while let Ok(ev) = events.try_recv() {
                    if ev.key.0.is_empty() {
                        return;
                    }
                    changed |= (ev.key.0 == COLLECT_KEY && collects)
                        || (ev.key.0 != COLLECT_KEY && streams.update(&ev.key, ev.value));
                }
                if changed {
                    break;
                }
            }
        }
    }
}

/// How long a change of the World waits for the next ones before the program is evaluated
/// again, at least: as long as the last evaluation took, up to [`MAX_COLLECT_BATCH`].
const COLLECT_BATCH: std::time::Duration = std::time::Duration::from_millis(25);

/// The longest a change of the World waits for the next ones.
const MAX_COLLECT_BATCH: std::time::Duration = std::time::Duration::from_secs(1);

/// The event key that says "the World changed" (for `collect` statements).
const COLLECT_KEY: &str = "\u{0}collect";

/// Stack size of the threads that compile and evaluate programs (reserved, not committed).
const STACK: usize = 256 << 20;

/// Runs `f` on a thread with a large stack (the passes recurse over the program).
fn on_big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let h = std::thread::Builder::new()
        .name("mcl-compile".into())
        .stack_size(STACK)
        .spawn(f)
        .map_err(|e| format!("cannot start a compiler thread: {e}"))?;
    match h.join() {
        Ok(v) => Ok(v),
        Err(p) => std::panic::resume_unwind(p),
    }
}
