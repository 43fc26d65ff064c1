//! The binary tensor extension: the first two input bytes (little-endian u16) choose the JSON header length,
//! the rest is the body (JSON header + binary tail). A header length past the body wraps around into it, so
//! every input reaches the splitter and the `binary_data_size` handling.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, body)) = data.split_first_chunk::<2>() else { return };
    let len = u16::from_le_bytes(*len) as usize % (body.len() + 1);
    // 0 is refused by the wrapper (the route sends it to the core's raw-request path).
    rampart_http::fuzzing::decode_infer_request(body, Some(len));
});
