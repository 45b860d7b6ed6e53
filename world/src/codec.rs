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
    /// The controller's signature. After the fields older tends read, so that an older
    /// tend, which stops reading before it, still decodes the record (and runs it unverified,
    /// as it always did).
    pub signature: Option<SignatureRecord>,
    /// The hosts the deploy is for (`None`: all). Last, for the same reason.
    pub target: Option<TargetRecord>,
}

/// A deploy's target: host name patterns and a label selector.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct TargetRecord {
    pub hosts: Vec<String>,
    pub selector: Vec<(String, String)>,
}

/// A deploy as tend wrote it before deploys had targets.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct DeployRecordV1 {
    id: u64,
    bundle: String,
    parent: Option<String>,
    hash: String,
    message: String,
    author: String,
    time_ms: u64,
    signature: Option<SignatureRecord>,
}

impl From<DeployRecordV1> for DeployRecord {
    fn from(r: DeployRecordV1) -> Self {
        DeployRecord {
            id: r.id,
            bundle: r.bundle,
            parent: r.parent,
            hash: r.hash,
            message: r.message,
            author: r.author,
            time_ms: r.time_ms,
            signature: r.signature,
            target: None,
        }
    }
}

/// A deploy's signature: the signer's public key and the signature, opaque to the World.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignatureRecord {
    pub key: Vec<u8>,
    pub signature: Vec<u8>,
}

/// A deploy as tend wrote it before deploys were signed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct DeployRecordV0 {
    id: u64,
    bundle: String,
    parent: Option<String>,
    hash: String,
    message: String,
    author: String,
    time_ms: u64,
}

impl From<DeployRecordV0> for DeployRecord {
    fn from(r: DeployRecordV0) -> Self {
        DeployRecord {
            id: r.id,
            bundle: r.bundle,
            parent: r.parent,
            hash: r.hash,
            message: r.message,
            author: r.author,
            time_ms: r.time_ms,
            signature: None,
            target: None,
        }
    }
}

/// Decodes a deploy record stored under `key`, also one written before deploys were signed
/// (it ends where the signature would start).
pub(crate) fn decode_deploy_record(key: &str, bytes: &[u8]) -> Result<DeployRecord, WorldError> {
    match decode::<DeployRecord>(key, bytes) {
        Err(e @ WorldError::Decode { .. }) => decode::<DeployRecordV1>(key, bytes)
            .map(DeployRecord::from)
            .or_else(|_| decode::<DeployRecordV0>(key, bytes).map(DeployRecord::from))
            .map_err(|_| e),
        other => other,
    }
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
    /// This life of the host: a random v4 UUID made when its `World` joined.
    pub instance: String,
    /// Resources whose last check failed. This and the fields below come last, so that an
    /// older tend, which stops reading before them, still decodes the record.
    pub failed: u32,
    /// Resources blocked by a failed dependency.
    pub blocked: u32,
    /// The first failed resource and its error.
    pub first_failure: Option<String>,
    /// When the host last became converged on its deploy (0: not converged).
    pub converged_ms: u64,
    /// The host's labels. Last, so that an older tend still decodes the record.
    pub labels: Vec<(String, String)>,
}

/// A host's registration as tend wrote it before labels existed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct HostRecordV2 {
    version: String,
    started_ms: u64,
    deploy: Option<u64>,
    converged: bool,
    error: Option<String>,
    updated_ms: u64,
    instance: String,
    failed: u32,
    blocked: u32,
    first_failure: Option<String>,
    converged_ms: u64,
}

impl From<HostRecordV2> for HostRecord {
    fn from(r: HostRecordV2) -> Self {
        HostRecord {
            version: r.version,
            started_ms: r.started_ms,
            deploy: r.deploy,
            converged: r.converged,
            error: r.error,
            updated_ms: r.updated_ms,
            instance: r.instance,
            failed: r.failed,
            blocked: r.blocked,
            first_failure: r.first_failure,
            converged_ms: r.converged_ms,
            labels: Vec::new(),
        }
    }
}

/// A host's registration as tend wrote it before the resource counts existed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct HostRecordV1 {
    version: String,
    started_ms: u64,
    deploy: Option<u64>,
    converged: bool,
    error: Option<String>,
    updated_ms: u64,
    instance: String,
}

