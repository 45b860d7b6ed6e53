//! `tend check PROGRAM [--print-graph] [--hostname H] [--world FILE]` (spec/mcl.md §12):
//! compiles the program, waits (at most 10 s) for its first graph, and prints it as sorted
//! `Vertex:`/`Edge:` lines. Errors go to stderr, rendered like a compiler, with exit status 1.
//! A YAML graph (`.yaml`/`.yml`) is checked as `tend run` checks it, changing nothing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tend_lang::funcs::world::{MemWorld, WorldView};
use tend_lang::interp::print_graph;
use tend_lang::program::{compile, Options};

use crate::cli::print_error_lines;

/// Arguments of `tend check`.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// The program: a `.mcl` file, a directory holding `main.mcl`, or a YAML graph.
    program: PathBuf,
    /// Print the first resource graph (sorted `Vertex:` and `Edge:` lines).
    #[arg(long)]
    print_graph: bool,
    /// The value of `$hostname` (default: the world seed's host name, else "").
    #[arg(long)]
    hostname: Option<String>,
    /// A JSON seed for the in-memory world (exports, values), as in golden tests.
    #[arg(long)]
    world: Option<PathBuf>,
}

/// Runs `tend check`.
pub fn main(args: CheckArgs) -> ExitCode {
    let ext = args.program.extension().and_then(|e| e.to_str());
    if matches!(ext, Some("yaml" | "yml")) {
        return check_yaml(&args);
    }
    let world = match &args.world {
        Some(p) => {
            let text = match std::fs::read_to_string(p) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: cannot read world seed {}: {e}", p.display());
                    return ExitCode::from(1);
                }
            };
            match MemWorld::from_json(&text, args.hostname.as_deref()) {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("error: {}: {e}", p.display());
                    return ExitCode::from(1);
                }
            }
        }
        None => MemWorld::new(args.hostname.as_deref().unwrap_or("")),
    };
    let registry = tend_resources::registry();
    let opts = Options {
        hostname: world.hostname(),
        schemas: registry.schemas().clone(),
        world,
    };
    let rt = match crate::cli::runtime("check", Some(2)) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let prog = match compile(&args.program, opts) {
        Ok(p) => p,
        Err(f) => {
            eprint!("{}", f.render());
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async move {
        let mut rx = prog.run();
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await
    });
    // Stream sources may hold blocking watchers; do not wait for them.
    rt.shutdown_background();
    match result {
        // The graph is checked as `tend run` checks it before touching the host.
        Ok(Some(Ok(g))) => match tend_engine::check_graph(&registry, &g.spec) {
            Ok(()) => {
                if args.print_graph {
                    let text = print_graph(&g.spec);
                    print!("{}", tend_model::secrets::redact(&text));
                }
                ExitCode::SUCCESS
            }
            Err(errs) => {
                eprint!("{}", tend_model::secrets::redact(&g.render(&errs)));
                ExitCode::from(1)
            }
        },
        Ok(Some(Err(text))) => {
            eprint!("{}", tend_model::secrets::redact(&text));
            ExitCode::from(1)
        }
        Ok(None) => {
            eprintln!("error: errStream: the program ended without producing a graph");
            ExitCode::from(1)
        }
        Err(_) => {
            eprintln!("error: errStream: no first graph within 10 s");
            ExitCode::from(1)
        }
    }
}

/// Checks a YAML graph: reads it, and checks the graph as the engine would before running it
/// (kinds, fields, constructors, edges, cycles). Prints what is wrong, located in the file.
fn check_yaml(args: &CheckArgs) -> ExitCode {
    if args.world.is_some() || args.hostname.is_some() {
        eprintln!(
            "error: --world and --hostname apply to mcl programs; {} is a YAML graph",
            args.program.display()
        );
        return ExitCode::from(1);
    }
    let registry = tend_resources::registry();
    let frame = match tend_front::yaml::load(&args.program, &registry) {
        Ok(f) => f,
        Err(errs) => {
            print_error_lines(&errs);
            return ExitCode::from(1);
        }
    };
    if let Err(errs) = tend_engine::check_graph(&registry, &frame.graph) {
        print_error_lines(&frame.describe(&errs));
        return ExitCode::from(1);
    }
    if args.print_graph {
        print!("{}", print_graph(&frame.graph));
    }
    ExitCode::SUCCESS
}
