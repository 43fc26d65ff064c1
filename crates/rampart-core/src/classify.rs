//! The classification extension (docs/protocol.md, "Classification"): an output requested with
//! `classification: k` is answered as the top `k` entries of each batch item, as BYTES
//! `"<value>:<index>[:<label>]"`, labels from the output's `label_filename`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use rampart_model_config::ModelConfig;
use rampart_types::tensor::encode_bytes_elements;
use rampart_types::wire::WireElement;
use rampart_types::{DataType, Error, Result, Tensor};

/// Largest output tensor (elements) classification sorts (CVE-2026-24146).
pub const MAX_ELEMENTS: u64 = 1_000_000;
/// Largest label file read at load.
pub const MAX_LABEL_FILE_BYTES: u64 = 16 << 20;

/// Labels per output name, read at load.
pub type Labels = BTreeMap<String, Vec<String>>;

/// Reads every output's `label_filename`. The path is relative to the model directory and must stay inside
/// it, through symbolic links too (CVE-2026-24147: a config uploaded with `../../etc/passwd` as its label
/// file would otherwise return that file's lines as labels).
pub(crate) fn load_labels(config: &ModelConfig, model_dir: &Path) -> Result<Labels> {
    let mut labels = Labels::new();
    for output in config.output.iter().filter(|o| !o.label_filename.is_empty()) {
        let file = &output.label_filename;
        let what =
            || format!("label_filename '{}' of output '{}'", file.escape_debug(), output.name);
        crate::repository::check_relative_path(file)
            .map_err(|e| Error::invalid_arg(format!("{}: {e}", what())))?;
        let root = model_dir.canonicalize().map_err(|e| {
            Error::invalid_arg(format!("{}: cannot resolve the model directory: {e}", what()))
        })?;
        let path = root.join(file).canonicalize().map_err(|e| {
            Error::invalid_arg(format!("{}: cannot open it in the model directory: {e}", what()))
        })?;
        if !path.starts_with(&root) || !path.is_file() {
            return Err(Error::invalid_arg(format!(
                "{}: it must name a file inside the model directory",
                what()
            )));
        }
        let mut text = String::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_LABEL_FILE_BYTES + 1).read_to_string(&mut text))
            .map_err(|e| {
                Error::invalid_arg(format!("{}: cannot read it as UTF-8 text: {e}", what()))
            })?;
        if text.len() as u64 > MAX_LABEL_FILE_BYTES {
            return Err(Error::invalid_arg(format!(
                "{}: larger than {MAX_LABEL_FILE_BYTES} bytes",
                what()
            )));
        }
        labels.insert(output.name.clone(), text.lines().map(str::to_string).collect());
    }
    Ok(labels)
}

/// The classification of output `t`: top `count` per batch item (`batching`: the first dimension is the
/// batch).
pub(crate) fn classify(
    t: &Tensor,
    count: u64,
    batching: bool,
    labels: Option<&[String]>,
) -> Result<Tensor> {
    let elements = t.element_count();
    if elements > MAX_ELEMENTS {
        return Err(Error::invalid_arg(format!(
            "classification output tensor too large: output '{}' has {elements} elements, more than {MAX_ELEMENTS}",
            t.name
        )));
    }
    let values = values(t)?;
    let batch = if batching { t.shape.first().copied().unwrap_or(1).max(0) as usize } else { 1 };
    let per = values.len().checked_div(batch).unwrap_or(0);
    let k = (count.min(per as u64)) as usize;
    let mut out = Vec::with_capacity(batch * k);
    for item in 0..batch {
        let row = &values[item * per..(item + 1) * per];
        let mut order: Vec<usize> = (0..per).collect();
        order.sort_by(|&a, &b| {
            row[b].0.partial_cmp(&row[a].0).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b))
        });
        for &idx in &order[..k] {
            let mut s = format!("{}:{idx}", row[idx].1);
            if let Some(label) = labels.and_then(|l| l.get(idx))
                && !label.is_empty()
            {
                s.push(':');
                s.push_str(label);
            }
            out.push(s);
        }
    }
    let shape = if batching { vec![batch as i64, k as i64] } else { vec![k as i64] };
    Ok(Tensor::new(t.name.clone(), DataType::Bytes, shape, encode_bytes_elements(&out).into()))
}

