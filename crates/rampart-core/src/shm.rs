//! System shared memory (docs/protocol.md, "System shared memory"): regions a client registers by
//! POSIX shared-memory key, then names in tensor parameters so that input and output bytes travel
//! through memory instead of the socket.
//!
//! Off unless the operator starts the server with `--allow-client-shm=true`: a registered region lets a
//! client make the server read and write memory it shares with other processes.
//!
//! Safety properties, each a past Triton CVE (docs/protocol.md, "Security history (CVEs)"):
//! - every offset and size is checked with overflow-safe arithmetic, at registration against the object's
//!   size and at use against the registered size (CVE-2024-0088);
//! - the reserved Python-backend key prefix and keys that are not a single plain name are refused
//!   (CVE-2025-23319 chain);
//! - a region is reference-counted: unregistering it while an inference uses it only removes the name; the
//!   object stays open until the last request holding it is answered (CVE-2024-0116).
//!
//! Rampart does not map regions. It reads and writes them with `pread`/`pwrite` on the shared-memory file
//! descriptor: a client that shrinks its object after registering gets a short read (an error for that
//! request) instead of a SIGBUS that would kill the server, and every input is copied once, so the bytes
//! the core validates are the bytes the engine runs on (no change between check and use).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rampart_types::{Code, Error, Result};

/// Keys starting with this prefix (after leading `/`) belong to Triton's Python backend; never mappable.
pub const RESERVED_KEY_PREFIX: &str = "triton_python_backend_shm_region_";
/// Regions registered at once.
pub const MAX_REGIONS: usize = 1024;
/// Bytes one request may read from shared memory (inputs are copied out of their regions).
pub const MAX_REQUEST_INPUT_BYTES: u64 = 1 << 30;
/// Longest region name and key, in bytes (NAME_MAX).
pub const MAX_NAME_LEN: usize = 255;

pub use crate::infer::ShmRef;

/// What status reports for a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionStatus {
    pub name: String,
    pub key: String,
    pub offset: u64,
    pub byte_size: u64,
}

struct Region {
    status: RegionStatus,
    file: File,
}

/// A checked slice of a region, holding the region open.
pub struct Lease {
    region: Arc<Region>,
    /// Absolute position in the shared-memory object.
    position: u64,
    len: u64,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("region", &self.region.status.name)
            .field("position", &self.position)
            .field("len", &self.len)
            .finish()
    }
}

impl Lease {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the leased bytes out.
    pub fn read(&self) -> Result<Bytes> {
        let len = usize::try_from(self.len)
            .map_err(|_| Error::invalid_arg("shared memory byte size too large"))?;
        let mut buf = vec![0u8; len];
        self.region.file.read_exact_at(&mut buf, self.position).map_err(|e| {
            Error::invalid_arg(format!(
                "cannot read shared memory region '{}': {e} (was the object shrunk after it was registered?)",
                self.region.status.name
            ))
        })?;
        Ok(Bytes::from(buf))
    }

    /// Writes `data` at the start of the leased bytes; `data` must fit.
    pub fn write(&self, data: &[u8]) -> Result<()> {
        if data.len() as u64 > self.len {
            return Err(Error::internal("write larger than the shared memory lease"));
        }
        self.region.file.write_all_at(data, self.position).map_err(|e| {
            Error::internal(format!(
                "cannot write shared memory region '{}': {e}",
                self.region.status.name
            ))
        })
    }
}

/// The registered system shared-memory regions. One name space: CUDA regions cannot be registered in this
/// build, so every registered name is a system region.
pub struct SharedMemory {
    enabled: bool,
    regions: Mutex<BTreeMap<String, Arc<Region>>>,
}

