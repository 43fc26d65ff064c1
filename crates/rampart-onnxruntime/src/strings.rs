//! BYTES elements as ONNX Runtime string tensors, byte for byte.
//!
//! An ONNX Runtime string element is a C++ `std::string`, which holds any bytes, NUL and invalid UTF-8 included.
//! `ort`'s own conversions do not: `Tensor::from_string_array` copies each element into a `CString` for
//! `FillStringTensor` (a NUL is an error, and ONNX Runtime would stop at it anyway), and its string extraction
//! insists on UTF-8. So this module talks to the length-aware C API directly:
//!
//! * inputs: `ort`'s safe `DynTensor::new` creates the tensor (`CreateTensorAsOrtValue` with the STRING element
//!   type, every element an empty `std::string`), then each element is sized with
//!   `GetResizedStringTensorElementBuffer` and its bytes copied in;
//! * outputs: `GetStringTensorDataLength` and `GetStringTensorContent` copy every element into one Rust buffer
//!   with one start offset per element; the offsets are checked before any slicing.
//!
//! This is the only module of the crate that may use `unsafe`. Every status an ONNX Runtime function returns is
//! checked and becomes a Rampart error; element counts come from the shape, computed with checked arithmetic, and
//! ONNX Runtime checks the index, the offsets length and the buffer size against the tensor itself as well.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::ffi::c_char;
use std::ptr;

use ort::AsPointer;
use ort::memory::Allocator;
use ort::value::{DynTensor, DynValue, TensorElementType, ValueType};
use rampart_types::{Error, Result};

/// The number of elements of `shape`: every dimension non-negative, the product without overflow.
fn element_count(shape: &[i64], what: &str) -> Result<usize> {
    shape.iter().try_fold(1usize, |n, &d| {
        usize::try_from(d).ok().and_then(|d| n.checked_mul(d)).ok_or_else(|| {
            Error::internal(format!("{what}: invalid string tensor shape {shape:?}"))
        })
    })
}

/// Turns an ONNX Runtime status into a Rampart error (`Ok` for the null status); the status is released.
fn check(status: ort::sys::OrtStatusPtr, what: &str, call: &str) -> Result<()> {
    // SAFETY: `status` was returned just now by an `OrtApi` function and is used nowhere else; it is either null
    // (success) or a status `result_from_status` takes ownership of (the `ort::Error` releases it when dropped).
    unsafe { ort::Error::result_from_status(status) }
        .map_err(|e| Error::internal(format!("{what}: ONNX Runtime {call} failed: {e}")))
}

/// Sets element `index` of the string tensor `value` to `bytes`.
fn set_element(value: &mut DynTensor, index: usize, bytes: &[u8], what: &str) -> Result<()> {
    let mut buf: *mut c_char = ptr::null_mut();
    // SAFETY: `value.ptr_mut()` is the live `OrtValue` that `value` owns, and `&mut value` means nothing else uses
    // it during the call; `buf` is a valid place for the out-pointer. ONNX Runtime checks that the value is a
    // string tensor and that `index` is in bounds (an error status otherwise), resizes that element's
    // `std::string` to `bytes.len()` bytes and stores its data pointer in `buf`.
    let status = unsafe {
        (ort::api().GetResizedStringTensorElementBuffer)(
            value.ptr_mut(),
            index,
            bytes.len(),
            &mut buf,
        )
    };
    check(status, what, "GetResizedStringTensorElementBuffer")?;
    if bytes.is_empty() {
        return Ok(());
    }
    if buf.is_null() {
        return Err(Error::internal(format!(
            "{what}: ONNX Runtime returned no buffer for string element {index}"
        )));
    }
    // SAFETY: after the successful call above, `buf` points to the first of `bytes.len()` writable bytes (the
    // resized `std::string`'s storage), which stay valid until the element is resized again or the tensor is
    // released, neither of which happens before this copy. `bytes` is Rust memory, so the two ranges cannot
    // overlap, and `u8`/`c_char` have alignment 1.
    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), bytes.len()) };
    Ok(())
}

