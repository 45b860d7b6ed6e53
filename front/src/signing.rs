//! Signed deploys: the controller's ed25519 key files, the canonical bytes of a deploy's
//! manifest that it signs, and the check a host makes against the public keys it trusts
//! (held on the host, never in the World).
//!
//! Key files:
//! - a private key is PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, what `openssl genpkey
//!   -algorithm ed25519` writes), mode 0600: a key file readable by group or others is refused;
//! - a public key is one line, `ed25519 <base64 of the 32-byte key> [comment]`;
//! - a host's trusted keys are the `*.pub` files of one directory.
//!
//! What is signed ([`manifest`]): a domain tag, the World's namespace, the deploy's id, its
//! parent's hash, its bundle's hash, its message and author, and every entry of the bundle
//! (path, mode, and for a file its size and content hash), as length-prefixed fields. The
//! files' content hashes are checked when the bundle is fetched (the World verifies every blob
//! against its hash), so neither a file nor the deploy's metadata can be swapped without
//! breaking the signature, and an old deploy cannot be presented under another id or in
//! another namespace.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};
use ed25519_dalek::{Signature, Signer};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use tend_world::{Deploy, DeploySignature, TreeEntry};

/// The first word of a public key file.
const PUBLIC_KEY_TAG: &str = "ed25519";

/// The domain tag that opens every signed manifest (a signature made for something else
/// never verifies as a deploy's).
const MANIFEST_TAG: &[u8] = b"tend deploy manifest v1";

/// A key file that cannot be used: which file, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The file (or directory) at fault.
    pub path: PathBuf,
    /// What is wrong, as a short lowercase phrase with a hint.
    pub message: String,
    /// [`keygen`] refused to replace an existing file (nothing was written).
    pub exists: bool,
}

impl KeyError {
    fn new(path: &Path, message: impl Into<String>) -> KeyError {
        KeyError {
            path: path.to_path_buf(),
            message: message.into(),
            exists: false,
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for KeyError {}

/// The fingerprint of a public key as tend shows it: `ed25519:` and the first 16 hex digits
/// of the key's BLAKE3 hash. It names a key for people; verification uses the whole key.
pub fn fingerprint(key: &[u8]) -> String {
    let hex = blake3::hash(key).to_hex();
    format!("{PUBLIC_KEY_TAG}:{}", &hex.as_str()[..16])
}

/// The public key file's line for `key`.
pub fn public_key_line(key: &VerifyingKey, comment: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(key.as_bytes());
    if comment.is_empty() {
        format!("{PUBLIC_KEY_TAG} {b64}\n")
    } else {
        format!("{PUBLIC_KEY_TAG} {b64} {comment}\n")
    }
}

/// Parses a public key file's text (the first line that is neither empty nor a `#` comment).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or("empty public key file (expected `ed25519 <base64 key>`)")?;
    let mut words = line.split_whitespace();
    let tag = words.next().unwrap_or_default();
    if tag != PUBLIC_KEY_TAG {
        return Err(format!(
            "not a tend public key: the line starts with {tag:?}, expected `ed25519 <base64 key>`"
        ));
    }
    let b64 = words
        .next()
        .ok_or("no key after `ed25519` (expected `ed25519 <base64 key>`)")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the key is not valid base64: {e}"))?;
    let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        format!(
            "the key is {} bytes long, an ed25519 key is 32",
            bytes.len()
        )
    })?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "the key is not a valid ed25519 point".into())
}

/// Reads a public key file.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| KeyError::new(path, format!("cannot read the public key: {e}")))?;
    parse_public_key(&text).map_err(|m| KeyError::new(path, m))
}

/// Reads a private key file (PKCS#8 PEM), refusing one that group or others may read.
pub fn read_secret_key(path: &Path) -> Result<SigningKey, KeyError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| KeyError::new(path, format!("cannot read the private key: {e}")))?;
    if !meta.is_file() {
        return Err(KeyError::new(path, "not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::new(
            path,
            format!(
                "the private key is readable by group or others (mode {mode:04o}); `chmod 600 {}`",
                path.display()
            ),
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| KeyError::new(path, format!("cannot read the private key: {e}")))?;
    if text.contains("BEGIN ENCRYPTED PRIVATE KEY") {
        return Err(KeyError::new(
            path,
            "the private key is encrypted; tend reads unencrypted PKCS#8 keys (`tend keygen`)",
        ));
    }
    SigningKey::from_pkcs8_pem(&text).map_err(|e| {
        KeyError::new(
            path,
            format!("not an ed25519 private key in PKCS#8 PEM ({e}); make one with `tend keygen`"),
        )
    })
}

/// What [`keygen`] wrote.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// The private key file (mode 0600).
    pub private: PathBuf,
    /// The public key file (`<private>.pub`, mode 0644).
    pub public: PathBuf,
    /// The public key's fingerprint.
    pub fingerprint: String,
}

