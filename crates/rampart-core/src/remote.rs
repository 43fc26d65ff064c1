//! Cloud model repositories (docs/protocol.md, "Model repository"): `s3://`, `gs://` and `as://`
//! locations are mirrored into a private local directory before loading, and mirrored again before
//! every poll; the model table then treats the mirror like any local repository. Credentials come
//! from the environment, as in Triton (`AWS_*`, `GOOGLE_*`, `AZURE_*`; see docs/operations.md).
//!
//! Everything an object store sends is bounded and checked before it touches the disk: object count, object
//! and total size, and every key must be a relative path that stays inside the mirror.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use object_store::ObjectStoreExt as _;
use rampart_types::{Error, Result};

/// Most objects one remote repository may hold.
pub const MAX_REMOTE_OBJECTS: usize = 100_000;
/// Largest single object (bytes) and largest repository (bytes, all objects).
pub const MAX_REMOTE_OBJECT_BYTES: u64 = 16 << 30;
pub const MAX_REMOTE_TOTAL_BYTES: u64 = 64 << 30;

/// Whether a `--model-repository` value names a cloud location.
pub fn is_remote(location: &str) -> bool {
    ["s3://", "gs://", "as://"].iter().any(|p| location.starts_with(p))
}

/// One object as last mirrored: size and ETag (or modification time) tell whether it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mirrored {
    size: u64,
    version: String,
}

pub struct RemoteRepository {
    location: String,
    store: Arc<dyn object_store::ObjectStore>,
    prefix: object_store::path::Path,
    dir: tempfile::TempDir,
    mirrored: Mutex<HashMap<String, Mirrored>>,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for RemoteRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteRepository({} -> {})", self.location, self.dir.path().display())
    }
}

/// Splits `s3://[host:port/]bucket/prefix`, `gs://bucket/prefix` or `as://account/container/prefix`.
fn build_store(location: &str) -> Result<(Arc<dyn object_store::ObjectStore>, String)> {
    let bad = |why: &str| Error::invalid_arg(format!("model repository '{location}': {why}"));
    let fail =
        |e: object_store::Error| Error::invalid_arg(format!("model repository '{location}': {e}"));
    if let Some(rest) = location.strip_prefix("s3://") {
        let mut parts = rest.splitn(2, '/');
        let first = parts.next().unwrap_or_default();
        let mut builder = object_store::aws::AmazonS3Builder::from_env();
        let rest = if first.contains(':') {
            // Triton's form for S3-compatible servers: s3://host:port/bucket/path.
            let scheme = if std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v == "true" || v == "1") {
                "http"
            } else {
                "https"
            };
            builder = builder
                .with_endpoint(format!("{scheme}://{first}"))
                .with_virtual_hosted_style_request(false);
            parts.next().unwrap_or_default()
        } else {
            rest
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad(
                "no bucket name (expected s3://bucket/path or s3://host:port/bucket/path)",
            ));
        }
        let store = builder.with_bucket_name(bucket).build().map_err(fail)?;
        return Ok((Arc::new(store), prefix.to_string()));
    }
    if let Some(rest) = location.strip_prefix("gs://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket name (expected gs://bucket/path)"));
        }
        let store = object_store::gcp::GoogleCloudStorageBuilder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(fail)?;
        return Ok((Arc::new(store), prefix.to_string()));
    }
    if let Some(rest) = location.strip_prefix("as://") {
        let mut parts = rest.splitn(3, '/');
        let (account, container) =
            (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        if account.is_empty() || container.is_empty() {
            return Err(bad("expected as://account/container/path"));
        }
        let store = object_store::azure::MicrosoftAzureBuilder::from_env()
            .with_account(account)
            .with_container_name(container)
            .build()
            .map_err(fail)?;
        return Ok((Arc::new(store), parts.next().unwrap_or_default().to_string()));
    }
    Err(bad("unknown scheme (expected s3://, gs:// or as://)"))
}