/// Each element as (sort key, text as C++ `std::to_string` writes it).
fn values(t: &Tensor) -> Result<Vec<(f64, String)>> {
    fn read<T: WireElement>(
        d: &[u8],
        f: impl Fn(T) -> (f64, String),
    ) -> Result<Vec<(f64, String)>> {
        d.chunks_exact(T::SIZE).map(|c| T::read(c).map(&f)).collect()
    }
    fn float(x: f64) -> String {
        if x.is_nan() {
            "nan".into()
        } else if x.is_infinite() {
            if x > 0.0 { "inf".into() } else { "-inf".into() }
        } else {
            format!("{x:.6}")
        }
    }
    let d = &t.data[..];
    match t.datatype {
        DataType::Uint8 => read(d, |x: u8| (x as f64, x.to_string())),
        DataType::Uint16 => read(d, |x: u16| (x as f64, x.to_string())),
        DataType::Uint32 => read(d, |x: u32| (x as f64, x.to_string())),
        DataType::Uint64 => read(d, |x: u64| (x as f64, x.to_string())),
        DataType::Int8 => read(d, |x: i8| (x as f64, x.to_string())),
        DataType::Int16 => read(d, |x: i16| (x as f64, x.to_string())),
        DataType::Int32 => read(d, |x: i32| (x as f64, x.to_string())),
        DataType::Int64 => read(d, |x: i64| (x as f64, x.to_string())),
        DataType::Fp32 => read(d, |x: f32| (x as f64, float(x as f64))),
        DataType::Fp64 => read(d, |x: f64| (x, float(x))),
        DataType::Bool | DataType::Bytes | DataType::Fp16 | DataType::Bf16 => {
            Err(Error::invalid_arg(format!(
                "class result not available for output due to unsupported type '{}'",
                t.datatype
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_types::tensor::split_bytes_elements;

    fn strings(t: &Tensor) -> Vec<String> {
        split_bytes_elements(&t.data, t.element_count(), "t")
            .unwrap()
            .iter()
            .map(|e| String::from_utf8(e.to_vec()).unwrap())
            .collect()
    }

    fn fp32(shape: Vec<i64>, v: &[f32]) -> Tensor {
        Tensor::new(
            "OUT",
            DataType::Fp32,
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().into(),
        )
    }

    #[test]
    fn top_k_per_batch_item_with_labels() {
        let t = fp32(vec![2, 3], &[0.1, 0.7, 0.2, 5.0, -1.0, 5.0]);
        let labels: Vec<String> = vec!["cat".into(), "dog".into()];
        let c = classify(&t, 2, true, Some(&labels)).unwrap();
        assert_eq!(c.shape, vec![2, 2]);
        assert_eq!(strings(&c), ["0.700000:1:dog", "0.200000:2", "5.000000:0:cat", "5.000000:2"]);
        let c = classify(&t, 10, false, None).unwrap();
        assert_eq!(c.shape, vec![6]);
        assert_eq!(strings(&c)[0], "5.000000:3");
    }

    #[test]
    fn integers_and_unsupported_types() {
        let t = Tensor::new(
            "O",
            DataType::Int32,
            vec![4],
            [3i32, -2, 9, 0].iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().into(),
        );
        assert_eq!(strings(&classify(&t, 2, false, None).unwrap()), ["9:2", "3:0"]);
        for dt in [DataType::Bytes, DataType::Fp16, DataType::Bf16, DataType::Bool] {
            let t = Tensor::new("O", dt, vec![0], Vec::<u8>::new().into());
            let e = classify(&t, 1, false, None).unwrap_err();
            assert_eq!(
                e.message(),
                format!("class result not available for output due to unsupported type '{dt}'")
            );
        }
    }

    #[test]
    fn too_large_refused() {
        let t = Tensor::new("O", DataType::Uint8, vec![1_000_001], vec![0u8; 1_000_001].into());
        assert!(
            classify(&t, 1, false, None)
                .unwrap_err()
                .message()
                .starts_with("classification output tensor too large")
        );
    }
}
