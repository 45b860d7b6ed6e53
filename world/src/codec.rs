//! The value codec: postcard behind a format-version byte. Decoding a value written with
//! another version is a clear error naming the key, never garbage.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use tend_model::world::WorldError;

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// Encodes a value: the version byte, then postcard.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    out.extend(postcard::to_stdvec(value).expect("world records always encode"));
    out
}

/// Decodes a value stored under `key`.
pub fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, WorldError> {
    match bytes.first() {
        None => Err(WorldError::Decode {
            key: key.to_string(),
            message: "empty value".into(),
        }),
        Some(&FORMAT_VERSION) => {
            postcard::from_bytes(&bytes[1..]).map_err(|e| WorldError::Decode {
                key: key.to_string(),
                message: e.to_string(),
            })
        }
        Some(&version) => Err(WorldError::UnknownVersion {
            key: key.to_string(),
            version,
            expected: FORMAT_VERSION,
        }),
    }
}

/// An export's stored value (kind, name, hosts are in the key).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExportRecord {
    pub data: Vec<u8>,
}

/// A deploy's stored value.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeployRecord {
    pub id: u64,
    pub bundle: String,
    pub parent: Option<String>,
    pub hash: String,
    pub message: String,
    pub author: String,
    pub time_ms: u64,
}

/// A blob's metadata (its chunks are stored separately).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobMeta {
    pub size: u64,
    pub chunks: u32,
    pub created_ms: u64,
}

/// One entry of a stored tree.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) enum ManifestEntry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        size: u64,
        blob: String,
    },
}

/// A stored tree (itself stored as a blob; its hash is the tree's hash).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub entries: Vec<ManifestEntry>,
}

/// A host's registration.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostRecord {
    pub version: String,
    pub started_ms: u64,
    pub deploy: Option<u64>,
    pub converged: bool,
    /// Why the newest deploy was rejected on this host, if it was.
    pub error: Option<String>,
    /// When the record was last written, milliseconds since the Unix epoch.
    pub updated_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_version_is_a_clear_error() {
        let mut bytes = encode(&"x".to_string());
        assert_eq!(decode::<String>("/tend/strings/a", &bytes).unwrap(), "x");
        bytes[0] = 9;
        let err = decode::<String>("/tend/strings/a", &bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/tend/strings/a: unknown value format version 9 (this tend reads version 1); upgrade tend"
        );
    }
}
