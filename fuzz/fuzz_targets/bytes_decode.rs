//! The BYTES wire decoder (`u32 LE length + bytes` per element). The first byte chooses the expected element
//! count (below 0xF0: that count; otherwise the next 8 bytes as a u64, so huge counts are tried too); the rest
//! is the buffer. Checked against a reference reading of the layout, and whatever splits must re-encode to the
//! same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_types::tensor::{encode_bytes_elements, split_bytes_elements};

/// The elements of a well-formed buffer, or `None` when a prefix is cut short or overruns.
fn reference(mut buf: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (len, rest) = buf.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return None;
        }
        let (el, rest) = rest.split_at(len);
        out.push(el);
        buf = rest;
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let (expected, buf) = if first < 0xF0 {
        (first as u64, rest)
    } else {
        let n = rest.len().min(8);
        let mut le = [0u8; 8];
        le[..n].copy_from_slice(&rest[..n]);
        (u64::from_le_bytes(le), &rest[n..])
    };
    let got = split_bytes_elements(buf, expected, "fuzz");
    let want = reference(buf).filter(|els| els.len() as u64 == expected);
    match (&got, &want) {
        (Ok(els), Some(w)) => assert_eq!(els, w, "split disagrees with the reference"),
        (Err(_), None) => {}
        _ => panic!("split_bytes_elements({expected}) = {got:?}, reference = {want:?}"),
    }
    if let Ok(els) = got {
        assert_eq!(
            encode_bytes_elements(&els),
            buf,
            "split elements do not re-encode to the same bytes"
        );
    }
});
