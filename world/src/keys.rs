//! The key schema. Under a namespace (default `/tend`), one prefix per area:
//!
//! ```text
//! <ns>/blobs/meta/<hash>               content-addressed file metadata
//! <ns>/blobs/data/<hash>/<chunk>       its chunks (512 KiB, well below etcd's 1.5 MiB limit)
//! <ns>/deploys/id/<id, 20 digits>      deploy records
//! <ns>/deploys/latest                  the latest deploy id (the compare-and-swap pointer)
//! <ns>/hosts/<host>                    host registrations (bound to the host's session)
//! <ns>/maps/<host>/<key>               per-host string maps, host first
//! <ns>/sched/<namespace>/members/<host> a scheduling pool's members (leased, see `sched`)
//! <ns>/sched/<namespace>/leader        the elected member (bound to its host's session)
//! <ns>/sched/<namespace>/result        the elected member's choice
//! <ns>/strings/<key>                   global strings
//! <ns>/strmap/<key>/<host>             per-host string maps as tend wrote them before `maps`
//! <ns>/to/<to>/<from>/<kind>/<name>    exports: recipient (`*` = every host), then sender
//! ```
//!
//! The layout is made for etcd's RBAC, whose permissions are key prefixes (`tend cluster
//! auth`): a host reads `to/<itself>/` and `to/*/` and nothing else of the exports (read
//! isolation by recipient), and writes `to/*/<itself>/`, `to/<r>/<itself>/` for each host
//! `r`, `maps/<itself>/` and `hosts/<itself>` (write isolation by sender). `to` sorts last, so
//! what a host may read is three ranges: everything before `to/`, `to/*/` and `to/<host>/`.
//!
//! `blobs` sorts first, so the watch cache watches `[<ns>/blobs0, <ns>0)`: everything but
//! the (large) file chunks, with one watch (three when etcd refuses the whole range to this
//! host's role). Segments are percent-escaped (`%` and `/`), so a name like `/etc/motd` stays
//! one segment.

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

    /// The exports area.
    pub fn exports_area(&self) -> String {
        format!("{}/to/", self.ns)
    }

    /// An export's key.
    pub fn export(&self, to: &str, kind: &str, from: &str, name: &str) -> String {
        format!(
            "{}/to/{}/{}/{}/{}",
            self.ns,
            escape(to),
            escape(from),
            escape(kind),
            escape(name)
        )
    }

    /// The prefix of the exports addressed to `to` (a host or `*`).
    pub fn exports_to(&self, to: &str) -> String {
        format!("{}/to/{}/", self.ns, escape(to))
    }

    /// The prefix of the exports `from` addresses to `to`.
    pub fn exports_from(&self, to: &str, from: &str) -> String {
        format!("{}/to/{}/{}/", self.ns, escape(to), escape(from))
    }

    /// Parses an export key into `(to, kind, from, name)`.
    pub fn parse_export(&self, key: &str) -> Option<(String, String, String, String)> {
        let rest = key.strip_prefix(&self.exports_area())?;
        let mut it = rest.splitn(4, '/');
        let to = unescape(it.next()?);
        let from = unescape(it.next()?);
        let kind = unescape(it.next()?);
        let name = unescape(it.next()?);
        Some((to, kind, from, name))
    }

    /// The kind segment of an export key, still escaped (compare it with `escape(kind)`):
    /// for filters run on every change, without decoding the rest.
    pub fn export_kind_escaped<'a>(&self, key: &'a str) -> Option<&'a str> {
        let rest = key.strip_prefix(&self.exports_area())?;
        rest.split('/').nth(2)
    }

    /// The ranges a host may read when etcd's RBAC isolates exports (see the module doc):
    /// everything cached before the exports, and the exports to it and to `*`.
    pub fn readable_ranges(&self, host: &str) -> Vec<KeyRange> {
        vec![
            KeyRange::between(
                prefix_end(&format!("{}/blobs/", self.ns)),
                self.exports_area(),
            ),
            KeyRange::prefix(self.exports_to("*")),
            KeyRange::prefix(self.exports_to(host)),
        ]
    }

    /// A global string's key.
    pub fn string(&self, key: &str) -> String {
        format!("{}/strings/{}", self.ns, escape(key))
    }

    /// The string-map area (`maps/<host>/<key>`).
    pub fn maps_area(&self) -> String {
        format!("{}/maps/", self.ns)
    }

    /// One host's entry of a string map.
    pub fn strmap_entry(&self, key: &str, host: &str) -> String {
        format!("{}{}/{}", self.maps_area(), escape(host), escape(key))
    }

    /// Parses a string-map entry's key into `(host, key)`.
    pub fn parse_strmap_entry(&self, full: &str) -> Option<(String, String)> {
        let rest = full.strip_prefix(&self.maps_area())?;
        let (host, key) = rest.split_once('/')?;
        Some((unescape(host), unescape(key)))
    }

    /// The key segment of a string-map entry's key, still escaped.
    pub fn strmap_entry_key_escaped<'a>(&self, full: &'a str) -> Option<&'a str> {
        let rest = full.strip_prefix(&self.maps_area())?;
        rest.split_once('/').map(|(_, k)| k)
    }

    /// The prefix of a string map as tend wrote it before `maps/` (`strmap/<key>/<host>`):
    /// read until every host has moved its entries.
    pub fn legacy_strmap(&self, key: &str) -> String {
        format!("{}/strmap/{}/", self.ns, escape(key))
    }

    /// The legacy string-map area.
    pub fn legacy_strmap_area(&self) -> String {
        format!("{}/strmap/", self.ns)
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
        assert_eq!(key, "/tend/to/*/h1/file/%2Fetc%2F100%25");
        assert_eq!(
            k.parse_export(&key),
            Some(("*".into(), "file".into(), "h1".into(), "/etc/100%".into()))
        );
        assert!(key.starts_with(&k.exports_from("*", "h1")));
        assert!(k.cached_range().contains(&key));
        assert!(!k.cached_range().contains(&k.blob_chunk("ab", 0)));
        assert!(!k.cached_range().contains(&k.blob_meta("ab")));
        assert!(k.cached_range().contains(&k.host("h1")));
        assert!(k.cached_range().contains(&k.deploy(3)));
        assert!(k.cached_range().contains(&k.strmap_entry("a", "h")));
        assert!(k.cached_range().contains(&k.sched_member("a/b", "h")));
        assert!(k.sched_result("a/b").starts_with(&k.sched("a/b")));
        assert!(!k.sched_result("a/b").starts_with(&k.sched("a")));
        assert_eq!(
            k.parse_strmap_entry(&k.strmap_entry("a/b", "h")),
            Some(("h".into(), "a/b".into()))
        );
        assert_eq!(
            k.strmap_entry_key_escaped(&k.strmap_entry("a/b", "h")),
            Some(escape("a/b").as_str())
        );
        assert_eq!(
            k.export_kind_escaped(&k.export("*", "ssh:key/x", "h1", "n")),
            Some(escape("ssh:key/x").as_str())
        );
    }

    #[test]
    fn a_host_reads_three_ranges_that_leave_out_others_exports() {
        let k = Keys::new("/tend");
        let r = k.readable_ranges("h2");
        let readable = |key: &str| r.iter().any(|x| x.contains(key));
        assert!(readable(&k.export("h2", "file", "h1", "a")));
        assert!(readable(&k.export("*", "file", "h1", "a")));
        assert!(!readable(&k.export("h3", "file", "h1", "a")));
        assert!(!readable(&k.export("h22", "file", "h1", "a")));
        for key in [
            k.host("h1"),
            k.deploy(1),
            k.deploy_latest(),
            k.string("s"),
            k.strmap_entry("m", "h1"),
            k.sched_result("n"),
            format!("{}x/y", k.legacy_strmap_area()),
        ] {
            assert!(readable(&key), "{key}");
        }
        assert!(!readable(&k.blob_chunk("ab", 0)));
    }
}
