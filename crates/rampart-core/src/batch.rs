//! Gathering the inputs of a dynamic batch and splitting its outputs back by rows.

use bytes::{Bytes, BytesMut};
use rampart_types::{Error, Result, Tensor};

/// Concatenates input `i` of every request along the batch dimension (`size` rows in all).
pub(crate) fn gather<'a>(
    parts: impl Iterator<Item = &'a [Tensor]> + Clone,
    size: u64,
) -> Vec<Tensor> {
    let Some(first) = parts.clone().next() else { return vec![] };
    (0..first.len())
        .map(|i| {
            let head = &first[i];
            let mut data = BytesMut::with_capacity(parts.clone().map(|p| p[i].data.len()).sum());
            for p in parts.clone() {
                data.extend_from_slice(&p[i].data);
            }
            let mut shape = head.shape.clone();
            shape[0] = size as i64;
            Tensor::new(head.name.clone(), head.datatype, shape, data.freeze())
        })
        .collect()
}

/// Splits each output of a batch by rows: `rows[k]` rows for job `k`, in order.
pub(crate) fn scatter(outputs: Vec<Tensor>, rows: &[u64]) -> Result<Vec<Vec<Tensor>>> {
    let total: u64 = rows.iter().sum();
    let mut per_job: Vec<Vec<Tensor>> =
        rows.iter().map(|_| Vec::with_capacity(outputs.len())).collect();
    for out in outputs {
        if out.shape.first().copied() != Some(total as i64) {
            return Err(Error::internal(format!(
                "output '{}' of a batch of {total} has shape {:?}: its first dimension must be the batch",
                out.name, out.shape
            )));
        }
        let offsets = row_offsets(&out, total)?;
        let mut row = 0usize;
        for (k, &n) in rows.iter().enumerate() {
            let (from, to) = (offsets[row], offsets[row + n as usize]);
            let mut shape = out.shape.clone();
            shape[0] = n as i64;
            per_job[k].push(Tensor::new(
                out.name.clone(),
                out.datatype,
                shape,
                out.data.slice(from..to),
            ));
            row += n as usize;
        }
    }
    Ok(per_job)
}

/// Byte offset of each row boundary (`total + 1` entries) of a tensor in wire layout.
fn row_offsets(t: &Tensor, total: u64) -> Result<Vec<usize>> {
    let bad = || Error::internal(format!("output '{}' does not hold {total} rows", t.name));
    let per_row: u64 = t.shape[1..].iter().map(|&d| d.max(0) as u64).product();
    match t.datatype.element_size() {
        Some(size) => {
            let row_bytes = (per_row as usize).checked_mul(size).ok_or_else(bad)?;
            if row_bytes.checked_mul(total as usize) != Some(t.data.len()) {
                return Err(bad());
            }
            Ok((0..=total as usize).map(|r| r * row_bytes).collect())
        }
        None => {
            // BYTES: walk the length prefixes, noting where each row of `per_row` elements ends.
            let data: &Bytes = &t.data;
            let mut offsets = Vec::with_capacity(total as usize + 1);
            offsets.push(0);
            let mut at = 0usize;
            for _ in 0..total {
                for _ in 0..per_row {
                    let len = data.get(at..at + 4).ok_or_else(bad)?;
                    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
                    at = at.checked_add(4 + len).filter(|&e| e <= data.len()).ok_or_else(bad)?;
                }
                offsets.push(at);
            }
            if at != data.len() {
                return Err(bad());
            }
            Ok(offsets)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_checks_the_batch_dimension() {
        let t = Tensor::new(
            "y",
            rampart_types::DataType::Int32,
            vec![3, 2],
            Bytes::from(vec![0u8; 24]),
        );
        let parts = scatter(vec![t.clone()], &[1, 2]).unwrap();
        assert_eq!(parts[0][0].shape, vec![1, 2]);
        assert_eq!(parts[1][0].data.len(), 16);
        assert!(scatter(vec![t.clone()], &[1, 1]).is_err());
        let short = Tensor::new(
            "y",
            rampart_types::DataType::Int32,
            vec![3, 2],
            Bytes::from(vec![0u8; 20]),
        );
        assert!(scatter(vec![short], &[1, 2]).is_err());
        let b = Tensor::from_bytes_elements("y", vec![2, 1], &["ab", "c"]);
        let parts = scatter(vec![b], &[1, 1]).unwrap();
        assert_eq!(&parts[1][0].data[..], &[1, 0, 0, 0, b'c']);
    }

    #[test]
    fn gather_concatenates_each_input_along_the_batch_dimension() {
        let a = [Tensor::from_bytes_elements("s", vec![1, 2], &["a", "bc"])];
        let b = [Tensor::from_bytes_elements("s", vec![2, 2], &["d", "", "ef", "g"])];
        let all = gather([&a[..], &b[..]].into_iter(), 3);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].shape, vec![3, 2]);
        assert_eq!(
            all[0],
            Tensor::from_bytes_elements("s", vec![3, 2], &["a", "bc", "d", "", "ef", "g"])
        );
        let back = scatter(all, &[1, 2]).unwrap();
        assert_eq!((back[0][0].clone(), back[1][0].clone()), (a[0].clone(), b[0].clone()));
    }
}