/// Writes a new key pair: `path` (the private key, PKCS#8 PEM, mode 0600) and `path.pub` (the
/// public key line). Neither file may exist already.
pub fn keygen(path: &Path, comment: &str) -> Result<KeyPair, KeyError> {
    let public = public_path(path);
    for p in [path, public.as_path()] {
        if p.symlink_metadata().is_ok() {
            return Err(KeyError {
                exists: true,
                ..KeyError::new(p, "already exists; remove it first or choose another file")
            });
        }
    }
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed)
        .map_err(|e| KeyError::new(path, format!("cannot get random bytes: {e}")))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    // PKCS#8 v1 (the secret only), as OpenSSL writes it.
    let pem = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .map_err(|e| KeyError::new(path, format!("cannot encode the private key: {e}")))?;
    write_new(path, pem.as_bytes(), 0o600)?;
    let line = public_key_line(&key.verifying_key(), comment);
    if let Err(e) = write_new(&public, line.as_bytes(), 0o644) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(KeyPair {
        private: path.to_path_buf(),
        public,
        fingerprint: fingerprint(key.verifying_key().as_bytes()),
    })
}

/// `<path>.pub`.
pub fn public_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Creates `path` (it must not exist) with `mode`, writes `bytes` and syncs them; a file
/// half written is removed. For keys and other credentials (`tend cluster auth`).
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| KeyError::new(path, format!("cannot create the file: {e}")))?;
    // The mode given to open is filtered by the umask: set it exactly (a public key stays
    // readable under a umask of 077).
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(bytes))
        .and_then(|()| f.sync_all())
        .map_err(|e| {
            let _ = std::fs::remove_file(path);
            KeyError::new(path, format!("cannot write the file: {e}"))
        })
}

/// What a signature covers, besides the bundle's entries.
#[derive(Debug, Clone, Copy)]
pub struct ManifestHead<'a> {
    /// The World's namespace (normalized: `/tend`).
    pub namespace: &'a str,
    /// The deploy's id.
    pub id: u64,
    /// The parent deploy's hash (`None` for the first deploy).
    pub parent: Option<&'a str>,
    /// The bundle's tree hash.
    pub bundle: &'a str,
    /// The deploy's message.
    pub message: &'a str,
    /// The deploy's author.
    pub author: &'a str,
    /// The hosts the deploy is for (`None`: every host).
    pub target: Option<&'a tend_world::DeployTarget>,
}

impl<'a> ManifestHead<'a> {
    /// The head of a stored deploy in `namespace`.
    pub fn of(namespace: &'a str, d: &'a Deploy) -> ManifestHead<'a> {
        ManifestHead {
            namespace,
            id: d.id,
            parent: d.parent.as_deref(),
            bundle: &d.bundle,
            message: &d.message,
            author: &d.author,
            target: d.target.as_ref(),
        }
    }
}

/// The canonical bytes a deploy's signature covers: every field length-prefixed (u64 little
/// endian), numbers as u64 little endian, the entries sorted by path.
pub fn manifest(head: &ManifestHead<'_>, entries: &[TreeEntry]) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend((bytes.len() as u64).to_le_bytes());
        out.extend(bytes);
    }
    let mut out = Vec::with_capacity(256 + entries.len() * 128);
    field(&mut out, MANIFEST_TAG);
    field(&mut out, head.namespace.as_bytes());
    out.extend(head.id.to_le_bytes());
    match head.parent {
        Some(p) => {
            out.push(1);
            field(&mut out, p.as_bytes());
        }
        None => out.push(0),
    }
    field(&mut out, head.bundle.as_bytes());
    field(&mut out, head.message.as_bytes());
    field(&mut out, head.author.as_bytes());
    let mut sorted: Vec<&TreeEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| entry_path(a).cmp(entry_path(b)));
    out.extend((sorted.len() as u64).to_le_bytes());
    for e in sorted {
        match e {
            TreeEntry::Dir { path, mode } => {
                out.push(b'd');
                field(&mut out, path.as_bytes());
                out.extend(u64::from(*mode).to_le_bytes());
            }
            TreeEntry::File {
                path,
                mode,
                size,
                blob,
            } => {
                out.push(b'f');
                field(&mut out, path.as_bytes());
                out.extend(u64::from(*mode).to_le_bytes());
                out.extend(size.to_le_bytes());
                field(&mut out, blob.as_bytes());
            }
        }
    }
    // A target, when there is one, after the entries: the manifest of an untargeted deploy is
    // the same as before targets existed, so its signature still verifies.
    if let Some(t) = head.target {
        field(&mut out, b"target");
        out.extend((t.hosts.len() as u64).to_le_bytes());
        for h in &t.hosts {
            field(&mut out, h.as_bytes());
        }
        out.extend((t.selector.len() as u64).to_le_bytes());
        for (k, v) in &t.selector {
            field(&mut out, k.as_bytes());
            field(&mut out, v.as_bytes());
        }
    }
    out
}

