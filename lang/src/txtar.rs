//! txtar archives, the format of the golden tests (spec §12): a comment, then sections each
//! opened by a `-- name --` line. The one reader of them (the golden runner, the parser's
//! fuzzer and the benchmarks use it).

/// A txtar archive: its leading comment and its sections, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Archive {
    /// The text before the first section.
    pub comment: String,
    /// (name, body) of each section; a body keeps its final newline.
    pub sections: Vec<(String, String)>,
}

impl Archive {
    /// Reads an archive.
    pub fn parse(text: &str) -> Archive {
        let mut a = Archive::default();
        for line in text.split_inclusive('\n') {
            let bare = line.trim_end_matches('\n');
            if let Some(name) = bare.strip_prefix("-- ").and_then(|r| r.strip_suffix(" --")) {
                a.sections.push((name.to_string(), String::new()));
            } else if let Some((_, body)) = a.sections.last_mut() {
                body.push_str(line);
            } else {
                a.comment.push_str(line);
            }
        }
        a
    }

    /// The body of the first section named `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_str())
    }

    /// The archive's text with section `name`'s body replaced by `body` (appended as a new
    /// section when there is none).
    pub fn with(&self, name: &str, body: &str) -> String {
        let mut out = self.comment.clone();
        let mut found = false;
        for (n, b) in &self.sections {
            out.push_str(&format!("-- {n} --\n"));
            if n == name && !found {
                found = true;
                out.push_str(body);
            } else {
                out.push_str(b);
            }
        }
        if !found {
            out.push_str(&format!("-- {name} --\n{body}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_round_trip() {
        let text = "a case\n-- main.mcl --\ntest \"a\" {}\n-- OUTPUT --\nVertex: test[a]\n";
        let a = Archive::parse(text);
        assert_eq!(a.comment, "a case\n");
        assert_eq!(a.get("main.mcl"), Some("test \"a\" {}\n"));
        assert_eq!(a.with("OUTPUT", "Vertex: test[a]\n"), text);
        assert_eq!(
            a.with("OUTPUT", "x\n"),
            "a case\n-- main.mcl --\ntest \"a\" {}\n-- OUTPUT --\nx\n"
        );
        let b = Archive::parse("-- main.mcl --\n");
        assert_eq!(b.with("OUTPUT", "y\n"), "-- main.mcl --\n-- OUTPUT --\ny\n");
    }
}
