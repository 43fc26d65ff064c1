//! The HTTP JSON inference-request parser: the whole input is the request body, with no
//! `Inference-Header-Content-Length` (pure JSON). Whatever decodes is echoed back through the response encoder
//! and decoded again (see `rampart_http::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    rampart_http::fuzzing::decode_infer_request(body, None);
});