fn entry_path(e: &TreeEntry) -> &str {
    match e {
        TreeEntry::Dir { path, .. } | TreeEntry::File { path, .. } => path,
    }
}

/// Signs a manifest.
pub fn sign(key: &SigningKey, manifest: &[u8]) -> DeploySignature {
    DeploySignature {
        key: key.verifying_key().as_bytes().to_vec(),
        signature: key.sign(manifest).to_bytes().to_vec(),
    }
}

/// Why a host refuses a deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The deploy carries no signature.
    Unsigned,
    /// Signed by a key this host does not trust (its fingerprint).
    UntrustedKey(String),
    /// The signature does not match the deploy and its files (the signer's fingerprint).
    BadSignature(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unsigned => write!(
                f,
                "unsigned; this host runs only deploys signed by a key it trusts (`tend deploy --key`)"
            ),
            Refusal::UntrustedKey(fp) => write!(f, "signed by an untrusted key {fp}"),
            Refusal::BadSignature(fp) => write!(
                f,
                "bad signature (key {fp}): the deploy or its files changed after it was signed"
            ),
        }
    }
}

/// The public keys a host trusts, read from the `*.pub` files of a directory.
#[derive(Debug, Clone)]
pub struct Trust {
    dir: PathBuf,
    keys: Vec<(VerifyingKey, PathBuf)>,
}

impl Trust {
    /// Reads every `*.pub` file of `dir`. A file that is not a public key, a directory or key
    /// file others may write, or a directory without any key is an error naming it.
    pub fn load(dir: &Path) -> Result<Trust, KeyError> {
        let meta = std::fs::metadata(dir)
            .map_err(|e| KeyError::new(dir, format!("cannot read the trusted keys: {e}")))?;
        if !meta.is_dir() {
            return Err(KeyError::new(
                dir,
                "not a directory (trusted keys are the `*.pub` files of a directory)",
            ));
        }
        refuse_writable_by_others(dir, &meta)?;
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| KeyError::new(dir, format!("cannot read the trusted keys: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pub"))
            .collect();
        paths.sort();
        let mut keys = Vec::new();
        for p in paths {
            let meta = std::fs::metadata(&p)
                .map_err(|e| KeyError::new(&p, format!("cannot read the public key: {e}")))?;
            refuse_writable_by_others(&p, &meta)?;
            keys.push((read_public_key(&p)?, p));
        }
        if keys.is_empty() {
            return Err(KeyError::new(
                dir,
                "holds no `*.pub` public key: every deploy would be refused (copy the controller's `tend keygen` .pub file here)",
            ));
        }
        Ok(Trust {
            dir: dir.to_path_buf(),
            keys,
        })
    }

    /// The directory the keys were read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The fingerprints of the trusted keys, in file order.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|(k, _)| fingerprint(k.as_bytes()))
            .collect()
    }

    /// The trusted key that made `signature`, or why there is none (unsigned, or signed by
    /// another key): what can be told before the deploy's files are read.
    pub fn signer(&self, signature: Option<&DeploySignature>) -> Result<&VerifyingKey, Refusal> {
        let sig = signature.ok_or(Refusal::Unsigned)?;
        self.keys
            .iter()
            .find(|(k, _)| k.as_bytes().as_slice() == sig.key.as_slice())
            .map(|(k, _)| k)
            .ok_or_else(|| Refusal::UntrustedKey(fingerprint(&sig.key)))
    }

    /// Checks a deploy's signature over `manifest`.
    pub fn verify(
        &self,
        signature: Option<&DeploySignature>,
        manifest: &[u8],
    ) -> Result<(), Refusal> {
        let key = self.signer(signature)?;
        let sig = signature.ok_or(Refusal::Unsigned)?;
        let fp = fingerprint(&sig.key);
        let signature =
            Signature::from_slice(&sig.signature).map_err(|_| Refusal::BadSignature(fp.clone()))?;
        key.verify_strict(manifest, &signature)
            .map_err(|_| Refusal::BadSignature(fp))
    }
}

