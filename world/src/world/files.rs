//! [`FsWorld`]: content-addressed blobs (chunked in the store) and trees of files, and the
//! collection of files no retained deploy references.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::{decode_deploy, now_ms, World, CHUNK_SIZE};
use crate::codec::{decode, encode, BlobMeta, Manifest, ManifestEntry};
use crate::store::{Compare, KeyRange, Op, OpResult, Txn};
use tend_model::world::{FsWorld, TreeEntry, WorldError};

impl World {
    /// Deletes stored files that no retained deploy references (older than the grace time).
    pub async fn gc_files(&self) -> Result<(), WorldError> {
        let keys = &self.inner.keys;
        let deploys = self
            .inner
            .store
            .range(KeyRange::prefix(keys.deploy_ids()))
            .await?;
        let mut referenced = BTreeSet::new();
        for kv in &deploys.kvs {
            let d = decode_deploy(&kv.key, &kv.value)?;
            referenced.insert(d.bundle.clone());
            match self.fs_tree(&d.bundle).await {
                Ok(entries) => {
                    for e in entries {
                        if let TreeEntry::File { blob, .. } = e {
                            referenced.insert(blob);
                        }
                    }
                }
                Err(WorldError::FileNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let metas = self
            .inner
            .store
            .range(KeyRange::prefix(keys.area("blobs") + "meta/"))
            .await?;
        let now = now_ms();
        let grace = self.inner.cfg.file_gc_grace.as_millis() as u64;
        for kv in metas.kvs {
            let hash = kv.key.rsplit('/').next().unwrap_or_default().to_string();
            if referenced.contains(&hash) {
                continue;
            }
            let meta: BlobMeta = decode(&kv.key, &kv.value)?;
            if now.saturating_sub(meta.created_ms) < grace {
                continue;
            }
            // Straight to the store: blobs are outside the watch cache's range.
            self.inner
                .store
                .txn(Txn {
                    compares: vec![Compare::ModRevision(kv.key.clone(), kv.mod_revision)],
                    success: vec![
                        Op::Delete(KeyRange::key(kv.key.clone())),
                        Op::Delete(KeyRange::prefix(keys.blob_data(&hash))),
                    ],
                    failure: vec![],
                })
                .await?;
        }
        Ok(())
    }

    async fn put_chunks(&self, hash: &str, bytes: &[u8]) -> Result<u32, WorldError> {
        let writes: Vec<(String, Vec<u8>)> = bytes
            .chunks(CHUNK_SIZE)
            .enumerate()
            .map(|(i, c)| {
                (
                    self.inner.keys.blob_chunk(hash, i as u32),
                    encode(&c.to_vec()),
                )
            })
            .collect();
        let n = writes.len() as u32;
        let store = self.inner.store.clone();
        stream::iter(writes)
            .map(move |(key, value)| {
                let store = store.clone();
                async move {
                    store
                        .txn(Txn::ops(vec![Op::put(key, value)]))
                        .await
                        .map(|_| ())
                }
            })
            .buffer_unordered(4)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(n)
    }

    /// Stores blobs of at most one chunk, skipping those already stored: a few read
    /// transactions to find what is missing, then a few write transactions (each blob's
    /// chunk and metadata together, at most 64 operations and 1 MiB per transaction).
    async fn put_small_blobs(&self, blobs: Vec<(String, Vec<u8>)>) -> Result<(), WorldError> {
        let keys = &self.inner.keys;
        let mut unique: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (hash, bytes) in blobs {
            unique.entry(hash).or_insert(bytes);
        }
        let hashes: Vec<String> = unique.keys().cloned().collect();
        let mut missing = Vec::new();
        for batch in hashes.chunks(64) {
            let r = self
                .get_each(batch.iter().map(|h| keys.blob_meta(h)))
                .await?;
            for (h, res) in batch.iter().zip(r) {
                if matches!(res, OpResult::Range(kvs) if kvs.is_empty()) {
                    missing.push(h.clone());
                }
            }
        }
        let now = now_ms();
        let mut ops: Vec<Op> = Vec::new();
        let mut size = 0;
        for h in missing {
            let bytes = &unique[&h];
            if !ops.is_empty() && (ops.len() + 2 > 64 || size + bytes.len() > 1 << 20) {
                self.inner
                    .store
                    .txn(Txn::ops(std::mem::take(&mut ops)))
                    .await?;
                size = 0;
            }
            size += bytes.len();
            let meta = BlobMeta {
                size: bytes.len() as u64,
                chunks: 1,
                created_ms: now,
            };
            // Data first, metadata (which says "complete") second, in one transaction.
            ops.push(Op::put(keys.blob_chunk(&h, 0), encode(bytes)));
            ops.push(Op::put(keys.blob_meta(&h), encode(&meta)));
        }
        if !ops.is_empty() {
            self.inner.store.txn(Txn::ops(ops)).await?;
        }
        Ok(())
    }

    /// Reads blobs of one chunk, 64 per read transaction, verifying their hashes.
    async fn get_small_blobs(
        &self,
        hashes: Vec<String>,
    ) -> Result<BTreeMap<String, Vec<u8>>, WorldError> {
        let keys = &self.inner.keys;
        let unique: Vec<String> = hashes
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut out = BTreeMap::new();
        for batch in unique.chunks(64) {
            let r = self
                .get_each(batch.iter().map(|h| keys.blob_chunk(h, 0)))
                .await?;
            for (h, res) in batch.iter().zip(r) {
                let OpResult::Range(kvs) = res else { continue };
                let Some(kv) = kvs.into_iter().next() else {
                    return Err(WorldError::FileNotFound { hash: h.clone() });
                };
                let bytes: Vec<u8> = decode(&kv.key, &kv.value)?;
                if blake3::hash(&bytes).to_hex().as_str() != h {
                    return Err(WorldError::Decode {
                        key: kv.key,
                        message: "content does not match its hash".into(),
                    });
                }
                out.insert(h.clone(), bytes);
            }
        }
        Ok(out)
    }

    /// Reads and verifies a blob's `chunks` chunks.
    async fn read_chunks(&self, hash: &str, chunks: u32) -> Result<Vec<u8>, WorldError> {
        let meta_key = self.inner.keys.blob_meta(hash);
        let parts: Vec<Vec<u8>> = stream::iter(0..chunks)
            .map(|i| {
                let key = self.inner.keys.blob_chunk(hash, i);
                async move {
                    match self.inner.store.get(&key).await? {
                        Some(kv) => decode::<Vec<u8>>(&key, &kv.value),
                        None => Err(WorldError::FileNotFound {
                            hash: format!("{hash} (chunk {i} missing)"),
                        }),
                    }
                }
            })
            .buffered(4)
            .try_collect()
            .await?;
        let bytes = parts.concat();
        if blake3::hash(&bytes).to_hex().as_str() != hash {
            return Err(WorldError::Decode {
                key: meta_key,
                message: "content does not match its hash".into(),
            });
        }
        Ok(bytes)
    }
}

fn manifest_entries(m: Manifest) -> Vec<TreeEntry> {
    m.entries
        .into_iter()
        .map(|e| match e {
            ManifestEntry::Dir { path, mode } => TreeEntry::Dir { path, mode },
            ManifestEntry::File {
                path,
                mode,
                size,
                blob,
            } => TreeEntry::File {
                path,
                mode,
                size,
                blob,
            },
        })
        .collect()
}

fn walk(
    root: &Path,
    rel: &str,
    out: &mut Vec<(String, PathBuf, bool, u32)>,
) -> Result<(), WorldError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WorldError::Io { path, source }
    };
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(io(&dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io(&dir))?;
    names.sort_by_key(|e| e.file_name());
    for entry in names {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel_path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            out.push((rel_path.clone(), path, true, mode));
            walk(root, &rel_path, out)?;
        } else if meta.is_file() {
            out.push((rel_path, path, false, mode));
        } else {
            return Err(WorldError::Invalid {
                what: "bundle file",
                value: path.display().to_string(),
                reason:
                    "only regular files and directories can be stored (symlink or special file)",
            });
        }
    }
    Ok(())
}

fn safe_rel(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[async_trait]
impl FsWorld for World {
    async fn fs_put_blob(&self, bytes: &[u8]) -> Result<String, WorldError> {
        let hash = blake3::hash(bytes).to_hex().to_string();
        let meta_key = self.inner.keys.blob_meta(&hash);
        if self.inner.store.get(&meta_key).await?.is_some() {
            return Ok(hash);
        }
        let mut meta = BlobMeta {
            size: bytes.len() as u64,
            chunks: 1,
            created_ms: now_ms(),
        };
        let mut success = vec![Op::put(meta_key.clone(), Vec::new())];
        if bytes.len() <= CHUNK_SIZE {
            // One chunk: data and metadata in one transaction.
            success.push(Op::put(
                self.inner.keys.blob_chunk(&hash, 0),
                encode(&bytes.to_vec()),
            ));
        } else {
            // Chunks first; the metadata, written last, says the blob is complete.
            meta.chunks = self.put_chunks(&hash, bytes).await?;
        }
        success[0] = Op::put(meta_key.clone(), encode(&meta));
        self.inner
            .store
            .txn(Txn {
                compares: vec![Compare::Missing(meta_key)],
                success,
                failure: vec![],
            })
            .await?;
        Ok(hash)
    }

    async fn fs_get_blob(&self, hash: &str) -> Result<Vec<u8>, WorldError> {
        let meta_key = self.inner.keys.blob_meta(hash);
        let Some(kv) = self.inner.store.get(&meta_key).await? else {
            return Err(WorldError::FileNotFound {
                hash: hash.to_string(),
            });
        };
        let meta: BlobMeta = decode(&meta_key, &kv.value)?;
        self.read_chunks(hash, meta.chunks).await
    }

    async fn fs_put_tree(&self, root: &Path) -> Result<String, WorldError> {
        let mut found = Vec::new();
        walk(root, "", &mut found)?;
        let mut entries = Vec::with_capacity(found.len());
        let mut small = Vec::new();
        let mut large = Vec::new();
        for (rel, path, is_dir, mode) in found {
            if is_dir {
                entries.push(ManifestEntry::Dir { path: rel, mode });
                continue;
            }
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|source| WorldError::Io {
                    path: path.clone(),
                    source,
                })?;
            let blob = blake3::hash(&bytes).to_hex().to_string();
            entries.push(ManifestEntry::File {
                path: rel,
                mode,
                size: bytes.len() as u64,
                blob: blob.clone(),
            });
            if bytes.len() <= CHUNK_SIZE {
                small.push((blob, bytes));
            } else {
                large.push(bytes);
            }
        }
        self.put_small_blobs(small).await?;
        for bytes in large {
            self.fs_put_blob(&bytes).await?;
        }
        self.fs_put_blob(&encode(&Manifest { entries })).await
    }

    async fn fs_tree(&self, hash: &str) -> Result<Vec<TreeEntry>, WorldError> {
        let bytes = self.fs_get_blob(hash).await?;
        let m: Manifest = decode(&self.inner.keys.blob_meta(hash), &bytes)?;
        Ok(manifest_entries(m))
    }

    async fn fs_get_tree(&self, hash: &str, dest: &Path) -> Result<(), WorldError> {
        use std::os::unix::fs::PermissionsExt;
        let entries = self.fs_tree(hash).await?;
        let io = |path: PathBuf| move |source| WorldError::Io { path, source };
        for e in &entries {
            let path = match e {
                TreeEntry::Dir { path, .. } | TreeEntry::File { path, .. } => path,
            };
            if !safe_rel(path) {
                return Err(WorldError::Invalid {
                    what: "bundle path",
                    value: path.clone(),
                    reason: "not a relative path inside the bundle",
                });
            }
        }
        tokio::fs::create_dir_all(dest)
            .await
            .map_err(io(dest.to_path_buf()))?;
        for e in &entries {
            if let TreeEntry::Dir { path, .. } = e {
                let p = dest.join(path);
                tokio::fs::create_dir_all(&p).await.map_err(io(p.clone()))?;
            }
        }
        // Small files: their one chunk, many per read transaction. Large ones: chunk by chunk.
        let small: Vec<String> = entries
            .iter()
            .filter_map(|e| match e {
                TreeEntry::File { size, blob, .. } if *size as usize <= CHUNK_SIZE => {
                    Some(blob.clone())
                }
                _ => None,
            })
            .collect();
        let mut contents = self.get_small_blobs(small).await?;
        for e in &entries {
            if let TreeEntry::File { blob, .. } = e {
                if !contents.contains_key(blob) {
                    let bytes = self.fs_get_blob(blob).await?;
                    contents.insert(blob.clone(), bytes);
                }
            }
        }
        let writes: Vec<(PathBuf, u32, Vec<u8>)> = entries
            .iter()
            .filter_map(|e| match e {
                TreeEntry::File {
                    path, mode, blob, ..
                } => Some((dest.join(path), *mode, contents[blob].clone())),
                TreeEntry::Dir { .. } => None,
            })
            .collect();
        drop(contents);
        stream::iter(writes)
            .map(|(p, mode, bytes)| async move {
                if let Some(parent) = p.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(io(parent.to_path_buf()))?;
                }
                tokio::fs::write(&p, &bytes).await.map_err(io(p.clone()))?;
                tokio::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                    .await
                    .map_err(io(p.clone()))
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        for e in entries {
            if let TreeEntry::Dir { path, mode } = e {
                let p = dest.join(&path);
                tokio::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                    .await
                    .map_err(io(p.clone()))?;
            }
        }
        Ok(())
    }

    async fn fs_read(&self, hash: &str, path: &str) -> Result<Vec<u8>, WorldError> {
        let wanted = path.trim_start_matches("./").trim_start_matches('/');
        for e in self.fs_tree(hash).await? {
            if let TreeEntry::File { path: p, blob, .. } = e {
                if p == wanted {
                    return self.fs_get_blob(&blob).await;
                }
            }
        }
        Err(WorldError::PathNotFound {
            hash: hash.to_string(),
            path: path.to_string(),
        })
    }
}