impl RemoteRepository {
    /// Connects (no network yet) and creates the private mirror directory.
    pub fn open(location: &str) -> Result<RemoteRepository> {
        let (store, prefix) = build_store(location)?;
        let prefix = object_store::path::Path::from(prefix.trim_matches('/'));
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("rampart-repository-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|e| {
                Error::internal(format!("cannot create a local mirror for '{location}': {e}"))
            })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("cannot start the cloud storage client: {e}")))?;
        Ok(RemoteRepository {
            location: location.to_string(),
            store,
            prefix,
            dir,
            mirrored: Mutex::new(HashMap::new()),
            runtime,
        })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// The local mirror, a model repository like any other.
    pub fn local_path(&self) -> &Path {
        self.dir.path()
    }

    /// Brings the mirror up to date: downloads new and changed objects (each written beside its target and
    /// renamed into place), removes files whose objects are gone. Blocking.
    pub fn sync(&self) -> Result<()> {
        use futures_util::TryStreamExt;
        let fail = |e: object_store::Error| {
            Error::unavailable(format!("model repository '{}': {e}", self.location))
        };
        let listed: Vec<object_store::ObjectMeta> = self.runtime.block_on(async {
            let mut out = Vec::new();
            let mut stream = self.store.list(Some(&self.prefix));
            while let Some(meta) = stream.try_next().await.map_err(fail)? {
                if out.len() >= MAX_REMOTE_OBJECTS {
                    return Err(Error::invalid_arg(format!(
                        "model repository '{}' holds more than {MAX_REMOTE_OBJECTS} objects",
                        self.location
                    )));
                }
                out.push(meta);
            }
            Ok(out)
        })?;
        let total: u64 = listed.iter().map(|m| m.size).sum();
        if total > MAX_REMOTE_TOTAL_BYTES {
            return Err(Error::invalid_arg(format!(
                "model repository '{}' holds {total} bytes, more than {MAX_REMOTE_TOTAL_BYTES}",
                self.location
            )));
        }
        let mut mirrored = self.mirrored.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = HashMap::new();
        for meta in listed {
            let key = meta.location.as_ref();
            let rel = key
                .strip_prefix(self.prefix.as_ref())
                .unwrap_or(key)
                .trim_start_matches('/')
                .to_string();
            if rel.is_empty() || rel.ends_with('/') {
                continue; // the prefix itself, or a "folder" marker
            }
            if let Err(why) = crate::repository::check_relative_path(&rel) {
                tracing::warn!(
                    "model repository '{}': skipping object {:?}: {why}",
                    self.location,
                    key
                );
                continue;
            }
            if meta.size > MAX_REMOTE_OBJECT_BYTES {
                tracing::warn!(
                    "model repository '{}': skipping object {:?}: {} bytes is more than {MAX_REMOTE_OBJECT_BYTES}",
                    self.location,
                    key,
                    meta.size
                );
                continue;
            }
            let state = Mirrored {
                size: meta.size,
                version: meta
                    .e_tag
                    .clone()
                    .or(meta.version.clone())
                    .unwrap_or_else(|| meta.last_modified.to_rfc3339()),
            };
            if mirrored.get(&rel) != Some(&state) {
                let data = self
                    .runtime
                    .block_on(async { self.store.get(&meta.location).await?.bytes().await })
                    .map_err(fail)?;
                if data.len() as u64 != meta.size {
                    return Err(Error::unavailable(format!(
                        "model repository '{}': object {key:?} changed while it was read",
                        self.location
                    )));
                }
                if let Err(e) = self.write(&rel, &data) {
                    tracing::warn!(
                        "model repository '{}': cannot mirror object {:?}: {e}",
                        self.location,
                        key
                    );
                    continue;
                }
            }
            seen.insert(rel, state);
        }
        for gone in mirrored.keys().filter(|k| !seen.contains_key(*k)) {
            let path = self.dir.path().join(gone);
            let _ = std::fs::remove_file(&path);
            // Empty folders go too, so a removed model disappears from the mirror.
            let mut parent = path.parent();
            while let Some(p) = parent.filter(|p| *p != self.dir.path()) {
                if std::fs::remove_dir(p).is_err() {
                    break;
                }
                parent = p.parent();
            }
        }
        *mirrored = seen;
        Ok(())
    }

    fn write(&self, rel: &str, data: &[u8]) -> std::io::Result<()> {
        let target = self.dir.path().join(rel);
        let parent = target.parent().unwrap_or(self.dir.path());
        let mut at = self.dir.path().to_path_buf();
        for c in
            Path::new(rel).parent().map(|p| p.components().collect::<Vec<_>>()).unwrap_or_default()
        {
            at.push(c);
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(std::io::Error::other("a file is in the way of a folder")),
                Err(_) => std::fs::create_dir(&at)?,
            }
        }
        let mut tmp = tempfile::NamedTempFile::new_in(parent)?;
        std::io::Write::write_all(&mut tmp, data)?;
        tmp.persist(&target).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Splits `--model-repository` values into local paths and cloud locations (opened, not yet synced).
