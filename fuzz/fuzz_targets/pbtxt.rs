//! The config.pbtxt text-format parser on arbitrary UTF-8. A config that parses must render to JSON (the
//! model-configuration endpoint's form) and parse back from it to the same config, and must render to text
//! format and parse back from that too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use prost_reflect::DynamicMessage;
use rampart_model_config::{model_config_descriptor, parse_json, parse_text, to_json};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(parsed) = parse_text(text) else { return };
    let config = &parsed.config;
    // Compared as JSON values: NaN != NaN in the structs, and map fields have no byte order.
    let json = to_json(config);
    let back = parse_json(&json.to_string())
        .unwrap_or_else(|e| panic!("rendered JSON does not parse: {e}\n{json}"));
    assert_eq!(to_json(&back), json, "JSON round trip changed the config");

    let dynamic =
        DynamicMessage::decode(model_config_descriptor(), config.encode_to_vec().as_slice())
            .unwrap();
    let rendered = dynamic.to_text_format();
    let again = parse_text(&rendered)
        .unwrap_or_else(|e| panic!("rendered text does not parse: {e}\n{rendered}"));
    assert_eq!(to_json(&again.config), json, "text round trip changed the config\n{rendered}");
});