fn refuse_writable_by_others(path: &Path, meta: &std::fs::Metadata) -> Result<(), KeyError> {
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o002 != 0 {
        return Err(KeyError::new(
            path,
            format!(
                "writable by others (mode {mode:04o}): anyone here could add a trusted key; `chmod o-w {}`",
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<TreeEntry> {
        vec![
            TreeEntry::File {
                path: "main.mcl".into(),
                mode: 0o644,
                size: 10,
                blob: "aa".repeat(32),
            },
            TreeEntry::Dir {
                path: "lib".into(),
                mode: 0o755,
            },
            TreeEntry::File {
                path: "lib/x.mcl".into(),
                mode: 0o644,
                size: 3,
                blob: "bb".repeat(32),
            },
        ]
    }

    fn head(id: u64) -> ManifestHead<'static> {
        ManifestHead {
            namespace: "/tend",
            id,
            parent: Some("p1"),
            bundle: "b1",
            message: "m",
            author: "ci@ctl",
            target: None,
        }
    }

    /// A trust directory holding the public keys of `keys`, and each key.
    fn trust_of(keys: &[&SigningKey]) -> (tempfile::TempDir, Trust) {
        let dir = tempfile::tempdir().unwrap();
        for (i, k) in keys.iter().enumerate() {
            std::fs::write(
                dir.path().join(format!("k{i}.pub")),
                public_key_line(&k.verifying_key(), "test"),
            )
            .unwrap();
        }
        let t = Trust::load(dir.path()).unwrap();
        (dir, t)
    }

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    #[test]
    fn a_signed_manifest_verifies_and_any_change_breaks_it() {
        let k = key(1);
        let (_d, trust) = trust_of(&[&key(9), &k]);
        let m = manifest(&head(3), &entries());
        let sig = sign(&k, &m);
        assert_eq!(trust.verify(Some(&sig), &m), Ok(()));
        // The order of the entries does not matter; their content does.
        let mut reordered = entries();
        reordered.reverse();
        assert_eq!(
            trust.verify(Some(&sig), &manifest(&head(3), &reordered)),
            Ok(())
        );
        let fp = fingerprint(k.verifying_key().as_bytes());
        let bad = Err(Refusal::BadSignature(fp));
        let mut tampered = entries();
        if let TreeEntry::File { blob, .. } = &mut tampered[2] {
            *blob = "cc".repeat(32);
        }
        assert_eq!(
            trust.verify(Some(&sig), &manifest(&head(3), &tampered)),
            bad
        );
        let mut renamed = entries();
        if let TreeEntry::File { path, .. } = &mut renamed[0] {
            *path = "other.mcl".into();
        }
        assert_eq!(trust.verify(Some(&sig), &manifest(&head(3), &renamed)), bad);
        let mut extra = entries();
        extra.push(TreeEntry::Dir {
            path: "z".into(),
            mode: 0o755,
        });
        assert_eq!(trust.verify(Some(&sig), &manifest(&head(3), &extra)), bad);
        // Replayed under another id, parent, namespace, bundle or message: refused.
        for h in [
            head(4),
            ManifestHead {
                parent: None,
                ..head(3)
            },
            ManifestHead {
                namespace: "/prod",
                ..head(3)
            },
            ManifestHead {
                bundle: "b2",
                ..head(3)
            },
            ManifestHead {
                message: "n",
                ..head(3)
            },
        ] {
            assert_eq!(trust.verify(Some(&sig), &manifest(&h, &entries())), bad);
        }
        // A damaged signature.
        let mut broken = sig.clone();
        broken.signature[0] ^= 1;
        assert_eq!(trust.verify(Some(&broken), &m), bad);
        broken.signature.truncate(10);
        assert_eq!(trust.verify(Some(&broken), &m), bad);
    }

    #[test]
    fn unsigned_and_foreign_signatures_are_refused() {
        let (_d, trust) = trust_of(&[&key(1)]);
        let m = manifest(&head(1), &entries());
        assert_eq!(trust.verify(None, &m), Err(Refusal::Unsigned));
        let other = key(2);
        let fp = fingerprint(other.verifying_key().as_bytes());
        assert_eq!(
            trust.verify(Some(&sign(&other, &m)), &m),
            Err(Refusal::UntrustedKey(fp.clone()))
        );
        assert_eq!(
            Refusal::UntrustedKey(fp.clone()).to_string(),
            format!("signed by an untrusted key {fp}")
        );
        assert!(Refusal::Unsigned.to_string().starts_with("unsigned"));
        assert!(fp.starts_with("ed25519:") && fp.len() == 8 + 16, "{fp}");
    }

    #[test]
    fn keygen_writes_a_pair_that_signs_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deploy.key");
        let pair = keygen(&path, "ci@ctl").unwrap();
        assert_eq!(pair.public, dir.path().join("deploy.key.pub"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&pair.public), 0o644);
        let pem = std::fs::read_to_string(&path).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        let secret = read_secret_key(&path).unwrap();
        let public = read_public_key(&pair.public).unwrap();
        assert_eq!(secret.verifying_key(), public);
        assert_eq!(pair.fingerprint, fingerprint(public.as_bytes()));
        let line = std::fs::read_to_string(&pair.public).unwrap();
        assert!(
            line.starts_with("ed25519 ") && line.ends_with(" ci@ctl\n"),
            "{line}"
        );
        // Never over an existing file.
        let err = keygen(&path, "").unwrap_err();
        assert_eq!(err.path, path);
        assert!(
            err.exists && err.message.contains("already exists"),
            "{err}"
        );
    }

    #[test]
    fn bad_key_files_name_the_file_and_the_fault() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        keygen(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_secret_key(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: the private key is readable by group or others (mode 0640); `chmod 600 {}`",
                path.display(),
                path.display()
            )
        );
        let junk = dir.path().join("junk");
        write_new(&junk, b"hello\n", 0o600).unwrap();
        let err = read_secret_key(&junk).unwrap_err();
        assert!(
            err.message
                .contains("not an ed25519 private key in PKCS#8 PEM"),
            "{err}"
        );
        let err = read_secret_key(&dir.path().join("missing")).unwrap_err();
        assert!(err.message.contains("cannot read the private key"), "{err}");
        for (text, want) in [
            ("", "empty public key file"),
            ("ssh-ed25519 AAAA", "not a tend public key"),
            ("ed25519", "no key after"),
            ("ed25519 !!!", "not valid base64"),
            ("ed25519 AAAA", "3 bytes long"),
        ] {
            let err = parse_public_key(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_trust_directory_must_hold_keys_and_be_closed_to_others() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = Trust::load(dir.path()).unwrap_err();
        assert!(err.message.contains("holds no `*.pub` public key"), "{err}");
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        std::fs::write(dir.path().join("bad.pub"), "ed25519 AAAA\n").unwrap();
        let err = Trust::load(dir.path()).unwrap_err();
        assert_eq!(err.path, dir.path().join("bad.pub"));
        std::fs::write(
            dir.path().join("bad.pub"),
            public_key_line(&key(1).verifying_key(), ""),
        )
        .unwrap();
        let t = Trust::load(dir.path()).unwrap();
        assert_eq!(
            t.fingerprints(),
            vec![fingerprint(key(1).verifying_key().as_bytes())]
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = Trust::load(dir.path()).unwrap_err();
        assert!(err.message.contains("writable by others"), "{err}");
        let err = Trust::load(&dir.path().join("bad.pub")).unwrap_err();
        assert!(err.message.contains("not a directory"), "{err}");
    }

    /// A target is signed: moving a signature to another target (or dropping the target)
    /// makes another manifest; an untargeted deploy's manifest is as it was before targets.
    #[test]
    fn the_target_is_signed() {
        let entries: Vec<TreeEntry> = Vec::new();
        let t = tend_world::DeployTarget {
            hosts: vec!["web*".into()],
            selector: Default::default(),
        };
        let other = tend_world::DeployTarget {
            hosts: vec!["*".into()],
            selector: Default::default(),
        };
        let plain = manifest(&head(3), &entries);
        let targeted = manifest(
            &ManifestHead {
                target: Some(&t),
                ..head(3)
            },
            &entries,
        );
        let moved = manifest(
            &ManifestHead {
                target: Some(&other),
                ..head(3)
            },
            &entries,
        );
        assert_ne!(plain, targeted);
        assert_ne!(targeted, moved);
        assert!(
            targeted.starts_with(&plain),
            "the target comes after what was signed before"
        );
    }
}