/// A host's registration as tend wrote it before [`HostRecord::instance`] existed: the same
/// fields, in the same order, without the instance.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct HostRecordV0 {
    version: String,
    started_ms: u64,
    deploy: Option<u64>,
    converged: bool,
    error: Option<String>,
    updated_ms: u64,
}

/// Decodes a host's registration stored under `key`, also one written by an older tend
/// (postcard is not self-describing: such a record ends where the newer fields would start, so
/// it is read with the older layouts in turn; the missing fields are empty).
pub(crate) fn decode_host_record(key: &str, bytes: &[u8]) -> Result<HostRecord, WorldError> {
    let e = match decode::<HostRecord>(key, bytes) {
        Err(e @ WorldError::Decode { .. }) => e,
        other => return other,
    };
    decode::<HostRecordV2>(key, bytes)
        .map(HostRecord::from)
        .or_else(|_| {
            decode::<HostRecordV1>(key, bytes)
                .or_else(|_| decode::<HostRecordV0>(key, bytes).map(HostRecordV1::from))
                .map(HostRecord::from)
        })
        .map_err(|_| e)
}

impl From<HostRecordV0> for HostRecordV1 {
    fn from(r: HostRecordV0) -> Self {
        HostRecordV1 {
            version: r.version,
            started_ms: r.started_ms,
            deploy: r.deploy,
            converged: r.converged,
            error: r.error,
            updated_ms: r.updated_ms,
            instance: String::new(),
        }
    }
}

impl From<HostRecordV1> for HostRecord {
    fn from(r: HostRecordV1) -> Self {
        HostRecord {
            version: r.version,
            started_ms: r.started_ms,
            deploy: r.deploy,
            converged: r.converged,
            error: r.error,
            updated_ms: r.updated_ms,
            instance: r.instance,
            failed: 0,
            blocked: 0,
            first_failure: None,
            converged_ms: 0,
            labels: Vec::new(),
        }
    }
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

    fn record(instance: &str) -> HostRecord {
        HostRecord {
            version: "0.1.0".into(),
            started_ms: 1000,
            deploy: Some(3),
            converged: true,
            error: Some("bad".into()),
            updated_ms: 2000,
            instance: instance.into(),
            failed: 0,
            blocked: 0,
            first_failure: None,
            converged_ms: 0,
            labels: Vec::new(),
        }
    }

    #[test]
    fn labels_survive_and_a_record_without_them_decodes() {
        let mut r = record("i");
        r.labels = vec![("role".into(), "web".into())];
        let key = "/tend/hosts/h1";
        assert_eq!(decode_host_record(key, &encode(&r)).unwrap(), r);
        let v2 = HostRecordV2 {
            version: r.version.clone(),
            started_ms: r.started_ms,
            deploy: r.deploy,
            converged: r.converged,
            error: r.error.clone(),
            updated_ms: r.updated_ms,
            instance: r.instance.clone(),
            failed: 1,
            blocked: 2,
            first_failure: Some("x".into()),
            converged_ms: 7,
        };
        let back = decode_host_record(key, &encode(&v2)).unwrap();
        assert_eq!(
            (back.failed, back.converged_ms, back.labels.len()),
            (1, 7, 0)
        );
        // An older tend reads a record with labels (it stops before them).
        assert_eq!(
            decode::<HostRecordV2>(key, &encode(&r)).unwrap().instance,
            "i"
        );
    }

    #[test]
    fn host_records_keep_their_counts_and_older_ones_decode() {
        let mut r = record("i");
        r.failed = 2;
        r.blocked = 1;
        r.first_failure = Some("file[/x]: no space".into());
        r.converged_ms = 3000;
        assert_eq!(
            decode_host_record("/tend/hosts/h1", &encode(&r)).unwrap(),
            r
        );
        let v1 = HostRecordV1 {
            version: "0.1.0".into(),
            started_ms: 1000,
            deploy: Some(3),
            converged: true,
            error: Some("bad".into()),
            updated_ms: 2000,
            instance: "i".into(),
        };
        assert_eq!(
            decode_host_record("/tend/hosts/h1", &encode(&v1)).unwrap(),
            record("i")
        );
        // A tend that knows only the instance reads the new record.
        assert_eq!(
            decode::<HostRecordV1>("/tend/hosts/h1", &encode(&r)).unwrap(),
            v1
        );
    }