impl SharedMemory {
    /// `enabled`: `--allow-client-shm`. A build without the `shm` feature never enables it.
    pub fn new(enabled: bool) -> Self {
        SharedMemory { enabled: enabled && BUILT, regions: Mutex::new(BTreeMap::new()) }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn check_enabled(&self) -> Result<()> {
        if self.enabled {
            Ok(())
        } else if BUILT {
            Err(crate::features::client_shm_disabled())
        } else {
            Err(Error::unsupported(
                "system shared memory is not supported in this build (cargo feature 'shm')",
            ))
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Region>>> {
        self.regions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens POSIX shared-memory object `key` and registers `byte_size` bytes of it from `offset` as `name`.
    pub fn register(&self, name: &str, key: &str, offset: u64, byte_size: u64) -> Result<()> {
        self.check_enabled()?;
        check_name(name)?;
        let plain = check_key(name, key)?;
        if self.lock().contains_key(name) {
            return Err(already(name));
        }
        let file = open_object(plain).ok_or_else(|| {
            Error::internal(format!("Unable to open shared memory region: '{key}'"))
        })?;
        let meta = file.metadata().map_err(|e| {
            Error::internal(format!("Unable to open shared memory region: '{key}': {e}"))
        })?;
        let invalid = || {
            Error::invalid_arg(format!(
                "failed to register shared memory region '{name}': invalid args"
            ))
        };
        if !meta.file_type().is_file() || byte_size == 0 {
            return Err(invalid());
        }
        match offset.checked_add(byte_size) {
            Some(end) if end <= meta.len() => {}
            _ => return Err(invalid()),
        }
        let mut regions = self.lock();
        if regions.contains_key(name) {
            return Err(already(name));
        }
        if regions.len() >= MAX_REGIONS {
            return Err(Error::invalid_arg(format!(
                "failed to register shared memory region '{name}': {MAX_REGIONS} regions are already registered"
            )));
        }
        let status =
            RegionStatus { name: name.to_string(), key: key.to_string(), offset, byte_size };
        regions.insert(name.to_string(), Arc::new(Region { status, file }));
        tracing::info!("registered system shared memory region '{name}' ({byte_size} bytes)");
        Ok(())
    }

    /// Unregisters `name`, or every region when `None`. Requests already holding a region keep it open until
    /// they finish; the name is free at once.
    pub fn unregister(&self, name: Option<&str>) -> Result<()> {
        self.check_enabled()?;
        let mut regions = self.lock();
        match name {
            None => regions.clear(),
            Some(n) => {
                regions.remove(n);
            }
        }
        Ok(())
    }

    /// Status of `name`, or of every region.
    pub fn status(&self, name: Option<&str>) -> Result<Vec<RegionStatus>> {
        let regions = self.lock();
        match name {
            None => Ok(regions.values().map(|r| r.status.clone()).collect()),
            Some(n) => regions.get(n).map(|r| vec![r.status.clone()]).ok_or_else(|| {
                Error::not_found(format!("Unable to find system shared memory region: '{n}'"))
            }),
        }
    }

    /// Checks `r` against its region and leases it (Triton's `GetMemoryInfo`).
    pub fn lease(&self, r: &ShmRef) -> Result<Lease> {
        self.check_enabled()?;
        let region = self.lock().get(&r.region).cloned().ok_or_else(|| {
            Error::not_found(format!("Unable to find shared memory region: '{}'", r.region))
        })?;
        let size = region.status.byte_size;
        if r.offset >= size {
            return Err(Error::invalid_arg(format!(
                "Invalid offset for shared memory region: '{}': offset {} is not below the region's {size} bytes",
                r.region, r.offset
            )));
        }
        let end = r.offset.checked_add(r.byte_size).ok_or_else(|| {
            Error::invalid_arg(format!(
                "Integer overflow detected: byte_size ({}) + offset ({}) exceeds maximum value ({}) for region '{}'",
                r.byte_size,
                r.offset,
                u64::MAX,
                r.region
            ))
        })?;
        if end > size {
            return Err(Error::invalid_arg(format!(
                "Invalid offset + byte size for shared memory region: '{}': {} + {} is beyond the region's {size} bytes",
                r.region, r.offset, r.byte_size
            )));
        }
        // Registration checked offset + byte_size against the object, so this cannot overflow.
        let position = region.status.offset + r.offset;
        Ok(Lease { region, position, len: r.byte_size })
    }
}

/// Whether this build has system shared memory (cargo feature `shm`).
pub const BUILT: bool = cfg!(feature = "shm");

/// `shm_open(/<plain>, O_RDWR)`: an existing object, never created (glibc adds O_NOFOLLOW and O_CLOEXEC).
#[cfg(feature = "shm")]
fn open_object(plain: &str) -> Option<File> {
    let fd = nix::sys::mman::shm_open(
        format!("/{plain}").as_str(),
        nix::fcntl::OFlag::O_RDWR,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    Some(File::from(fd))
}

#[cfg(not(feature = "shm"))]
fn open_object(_plain: &str) -> Option<File> {
    None
}

fn already(name: &str) -> Error {
    Error::new(Code::AlreadyExists, format!("shared memory region '{name}' already in manager"))
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(Error::invalid_arg(format!(
            "invalid shared memory region name: it must be 1 to {MAX_NAME_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

/// The key without its leading `/`s, when it names one plain object in the shared-memory file system
/// (Triton's texts; the last one is Rampart's stricter check, worded like them).
fn check_key<'k>(name: &str, key: &'k str) -> Result<&'k str> {
    let plain = key.trim_start_matches('/');
    if plain.is_empty() {
        return Err(Error::invalid_arg(format!(
            "cannot register shared memory region '{name}' - invalid shm key '{key}'"
        )));
    }
    if plain.starts_with(RESERVED_KEY_PREFIX) {
        return Err(Error::invalid_arg(format!(
            "cannot register shared memory region '{name}' with key '{key}' as the key contains the reserved prefix '{RESERVED_KEY_PREFIX}'"
        )));
    }
    if plain.len() > MAX_NAME_LEN
        || plain.contains('/')
        || plain == "."
        || plain == ".."
        || plain.chars().any(|c| c.is_control())
    {
        return Err(Error::invalid_arg(format!(
            "cannot register shared memory region '{name}' - invalid shm key '{}': a key is one name (at most {MAX_NAME_LEN} bytes, no '/' after the leading ones, no control characters)",
            key.escape_debug()
        )));
    }
    Ok(plain)
}

#[cfg(all(test, feature = "shm"))]
mod tests {
    use super::*;
    use crate::infer::{ParamValue, Parameters};

    struct Object(String);
    impl Object {
        fn new(tag: &str, len: u64) -> Object {
            let key = format!("rampart_unit_{}_{tag}", std::process::id());
            let fd = nix::sys::mman::shm_open(
                format!("/{key}").as_str(),
                nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_EXCL,
                nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
            )
            .unwrap();
            File::from(fd).set_len(len).unwrap();
            Object(key)
        }
    }
    impl Drop for Object {
        fn drop(&mut self) {
            let _ = nix::sys::mman::shm_unlink(format!("/{}", self.0).as_str());
        }
    }

    fn r(region: &str, offset: u64, byte_size: u64) -> ShmRef {
        ShmRef { region: region.into(), offset, byte_size }
    }

    #[test]
    fn disabled_by_default_refuses_everything_but_status() {
        let m = SharedMemory::new(false);
        assert_eq!(m.register("a", "/k", 0, 4).unwrap_err().code(), Code::Unsupported);
        assert_eq!(m.unregister(None).unwrap_err().code(), Code::Unsupported);
        assert_eq!(m.lease(&r("a", 0, 4)).unwrap_err().code(), Code::Unsupported);
        assert!(m.status(None).unwrap().is_empty());
    }

    #[test]
    fn keys_checked_before_opening() {
        let m = SharedMemory::new(true);
        assert_eq!(
            m.register("a", "///", 0, 4).unwrap_err().message(),
            "cannot register shared memory region 'a' - invalid shm key '///'"
        );
        let e = m.register("a", "//triton_python_backend_shm_region_1", 0, 4).unwrap_err();
        assert_eq!(
            e.message(),
            "cannot register shared memory region 'a' with key '//triton_python_backend_shm_region_1' as the key contains the reserved prefix 'triton_python_backend_shm_region_'"
        );
        assert_eq!(
            m.register("a", "/x\n", 0, 4).unwrap_err().message(),
            "cannot register shared memory region 'a' - invalid shm key '/x\\n': a key is one name (at most 255 bytes, no '/' after the leading ones, no control characters)"
        );
        for bad in ["/a/b", "/..", "/x\n", "/dev/../etc"] {
            assert_eq!(m.register("a", bad, 0, 4).unwrap_err().code(), Code::InvalidArg, "{bad}");
        }
        assert_eq!(
            m.register("a", "/rampart_no_such_object", 0, 4).unwrap_err().code(),
            Code::Internal
        );
        assert_eq!(m.register("", "/k", 0, 4).unwrap_err().code(), Code::InvalidArg);
    }

    #[test]
    fn bounds_checked_at_registration_and_use() {
        let obj = Object::new("bounds", 64);
        let m = SharedMemory::new(true);
        let key = format!("/{}", obj.0);
        for (off, size) in [(0, 65), (64, 1), (u64::MAX - 1, 4), (1, u64::MAX), (0, 0)] {
            let e = m.register("a", &key, off, size).unwrap_err();
            assert!(e.message().contains("invalid args"), "{off} {size}: {e}");
        }
        m.register("a", &key, 16, 32).unwrap();
        assert_eq!(m.register("a", &key, 0, 4).unwrap_err().code(), Code::AlreadyExists);
        assert!(m.lease(&r("a", 32, 1)).unwrap_err().message().starts_with("Invalid offset for"));
        assert!(
            m.lease(&r("a", u64::MAX - 31, 64))
                .unwrap_err()
                .message()
                .starts_with("Invalid offset for")
        );
        assert_eq!(
            m.lease(&r("a", 8, u64::MAX - 4)).unwrap_err().message(),
            "Integer overflow detected: byte_size (18446744073709551611) + offset (8) exceeds maximum value (18446744073709551615) for region 'a'"
        );
        assert!(
            m.lease(&r("a", 8, 25))
                .unwrap_err()
                .message()
                .starts_with("Invalid offset + byte size")
        );
        assert_eq!(m.lease(&r("b", 0, 1)).unwrap_err().code(), Code::NotFound);
        // The registration offset is applied once: region byte 0 is object byte 16.
        let lease = m.lease(&r("a", 8, 24)).unwrap();
        lease.write(&[7u8; 24]).unwrap();
        let whole = SharedMemory::new(true);
        whole.register("w", &key, 0, 64).unwrap();
        let all = whole.lease(&r("w", 0, 64)).unwrap().read().unwrap();
        assert_eq!(&all[..24], &[0u8; 24]);
        assert_eq!(&all[24..48], &[7u8; 24]);
        assert_eq!(&all[48..], &[0u8; 16]);
        assert!(lease.write(&[0u8; 25]).is_err());
    }

    #[test]
    fn unregister_keeps_leased_regions_open() {
        let obj = Object::new("refcount", 8);
        let m = SharedMemory::new(true);
        m.register("a", &format!("/{}", obj.0), 0, 8).unwrap();
        let lease = m.lease(&r("a", 0, 8)).unwrap();
        m.unregister(Some("a")).unwrap();
        assert_eq!(m.lease(&r("a", 0, 8)).unwrap_err().code(), Code::NotFound);
        assert!(m.status(None).unwrap().is_empty());
        lease.write(b"12345678").unwrap();
        assert_eq!(&lease.read().unwrap()[..], b"12345678");
        m.register("a", &format!("/{}", obj.0), 0, 8).unwrap();
        assert_eq!(m.status(Some("a")).unwrap()[0].byte_size, 8);
    }

    #[test]
    fn shrunk_object_is_an_error_not_a_crash() {
        let obj = Object::new("shrink", 64);
        let m = SharedMemory::new(true);
        let key = format!("/{}", obj.0);
        m.register("a", &key, 0, 64).unwrap();
        let fd = nix::sys::mman::shm_open(
            key.as_str(),
            nix::fcntl::OFlag::O_RDWR,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        File::from(fd).set_len(0).unwrap();
        let e = m.lease(&r("a", 0, 64)).unwrap().read().unwrap_err();
        assert!(e.message().contains("shrunk"), "{e}");
    }

    #[test]
    fn parameters_parsed() {
        let p = |pairs: &[(&str, ParamValue)]| {
            pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<Parameters>()
        };
        assert_eq!(ShmRef::from_parameters(&p(&[]), "input 'X'").unwrap(), None);
        let got = ShmRef::from_parameters(
            &p(&[
                ("shared_memory_region", ParamValue::String("r".into())),
                ("shared_memory_byte_size", ParamValue::Int(-1)),
            ]),
            "input 'X'",
        )
        .unwrap()
        .unwrap();
        assert_eq!(got, r("r", 0, u64::MAX));
        assert!(
            ShmRef::from_parameters(&p(&[("shared_memory_offset", ParamValue::Uint(0))]), "x")
                .is_err()
        );
        assert!(
            ShmRef::from_parameters(
                &p(&[("shared_memory_region", ParamValue::String("r".into()))]),
                "x"
            )
            .is_err()
        );
        assert!(
            ShmRef::from_parameters(
                &p(&[
                    ("shared_memory_region", ParamValue::Uint(1)),
                    ("shared_memory_byte_size", ParamValue::Uint(1))
                ]),
                "x"
            )
            .is_err()
        );
    }
}
