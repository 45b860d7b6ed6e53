//! [`LoadError`]: one mistake in a graph file, located.

use std::fmt;
use std::path::PathBuf;

use tend_model::ResId;

/// One mistake in a graph file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The resource involved, if any.
    pub res: Option<ResId>,
    /// The field involved, if any (`meta.retry` for a meta parameter).
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        f.write_str(": ")?;
        if let Some(r) = &self.res {
            write!(f, "{r}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}