    #[test]
    fn host_records_round_trip_with_their_instance() {
        let r = record("0b7e6a52-7f0e-4d4c-9a53-0d6f3c3b1f7e");
        assert_eq!(
            decode_host_record("/tend/hosts/h1", &encode(&r)).unwrap(),
            r
        );
    }

    #[test]
    fn a_host_record_without_an_instance_still_decodes() {
        let old = HostRecordV0 {
            version: "0.1.0".into(),
            started_ms: 1000,
            deploy: Some(3),
            converged: true,
            error: Some("bad".into()),
            updated_ms: 2000,
        };
        let bytes = encode(&old);
        assert_eq!(
            decode_host_record("/tend/hosts/h1", &bytes).unwrap(),
            record("")
        );
        // And a tend that does not know the instance reads a record that has one.
        let new = encode(&record("0b7e6a52-7f0e-4d4c-9a53-0d6f3c3b1f7e"));
        assert_eq!(decode::<HostRecordV0>("/tend/hosts/h1", &new).unwrap(), old);
    }

    fn deploy(signature: Option<SignatureRecord>) -> DeployRecord {
        DeployRecord {
            id: 4,
            bundle: "b".into(),
            parent: Some("p".into()),
            hash: "h".into(),
            message: "m".into(),
            author: "a@c".into(),
            time_ms: 5,
            signature,
            target: None,
        }
    }

    #[test]
    fn deploy_targets_survive_and_older_records_decode() {
        let key = "/tend/deploys/id/4";
        let mut d = deploy(None);
        d.target = Some(TargetRecord {
            hosts: vec!["web*".into()],
            selector: vec![("role".into(), "web".into())],
        });
        assert_eq!(decode_deploy_record(key, &encode(&d)).unwrap(), d);
        let v1 = DeployRecordV1 {
            id: 4,
            bundle: "b".into(),
            parent: None,
            hash: "h".into(),
            message: "m".into(),
            author: "a".into(),
            time_ms: 5,
            signature: Some(SignatureRecord {
                key: vec![1; 32],
                signature: vec![2; 64],
            }),
        };
        let back = decode_deploy_record(key, &encode(&v1)).unwrap();
        assert!(back.signature.is_some() && back.target.is_none());
        assert_eq!(decode::<DeployRecordV1>(key, &encode(&d)).unwrap().id, 4);
    }

    #[test]
    fn deploy_records_keep_their_signature_and_older_ones_decode() {
        let signed = deploy(Some(SignatureRecord {
            key: vec![1; 32],
            signature: vec![2; 64],
        }));
        let key = "/tend/deploys/id/4";
        assert_eq!(decode_deploy_record(key, &encode(&signed)).unwrap(), signed);
        let old = DeployRecordV0 {
            id: 4,
            bundle: "b".into(),
            parent: Some("p".into()),
            hash: "h".into(),
            message: "m".into(),
            author: "a@c".into(),
            time_ms: 5,
        };
        assert_eq!(
            decode_deploy_record(key, &encode(&old)).unwrap(),
            deploy(None)
        );
        // A tend that does not know signatures reads a signed record.
        assert_eq!(
            decode::<DeployRecordV0>(key, &encode(&signed)).unwrap(),
            old
        );
        let err = decode_deploy_record(key, &encode(&signed)[..6]).unwrap_err();
        assert!(matches!(err, WorldError::Decode { .. }), "{err:?}");
    }

    #[test]
    fn a_truncated_host_record_is_still_an_error() {
        let bytes = encode(&record("x"));
        let err = decode_host_record("/tend/hosts/h1", &bytes[..4]).unwrap_err();
        assert!(matches!(err, WorldError::Decode { .. }), "{err:?}");
    }
}

/// A scheduling pool member's entry: the options it joined with (the leader's are used).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchedMemberRecord {
    pub strategy: String,
    pub max: u32,
    pub ttl: u32,
    pub persist: bool,
}

/// A scheduling namespace's choice, written by its leader.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SchedResultRecord {
    /// The chosen hosts, sorted.
    pub hosts: Vec<String>,
    /// The round-robin order of the members (earliest first), so that a new leader keeps
    /// the previous one's choice.
    pub order: Vec<String>,
    /// The leader that wrote it.
    pub leader: String,
}
