//! Triton's `ModelConfig`: the schema (written for Rampart in `proto/model_config.proto` with Triton's field
//! names and numbers), the `config.pbtxt` text-format parser and the JSON rendering served by the
//! model-configuration endpoint.
#![forbid(unsafe_code)]

use std::sync::LazyLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

/// Generated prost types (`package inference`).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/inference.rs"));
}

mod parameters;

pub use parameters::{KNOWN_PARAMETERS, parameter_suggestion};
pub use pb::ModelConfig;

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/model_config.fds"))[..])
        .expect("embedded descriptor set is valid")
});

/// The `inference.ModelConfig` message descriptor.
pub fn model_config_descriptor() -> MessageDescriptor {
    POOL.get_message_by_name("inference.ModelConfig").expect("ModelConfig in descriptor set")
}

/// A config parse failure, with the 1-based line and column when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", location.map(|(l, c)| format!("line {l}, column {c}: ")).unwrap_or_default())]
pub struct ConfigError {
    pub message: String,
    pub location: Option<(usize, usize)>,
}

/// A parsed config plus which top-level fields the text set explicitly (auto-complete needs to know).
#[derive(Debug, Clone)]
pub struct ParsedConfig {
    pub config: ModelConfig,
    dynamic: DynamicMessage,
}

impl ParsedConfig {
    /// Whether the text set `field` (a top-level ModelConfig field name) to a non-default value.
    pub fn has_field(&self, field: &str) -> bool {
        self.dynamic.has_field_by_name(field)
    }
}

/// Parses protobuf text format into a ModelConfig. Accepts Triton's usual `input [ { … } ]` list syntax
/// without a colon, which the text-format grammar allows for message fields.
pub fn parse_text(text: &str) -> Result<ParsedConfig, ConfigError> {
    let (normalized, inserted) = insert_list_colons(text);
    let dynamic = DynamicMessage::parse_text_format(model_config_descriptor(), &normalized)
        .map_err(|e| {
            use miette::Diagnostic;
            // Errors at the end of the input carry no span: point at the end.
            let offset = e
                .labels()
                .and_then(|mut l| l.next())
                .map(|l| l.offset())
                .or(Some(normalized.len()));
            let location = offset.map(|off| {
                let shift = inserted.iter().filter(|&&i| i < off).count();
                line_col(text, off.saturating_sub(shift))
            });
            ConfigError { message: with_suggestion(e.to_string()), location }
        })?;
    let config = dynamic.transcode_to::<ModelConfig>().map_err(|e| ConfigError {
        message: format!("cannot convert parsed config: {e}"),
        location: None,
    })?;
    Ok(ParsedConfig { config, dynamic })
}

/// "field 'max_batch_sise' not found for message 'inference.ModelConfig'" gains "; did you mean
/// 'max_batch_size'?" when a field of that message is at most two edits away.
fn with_suggestion(message: String) -> String {
    let parts = || {
        let rest = message.strip_prefix("field '")?;
        let (field, rest) = rest.split_once("' not found for message '")?;
        let descriptor = POOL.get_message_by_name(rest.strip_suffix('\'')?)?;
        let best = descriptor
            .fields()
            .map(|f| (edit_distance(field, f.name()), f.name().to_string()))
            .min()?;
        (best.0 <= 2).then_some(best.1)
    };
    match parts() {
        Some(name) => format!("{message}; did you mean '{name}'?"),
        None => message,
    }
}

/// Levenshtein distance of two short names.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(current + 1);
            prev = current;
        }
    }
    row[b.len()]
}

/// Parses the JSON form (protobuf JSON mapping, proto field names or camelCase) into a ModelConfig.
pub fn parse_json(text: &str) -> Result<ModelConfig, ConfigError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let dynamic = DynamicMessage::deserialize(model_config_descriptor(), &mut de).map_err(|e| {
        ConfigError { message: e.to_string(), location: Some((e.line(), e.column())) }
    })?;
    dynamic
        .transcode_to::<ModelConfig>()
        .map_err(|e| ConfigError { message: format!("cannot convert config: {e}"), location: None })
}

