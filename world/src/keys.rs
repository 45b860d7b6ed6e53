//! The key schema. Under a namespace (default `/tend`), one prefix per area:
//!
//! ```text
//! <ns>/blobs/meta/<hash>               content-addressed file metadata
//! <ns>/blobs/data/<hash>/<chunk>       its chunks (512 KiB, well below etcd's 1.5 MiB limit)
//! <ns>/deploys/id/<id, 20 digits>      deploy records
//! <ns>/deploys/latest                  the latest deploy id (the compare-and-swap pointer)
//! <ns>/exports/<to>/<kind>/<from>/<name>   exports, recipient first (`*` = every host)
//! <ns>/hosts/<host>                    host registrations (bound to the host's session)
//! <ns>/strings/<key>                   global strings
//! <ns>/strmap/<key>/<host>             per-host string maps
//! <ns>/sched/<namespace>/members/<host> a scheduling pool's members (leased, see `sched`)
//! <ns>/sched/<namespace>/leader        the elected member (bound to its host's session)
//! <ns>/sched/<namespace>/result        the elected member's choice
//! ```
//!
//! `blobs` sorts first, so the watch cache watches `[<ns>/blobs0, <ns>0)`: everything but
//! the (large) file chunks, with one watch. Segments are percent-escaped (`%` and `/`), so a
//! name like `/etc/motd` stays one segment.

use crate::store::{prefix_end, KeyRange};
use tend_model::world::WorldError;

/// The default namespace.
pub const DEFAULT_NAMESPACE: &str = "/tend";

/// Escapes one key segment.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape`].
pub fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks a host name: non-empty, not `*`, no `/`.
pub fn check_host(host: &str) -> Result<(), WorldError> {
    let reason = if host.is_empty() {
        "empty"
    } else if host == "*" {
        "`*` means every host"
    } else if host.contains('/') || host.chars().any(|c| c.is_control()) {
        "contains `/` or a control character"
    } else {
        return Ok(());
    };
    Err(WorldError::Invalid {
        what: "host name",
        value: host.to_string(),
        reason,
    })
}

/// The keys of one namespace.
#[derive(Clone, Debug)]
pub struct Keys {
    ns: String,
}

impl Keys {
    /// Keys under namespace `ns` (a leading `/` is added, a trailing one removed).
    pub fn new(ns: &str) -> Keys {
        let trimmed = ns.trim_end_matches('/');
        let ns = if trimmed.starts_with('/') {
            trimmed.to_string()
        } else {
            format!("/{trimmed}")
        };
        Keys { ns }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// What the watch cache watches: everything but the blobs.
    pub fn cached_range(&self) -> KeyRange {
        KeyRange::between(
            prefix_end(&format!("{}/blobs/", self.ns)),
            prefix_end(&format!("{}/", self.ns)),
        )
    }

    /// The prefix of an area (`exports`, `strings`, ...), with a trailing `/`.
    pub fn area(&self, area: &str) -> String {
        format!("{}/{area}/", self.ns)
    }

    /// An export's key.
    pub fn export(&self, to: &str, kind: &str, from: &str, name: &str) -> String {
        format!(
            "{}/exports/{}/{}/{}/{}",
            self.ns,
            escape(to),
            escape(kind),
            escape(from),
            escape(name)
        )
    }

    /// The prefix of the exports addressed to `to` (a host or `*`), optionally of one kind.
    pub fn exports_to(&self, to: &str, kind: Option<&str>) -> String {
        match kind {
            Some(k) => format!("{}/exports/{}/{}/", self.ns, escape(to), escape(k)),
            None => format!("{}/exports/{}/", self.ns, escape(to)),
        }
    }

    /// Parses an export key into `(to, kind, from, name)`.
    pub fn parse_export(&self, key: &str) -> Option<(String, String, String, String)> {
        let rest = key.strip_prefix(&self.area("exports"))?;
        let mut it = rest.splitn(4, '/');
        let to = unescape(it.next()?);
        let kind = unescape(it.next()?);
        let from = unescape(it.next()?);
        let name = unescape(it.next()?);
        Some((to, kind, from, name))
    }

    /// A global string's key.
    pub fn string(&self, key: &str) -> String {
        format!("{}/strings/{}", self.ns, escape(key))
    }

    /// A string map's prefix.
    pub fn strmap(&self, key: &str) -> String {
        format!("{}/strmap/{}/", self.ns, escape(key))
    }

    /// One host's entry of a string map.
    pub fn strmap_entry(&self, key: &str, host: &str) -> String {
        format!("{}{}", self.strmap(key), escape(host))
    }

    /// The prefix of everything of one scheduling namespace.
    pub fn sched(&self, namespace: &str) -> String {
        format!("{}/sched/{}/", self.ns, escape(namespace))
    }

    /// The prefix of a scheduling namespace's members.
    pub fn sched_members(&self, namespace: &str) -> String {
        format!("{}members/", self.sched(namespace))
    }

    /// One member of a scheduling namespace.
    pub fn sched_member(&self, namespace: &str, host: &str) -> String {
        format!("{}{}", self.sched_members(namespace), escape(host))
    }

    /// A scheduling namespace's leader.
    pub fn sched_leader(&self, namespace: &str) -> String {
        format!("{}leader", self.sched(namespace))
    }

    /// A scheduling namespace's choice.
    pub fn sched_result(&self, namespace: &str) -> String {
        format!("{}result", self.sched(namespace))
    }

    /// The `latest` deploy pointer.
    pub fn deploy_latest(&self) -> String {
        format!("{}/deploys/latest", self.ns)
    }

    /// The prefix of deploy records.
    pub fn deploy_ids(&self) -> String {
        format!("{}/deploys/id/", self.ns)
    }

    /// A deploy record's key.
    pub fn deploy(&self, id: u64) -> String {
        format!("{}/deploys/id/{id:020}", self.ns)
    }

    /// A host's registration key.
    pub fn host(&self, host: &str) -> String {
        format!("{}/hosts/{}", self.ns, escape(host))
    }

    /// A blob's metadata key.
    pub fn blob_meta(&self, hash: &str) -> String {
        format!("{}/blobs/meta/{hash}", self.ns)
    }

    /// The prefix of a blob's chunks.
    pub fn blob_data(&self, hash: &str) -> String {
        format!("{}/blobs/data/{hash}/", self.ns)
    }

    /// One chunk's key.
    pub fn blob_chunk(&self, hash: &str, index: u32) -> String {
        format!("{}/blobs/data/{hash}/{index:06}", self.ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_keys_round_trip_and_escape() {
        let k = Keys::new("tend/");
        let key = k.export("*", "file", "h1", "/etc/100%");
        assert_eq!(key, "/tend/exports/*/file/h1/%2Fetc%2F100%25");
        assert_eq!(
            k.parse_export(&key),
            Some(("*".into(), "file".into(), "h1".into(), "/etc/100%".into()))
        );
        assert!(k.cached_range().contains(&key));
        assert!(!k.cached_range().contains(&k.blob_chunk("ab", 0)));
        assert!(!k.cached_range().contains(&k.blob_meta("ab")));
        assert!(k.cached_range().contains(&k.host("h1")));
        assert!(k.cached_range().contains(&k.deploy(3)));
        assert!(k.cached_range().contains(&k.strmap_entry("a", "h")));
        assert!(k.cached_range().contains(&k.sched_member("a/b", "h")));
        assert!(k.sched_result("a/b").starts_with(&k.sched("a/b")));
        assert!(!k.sched_result("a/b").starts_with(&k.sched("a")));
    }
}