pub(crate) fn open_all(
    locations: &[PathBuf],
) -> Result<(Vec<PathBuf>, Vec<Arc<RemoteRepository>>)> {
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for l in locations {
        match l.to_str().filter(|s| is_remote(s)) {
            Some(s) => remote.push(Arc::new(RemoteRepository::open(s)?)),
            None => local.push(l.clone()),
        }
    }
    Ok((local, remote))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert!(
            is_remote("s3://b/p")
                && is_remote("gs://b")
                && is_remote("as://a/c")
                && !is_remote("/models")
        );
        let e = build_store("s3:///path").err().unwrap();
        assert!(e.message().contains("no bucket name"), "{e}");
        let e = build_store("as://account").err().unwrap();
        assert!(e.message().contains("as://account/container/path"), "{e}");
        let (_, prefix) = build_store("s3://127.0.0.1:9000/bucket/some/models").unwrap();
        assert_eq!(prefix, "some/models");
    }

    /// Mirroring from a local object store (object_store's in-memory one): new, changed, removed objects,
    /// and keys that would escape the mirror.
    #[test]
    fn mirror_follows_the_store() {
        let store = Arc::new(object_store::memory::InMemory::new());
        let repo = RemoteRepository {
            location: "memory://".into(),
            store: store.clone(),
            prefix: object_store::path::Path::from("repo"),
            dir: tempfile::tempdir().unwrap(),
            mirrored: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
        };
        let put = |key: &str, data: &'static [u8]| {
            repo.runtime
                .block_on(object_store::ObjectStoreExt::put(
                    &*store,
                    &object_store::path::Path::from(key),
                    data.into(),
                ))
                .unwrap();
        };
        put("repo/m/config.pbtxt", b"max_batch_size: 0");
        put("repo/m/1/model.onnx", b"one");
        put("other/x", b"outside the prefix");
        repo.sync().unwrap();
        let root = repo.local_path();
        assert_eq!(std::fs::read(root.join("m/1/model.onnx")).unwrap(), b"one");
        assert!(!root.join("x").exists() && !root.join("other").exists());
        put("repo/m/1/model.onnx", b"two!");
        repo.sync().unwrap();
        assert_eq!(std::fs::read(root.join("m/1/model.onnx")).unwrap(), b"two!");
        repo.runtime
            .block_on(object_store::ObjectStoreExt::delete(
                &*store,
                &object_store::path::Path::from("repo/m/1/model.onnx"),
            ))
            .unwrap();
        repo.sync().unwrap();
        assert!(!root.join("m/1").exists(), "emptied folders are removed");
        assert!(root.join("m/config.pbtxt").exists());
    }
}
