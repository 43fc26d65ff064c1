//! Tensors as they travel between layers: a name, a data type, a shape and the bytes in Triton's wire
//! layout (little-endian, row-major, no padding; BOOL one byte; BYTES as `u32 LE length + bytes` per element).

use bytes::Bytes;

use crate::{DataType, Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
    pub data: Bytes,
}

impl Tensor {
    pub fn new(name: impl Into<String>, datatype: DataType, shape: Vec<i64>, data: Bytes) -> Self {
        Tensor { name: name.into(), datatype, shape, data }
    }

    /// Builds a BYTES tensor from its elements.
    pub fn from_bytes_elements<E: AsRef<[u8]>>(
        name: impl Into<String>,
        shape: Vec<i64>,
        elements: &[E],
    ) -> Self {
        Tensor::new(name, DataType::Bytes, shape, Bytes::from(encode_bytes_elements(elements)))
    }

    /// Element count of the shape (validated at construction by the core).
    pub fn element_count(&self) -> u64 {
        self.shape.iter().map(|&d| d.max(0) as u64).product()
    }
}

/// A shape as Triton prints it: `[a,b]`, no spaces.
pub fn shape_str(shape: &[i64]) -> String {
    format!("[{}]", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","))
}

/// Rampart's detail after Triton's text: ` (model 'm')` / ` (FP32, model 'm')`, nothing when empty.
fn detail(parts: &[&str]) -> String {
    let parts: Vec<&str> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    if parts.is_empty() { String::new() } else { format!(" ({})", parts.join(", ")) }
}

fn model_part(model: Option<&str>) -> String {
    model.map(|m| format!("model '{m}'")).unwrap_or_default()
}

/// The number of elements of input `input`'s `shape`, or an error when a dimension is negative or the product
/// overflows (Triton's text; `model`, when known, is named after it).
pub fn element_count(shape: &[i64], input: &str, model: Option<&str>) -> Result<u64> {
    let mut count: u64 = 1;
    for &d in shape {
        if d < 0 {
            return Err(Error::invalid_arg(format!(
                "invalid shape {shape:?}: dimensions must not be negative"
            )));
        }
        count = count.checked_mul(d as u64).filter(|&c| c <= i64::MAX as u64).ok_or_else(|| {
            Error::invalid_arg(format!(
                "invalid shape for input '{input}': shape {} causes total element count to exceed maximum size of {}{}",
                shape_str(shape),
                i64::MAX,
                detail(&[&model_part(model)])
            ))
        })?;
    }
    Ok(count)
}

/// Byte size of `count` fixed-size elements of input `input`, overflow-checked (Triton's text, then the
/// datatype and `model` when known). `None` for BYTES.
pub fn fixed_byte_size(
    datatype: DataType,
    count: u64,
    input: &str,
    model: Option<&str>,
) -> Result<Option<u64>> {
    match datatype.element_size() {
        None => Ok(None),
        Some(sz) => count
            .checked_mul(sz as u64)
            .filter(|&b| b <= i64::MAX as u64)
            .map(Some)
            .ok_or_else(|| {
                Error::invalid_arg(format!(
                    "byte size overflow for input '{input}': element count ({count}) * data type size ({sz}) exceeds maximum allowed size ({}){}",
                    i64::MAX,
                    detail(&[&datatype.to_string(), &model_part(model)])
                ))
            }),
    }
}

/// Serializes BYTES elements in the wire layout.
pub fn encode_bytes_elements<E: AsRef<[u8]>>(elements: &[E]) -> Vec<u8> {
    let total: usize = elements.iter().map(|e| 4 + e.as_ref().len()).sum();
    let mut out = Vec::with_capacity(total);
    for e in elements {
        let e = e.as_ref();
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

/// Splits a serialized BYTES buffer into exactly `expected` elements. Each length prefix is checked against the
/// remaining buffer, so a hostile prefix can neither read past the end nor allocate.
pub fn split_bytes_elements<'a>(buf: &'a [u8], expected: u64, what: &str) -> Result<Vec<&'a [u8]>> {
    let mut out = Vec::with_capacity(expected.min(buf.len() as u64 / 4 + 1) as usize);
    let mut rest = buf;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(Error::invalid_arg(format!(
                "{what}: incomplete BYTES element length prefix ({} trailing bytes)",
                rest.len()
            )));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        rest = &rest[4..];
        if len > rest.len() {
            return Err(Error::invalid_arg(format!(
                "{what}: BYTES element {} declares {len} bytes but only {} remain",
                out.len(),
                rest.len()
            )));
        }
        out.push(&rest[..len]);
        rest = &rest[len..];
        if out.len() as u64 > expected {
            break;
        }
    }
    if out.len() as u64 != expected {
        return Err(Error::invalid_arg(format!(
            "{what}: expected {expected} BYTES elements, got {}{}",
            out.len(),
            if out.len() as u64 > expected { " or more" } else { "" }
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_count_overflow() {
        assert_eq!(element_count(&[2, 3], "x", None).unwrap(), 6);
        assert_eq!(element_count(&[], "x", None).unwrap(), 1);
        assert!(element_count(&[-1], "x", None).is_err());
        let e = element_count(&[i64::MAX, 2], "IN", None).unwrap_err();
        assert_eq!(
            e.message(),
            "invalid shape for input 'IN': shape [9223372036854775807,2] causes total element count to exceed maximum size of 9223372036854775807"
        );
        let e = element_count(&[i64::MAX, 2], "IN", Some("m")).unwrap_err();
        assert!(e.message().ends_with("maximum size of 9223372036854775807 (model 'm')"), "{e}");
        let e =
            fixed_byte_size(DataType::Fp64, (i64::MAX as u64) / 4, "IN", Some("m")).unwrap_err();
        assert_eq!(
            e.message(),
            "byte size overflow for input 'IN': element count (2305843009213693951) * data type size (8) exceeds maximum allowed size (9223372036854775807) (FP64, model 'm')"
        );
        let e = fixed_byte_size(DataType::Fp32, 1 << 62, "IN", None).unwrap_err();
        assert!(e.message().ends_with("(9223372036854775807) (FP32)"), "{e}");
        assert_eq!(fixed_byte_size(DataType::Fp32, 4, "x", None).unwrap(), Some(16));
        assert_eq!(fixed_byte_size(DataType::Bytes, 4, "x", None).unwrap(), None);
    }

    #[test]
    fn bytes_round_trip_and_hostile_prefixes() {
        let buf = encode_bytes_elements(&["ab", "", "xyz"]);
        let els = split_bytes_elements(&buf, 3, "input 'x'").unwrap();
        assert_eq!(els, vec![&b"ab"[..], b"", b"xyz"]);
        assert!(split_bytes_elements(&buf, 2, "x").is_err());
        assert!(split_bytes_elements(&buf, 4, "x").is_err());
        // length prefix past the end
        let bad = [0xff, 0xff, 0xff, 0xff, b'a'];
        assert!(split_bytes_elements(&bad, 1, "x").unwrap_err().message().contains("declares"));
        // truncated prefix
        assert!(
            split_bytes_elements(&[1, 0], 1, "x").unwrap_err().message().contains("incomplete")
        );
    }
}
