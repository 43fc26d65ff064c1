//! The response cache (`--cache-config local,size=N`, model config `response_cache { enable: true }`): a
//! size-bounded concurrent cache (moka, TinyLFU admission with LRU eviction) of engine outputs, keyed by
//! model, version, the requested outputs and a SHA-256 of every input's name, datatype, shape and data.
//! The key is a cryptographic hash so that a client cannot craft a request that collides with another
//! client's and read its answer.

use std::sync::Arc;

use rampart_types::Tensor;

/// Bytes charged per cached tensor on top of its data (name, shape, bookkeeping).
const TENSOR_OVERHEAD: u64 = 128;

pub type CacheKey = [u8; 32];

#[derive(Clone)]
pub struct ResponseCache {
    entries: moka::sync::Cache<CacheKey, Arc<Vec<Tensor>>>,
    capacity: u64,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResponseCache({} bytes)", self.capacity)
    }
}

fn weight(outputs: &[Tensor]) -> u64 {
    outputs.iter().map(|t| t.data.len() as u64 + t.name.len() as u64 + TENSOR_OVERHEAD).sum()
}

impl ResponseCache {
    /// A cache holding at most `capacity` bytes of outputs.
    pub fn new(capacity: u64) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(|_: &CacheKey, v: &Arc<Vec<Tensor>>| {
                u32::try_from(weight(v)).unwrap_or(u32::MAX)
            })
            .build();
        ResponseCache { entries, capacity }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn get(&self, key: &CacheKey) -> Option<Arc<Vec<Tensor>>> {
        self.entries.get(key)
    }

    /// Stores `outputs` unless they alone exceed the cache.
    pub fn insert(&self, key: CacheKey, outputs: Arc<Vec<Tensor>>) {
        if weight(&outputs) <= self.capacity {
            self.entries.insert(key, outputs);
        }
    }

    /// Bytes in use (after pending maintenance), for tests and reports.
    pub fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }
}

/// The key of a request: every field is length-prefixed so that no two different requests hash the same
/// bytes.
pub fn key(model: &str, version: i64, inputs: &[Tensor], outputs: &[String]) -> CacheKey {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    let mut field = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(model.as_bytes());
    field(&version.to_le_bytes());
    field(&(inputs.len() as u64).to_le_bytes());
    for t in inputs {
        field(t.name.as_bytes());
        field(t.datatype.as_str().as_bytes());
        let shape: Vec<u8> = t.shape.iter().flat_map(|d| d.to_le_bytes()).collect();
        field(&shape);
        field(&t.data);
    }
    field(&(outputs.len() as u64).to_le_bytes());
    for o in outputs {
        field(o.as_bytes());
    }
    let mut k = [0u8; 32];
    k.copy_from_slice(h.finish().as_ref());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rampart_types::DataType;

    fn t(name: &str, data: &[u8]) -> Tensor {
        Tensor::new(name, DataType::Uint8, vec![data.len() as i64], Bytes::copy_from_slice(data))
    }

    #[test]
    fn keys_separate_every_field() {
        let base = key("m", 1, &[t("a", b"xy")], &["o".into()]);
        assert_eq!(base, key("m", 1, &[t("a", b"xy")], &["o".into()]));
        assert_ne!(base, key("m", 2, &[t("a", b"xy")], &["o".into()]));
        assert_ne!(base, key("n", 1, &[t("a", b"xy")], &["o".into()]));
        assert_ne!(base, key("m", 1, &[t("a", b"xz")], &["o".into()]));
        assert_ne!(base, key("m", 1, &[t("b", b"xy")], &["o".into()]));
        assert_ne!(base, key("m", 1, &[t("a", b"xy")], &[]));
        // Moving bytes between adjacent fields changes the key (length prefixes).
        assert_ne!(
            key("m", 1, &[t("a", b"b"), t("c", b"")], &[]),
            key("m", 1, &[t("a", b""), t("bc", b"")], &[])
        );
    }

    #[test]
    fn bounded_by_bytes() {
        let c = ResponseCache::new(4096);
        let big = Arc::new(vec![t("o", &[0u8; 5000])]);
        c.insert([1; 32], big);
        assert!(c.get(&[1; 32]).is_none(), "larger than the whole cache");
        for i in 0..64u8 {
            c.insert([i; 32], Arc::new(vec![t("o", &[i; 400])]));
        }
        assert!(c.weighted_size() <= 4096, "{}", c.weighted_size());
    }
}