/// An ONNX Runtime string tensor of `shape` whose elements are `elements`, byte for byte (NUL bytes and
/// invalid UTF-8 included). `what` names the input in errors.
pub(crate) fn string_tensor(shape: &[i64], elements: &[&[u8]], what: &str) -> Result<DynTensor> {
    let count = element_count(shape, what)?;
    if count != elements.len() {
        return Err(Error::internal(format!(
            "{what}: shape {shape:?} holds {count} string elements, got {}",
            elements.len()
        )));
    }
    let mut value =
        DynTensor::new(&Allocator::default(), TensorElementType::String, shape.to_vec())
            .map_err(|e| Error::internal(format!("onnxruntime cannot create {what}: {e}")))?;
    for (i, e) in elements.iter().enumerate() {
        set_element(&mut value, i, e, what)?;
    }
    Ok(value)
}

/// The shape and serialized BYTES elements (4-byte little-endian length, then the bytes) of the string tensor
/// `v`, byte for byte. `what` names the output in errors.
pub(crate) fn string_elements(v: &DynValue, what: &str) -> Result<(Vec<i64>, Vec<u8>)> {
    let shape: Vec<i64> = match v.dtype() {
        ValueType::Tensor { ty: TensorElementType::String, shape, .. } => {
            shape.iter().copied().collect()
        }
        other => return Err(Error::internal(format!("{what}: {other:?} is not a string tensor"))),
    };
    let count = element_count(&shape, what)?;
    if count == 0 {
        return Ok((shape, Vec::new()));
    }
    let mut total = 0usize;
    // SAFETY: `v.ptr()` is the live `OrtValue` that `v` owns (borrowed for the call, so it cannot be released);
    // `total` is a valid place for the result. ONNX Runtime checks the value is a string tensor.
    let status = unsafe { (ort::api().GetStringTensorDataLength)(v.ptr(), &mut total) };
    check(status, what, "GetStringTensorDataLength")?;
    let mut contents = vec![0u8; total];
    let mut offsets = vec![0usize; count];
    if total > 0 {
        // SAFETY: `contents` is `total` writable bytes and `offsets` `count` writable `usize`s, both non-null
        // (non-empty `Vec`s) and passed with exactly those lengths. ONNX Runtime refuses (error status, nothing
        // written) unless `count` equals the tensor's element count and `total` is at least the sum of the
        // element lengths; then it writes at most `total` bytes and exactly `count` offsets. `v` is borrowed for
        // the call, so the value stays alive and unchanged.
        let status = unsafe {
            (ort::api().GetStringTensorContent)(
                v.ptr(),
                contents.as_mut_ptr().cast(),
                total,
                offsets.as_mut_ptr(),
                count,
            )
        };
        check(status, what, "GetStringTensorContent")?;
    }
    // (With `total == 0` every element is empty: all offsets are 0, as `offsets` already says.)
    let mut out = Vec::with_capacity(total.saturating_add(count.saturating_mul(4)));
    for i in 0..count {
        let start = offsets[i];
        let end = offsets.get(i + 1).copied().unwrap_or(total);
        let element = contents.get(start..end).ok_or_else(|| {
            Error::internal(format!(
                "{what}: ONNX Runtime returned inconsistent string offsets ({start}..{end} of {total} bytes)"
            ))
        })?;
        let len = u32::try_from(element.len()).map_err(|_| {
            Error::internal(format!(
                "{what}: string element {i} is longer than a BYTES element can be"
            ))
        })?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(element);
    }
    Ok((shape, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_types::tensor::{encode_bytes_elements, split_bytes_elements};
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;

    /// ONNX Runtime, loaded once per test binary from `ORT_DYLIB_PATH` or `third_party/onnxruntime` (as
    /// scripts/setup.sh installs it); `None` (the test is skipped, saying so) when neither has the library.
    fn ort_loaded() -> Option<&'static crate::OrtEngine> {
        static ENGINE: OnceLock<Option<crate::OrtEngine>> = OnceLock::new();
        ENGINE
            .get_or_init(|| {
                let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
                let lib = std::env::var_os("ORT_DYLIB_PATH")
                    .map(PathBuf::from)
                    .or_else(|| crate::locate_library(&root.join("third_party/onnxruntime")))?;
                Some(
                    crate::OrtEngine::init(Path::new("."), Some(&lib), Default::default())
                        .expect("ONNX Runtime loads"),
                )
            })
            .as_ref()
            .or_else(|| {
                eprintln!(
                    "skipped: no ONNX Runtime library (set ORT_DYLIB_PATH or run scripts/setup.sh)"
                );
                None
            })
    }

    const AWKWARD: [&[u8]; 7] = [
        b"a\x00b",
        b"\x00",
        b"",
        b"tail\x00",
        b"\xff\xfe not UTF-8",
        b"\x00\x00\x00",
        "\u{2603}".as_bytes(),
    ];

    #[test]
    fn bytes_round_trip_through_a_string_tensor() {
        if ort_loaded().is_none() {
            return;
        }
        for (shape, els) in [
            (vec![1i64, 7], &AWKWARD[..]),
            (vec![7], &AWKWARD[..]),
            (vec![], &AWKWARD[..1]),
            (vec![2, 0], &[][..]),
            (vec![3], &[&b""[..], b"", b""][..]),
        ] {
            let t = string_tensor(&shape, els, "input 'x'").unwrap();
            let (got_shape, wire) = string_elements(&t.into_dyn(), "output 'x'").unwrap();
            assert_eq!(got_shape, shape);
            assert_eq!(wire, encode_bytes_elements(els), "{els:?}");
        }
    }

    #[test]
    fn counts_are_checked_before_onnx_runtime_is_asked() {
        if ort_loaded().is_none() {
            return;
        }
        let two: [&[u8]; 2] = [b"a", b"b"];
        for shape in [vec![3i64], vec![-1], vec![i64::MAX, i64::MAX], vec![1]] {
            let e = string_tensor(&shape, &two, "input 'x'").unwrap_err();
            assert!(e.message().contains("input 'x'"), "{}", e.message());
        }
    }

    #[test]
    fn onnx_runtime_statuses_become_errors() {
        if ort_loaded().is_none() {
            return;
        }
        let mut t = string_tensor(&[2], &[b"a", b"b"], "input 'x'").unwrap();
        let e = set_element(&mut t, 2, b"c", "input 'x'").unwrap_err();
        assert!(
            e.message().contains("GetResizedStringTensorElementBuffer")
                && e.message().contains("out of bounds"),
            "{}",
            e.message()
        );
        let numbers = ort::value::Tensor::from_array((vec![2i64], vec![1.0f32, 2.0])).unwrap();
        let e = string_elements(&numbers.into_dyn(), "output 'y'").unwrap_err();
        assert!(e.message().contains("output 'y'"), "{}", e.message());
    }

    /// The whole engine path: the example ONNX Identity over strings returns every byte it was given.
    #[test]
    fn identity_model_returns_nul_and_non_utf8_bytes() {
        use rampart_types::{DataType, Engine, InstanceSpec, Tensor};
        let Some(engine) = ort_loaded() else { return };
        let model = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/models/identity_bytes/1/model.onnx");
        let spec = InstanceSpec {
            model_name: "identity_bytes".into(),
            version: 1,
            model_file: model,
            ..Default::default()
        };
        let mut instance = engine.load(&spec).unwrap();
        let input = Tensor::new(
            "INPUT0",
            DataType::Bytes,
            vec![1, AWKWARD.len() as i64],
            encode_bytes_elements(&AWKWARD).into(),
        );
        let out = instance.execute(&[input], &["OUTPUT0".to_string()]).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].datatype, DataType::Bytes);
        assert_eq!(out[0].shape, vec![1, AWKWARD.len() as i64]);
        let got = split_bytes_elements(&out[0].data, AWKWARD.len() as u64, "OUTPUT0").unwrap();
        assert_eq!(got, AWKWARD);
    }
}
