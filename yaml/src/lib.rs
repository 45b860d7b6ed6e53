//! The YAML front end: reads a graph file into a [`GraphSpec`] (each value read by its
//! field's type in the kinds' schemas) and locates mistakes in it, each naming the file, the
//! line, the resource and the field.
//!
//! Reading is all it does: whether a value fits its field (type, range, allowed values),
//! meta combinations and the kinds' own validation are the engine's one check of a graph,
//! whose [`tend_model::GraphError`]s [`Loaded::locate`] places in the file. When the file has
//! mistakes of its own, [`Loaded::finish`] has the engine check what could be read, so that
//! every mistake is reported at once, in the file's order.
//!
//! The format (documented in README.md):
//!
//! ```yaml
//! resources:
//!   file:
//!     - name: /tmp/demo/motd
//!       content: "hello\n"
//!       meta: { retry: 3, delay: 500 }
//!   exec:
//!     - name: reload
//!       cmd: /bin/true
//! edges:
//!   - { from: "file[/tmp/demo/motd]", to: "exec[reload]", notify: true }
//! ```
//!
//! String values (names, params, edge endpoints) expand `${VAR}` from the environment
//! (`${VAR:-default}` falls back to a default; `$${` is a literal `${`).
//!
//! The text goes through `saphyr-parser`'s event parser into a small tree of nodes, each with
//! the line it starts on (so errors name the lines the parser saw, in block and flow style
//! alike). Scalars resolve as `serde_yaml_ng` resolves them into its `Value` (YAML 1.2 core
//! schema: `0644` plain is a string, `644` an int, `"644"` a string; `!!int`-style core tags
//! apply, any other `!tag` is a tagged value, which no field accepts); aliases expand to their
//! anchor's node; duplicate keys, several documents and over-deep nesting are invalid. Invalid
//! YAML is reported with `serde_yaml_ng`'s message (libyaml's wording), the message this front
//! end has always given.

mod error;
mod graph;
mod quick;
mod scalar;
mod tree;

pub use error::LoadError;
pub use graph::{expand_env, load, parse, parse_res_id, Loaded};

#[cfg(test)]
mod tests;