/// Renders a config as Triton's model-configuration endpoint does: proto field names, every primitive field
/// printed, 64-bit integers as JSON numbers.
pub fn to_json(config: &ModelConfig) -> serde_json::Value {
    let dynamic =
        DynamicMessage::decode(model_config_descriptor(), config.encode_to_vec().as_slice())
            .expect("a ModelConfig re-decodes against its own descriptor");
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("ModelConfig serializes to JSON")
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

/// Whether `name` is a message-typed field somewhere in the schema (so `name [ ]` may omit the colon).
fn is_message_field(name: &str) -> bool {
    POOL.all_messages().any(|m| {
        m.get_field_by_name(name)
            .is_some_and(|f| matches!(f.kind(), prost_reflect::Kind::Message(_)))
    })
}

/// Rewrites `name [` into `name: [` when the list holds messages (`[ {`, `[ <`) or is an empty list of a
/// message field (`input [ ]`): protobuf
/// text format makes the colon optional before a message value, and Triton's configs rely on it. Strings and
/// `#` comments are skipped. Returns the rewritten text and the offsets (in the new text) of inserted colons.
fn insert_list_colons(text: &str) -> (String, Vec<usize>) {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut inserted = Vec::new();
    let mut i = 0;
    let mut last_copied = 0;
    // skips whitespace and comments starting at j
    let skip_ws = |mut j: usize| {
        while j < b.len() {
            match b[j] {
                b' ' | b'\t' | b'\r' | b'\n' => j += 1,
                b'#' => {
                    while j < b.len() && b[j] != b'\n' {
                        j += 1;
                    }
                }
                _ => break,
            }
        }
        j
    };
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q && b[i] != b'\n' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                // An identifier preceded by a digit is part of a number (e.g. 1e5, 0x1f): not a field name.
                let after_number =
                    start > 0 && (b[start - 1].is_ascii_digit() || b[start - 1] == b'.');
                let j = skip_ws(i);
                if !after_number && j < b.len() && b[j] == b'[' {
                    let k = skip_ws(j + 1);
                    let message_list = k < b.len() && matches!(b[k], b'{' | b'<');
                    let empty_message_list =
                        k < b.len() && b[k] == b']' && is_message_field(&text[start..i]);
                    if message_list || empty_message_list {
                        out.push_str(&text[last_copied..i]);
                        inserted.push(out.len());
                        out.push(':');
                        last_copied = i;
                    }
                }
            }
            _ => i += 1,
        }
    }
    out.push_str(&text[last_copied..]);
    (out, inserted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelled_field_is_answered_with_the_nearest_one() {
        let e = parse_text("name: \"m\"\nmax_batch_sise: 8\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2, column 1: field 'max_batch_sise' not found for message 'inference.ModelConfig'; did \
             you mean 'max_batch_size'?"
        );
        let e = parse_text("input [ { name: \"a\" data_typ: TYPE_FP32 } ]").unwrap_err();
        assert!(e.message.ends_with("'inference.ModelInput'; did you mean 'data_type'?"), "{e}");
        let e = parse_text("completely_unknown: 1").unwrap_err();
        assert!(!e.message.contains("did you mean"), "{e}");
    }

    const SIMPLE: &str = r#"
name: "simple"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  {
    name: "INPUT0"   # a comment with input [ {
    data_type: TYPE_INT32
    dims: [ 16 ]
  },
  {
    name: "INPUT1"
    data_type: TYPE_INT32
    dims: [ 16 ]
  }
]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] } ]
instance_group [ { count: 2 kind: KIND_CPU } ]
version_policy: { specific { versions: [1, 3] } }
parameters { key: "engine" value: { string_value: "tract [ {" } }
"#;

    #[test]
    fn parses_triton_list_syntax() {
        let p = parse_text(SIMPLE).unwrap();
        let c = &p.config;
        assert_eq!(c.name, "simple");
        assert_eq!(c.max_batch_size, 8);
        assert_eq!(c.input.len(), 2);
        assert_eq!(c.input[1].name, "INPUT1");
        assert_eq!(c.input[0].dims, vec![16]);
        assert_eq!(c.output.len(), 1);
        assert_eq!(c.instance_group[0].count, 2);
        assert_eq!(c.parameters["engine"].string_value, "tract [ {");
        assert!(p.has_field("max_batch_size"));
        assert!(!p.has_field("backend"));
    }

    #[test]
    fn errors_carry_line_and_column() {
        let e = parse_text("name: \"x\"\ninput [ { name: \"a\" }, ]\nmax_batch_size: \"eight\"\n")
            .unwrap_err();
        assert!(e.location.is_some(), "{e}");
        let e = parse_text("name: \"x\"\nmax_batch_size: \"eight\"\n").unwrap_err();
        assert_eq!(e.location.map(|l| l.0), Some(2), "{e}");
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = parse_text("nope: 1").unwrap_err();
        assert!(e.message.contains("nope"), "{e}");
    }

    #[test]
    fn json_uses_proto_names_and_numbers() {
        let p = parse_text(SIMPLE).unwrap();
        let j = to_json(&p.config);
        assert_eq!(j["max_batch_size"], 8);
        assert_eq!(j["input"][0]["data_type"], "TYPE_INT32");
        assert_eq!(j["input"][0]["dims"], serde_json::json!([16]));
        assert_eq!(j["version_policy"]["specific"]["versions"], serde_json::json!([1, 3]));
        let back = parse_json(&j.to_string()).unwrap();
        assert_eq!(back, p.config);
    }

    #[test]
    fn colon_insertion_leaves_other_text_alone() {
        let (t, ins) =
            insert_list_colons("dims: [ 1 ] input [ {} ] s: \"a [ {\" output\n#c\n[ ] dims [ ]");
        assert_eq!(t, "dims: [ 1 ] input: [ {} ] s: \"a [ {\" output:\n#c\n[ ] dims [ ]");
        assert_eq!(ins.len(), 2);
    }
}
