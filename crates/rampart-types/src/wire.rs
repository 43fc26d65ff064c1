//! Conversions between the wire layout (little-endian, BOOL as one byte) and typed element vectors, for
//! engines whose APIs want typed buffers. One implementation per element type, shared by every engine.

use crate::{DataType, Error, Result};

/// A fixed-size element type of the wire layout.
pub trait WireElement: Sized + Copy + 'static {
    const DATATYPE: DataType;
    const SIZE: usize;
    fn read(chunk: &[u8]) -> Result<Self>;
    fn write(self, out: &mut Vec<u8>);
}

macro_rules! le_element {
    ($t:ty, $dt:expr) => {
        impl WireElement for $t {
            const DATATYPE: DataType = $dt;
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline]
            fn read(chunk: &[u8]) -> Result<Self> {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(chunk);
                Ok(<$t>::from_le_bytes(a))
            }
            #[inline]
            fn write(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}

le_element!(u8, DataType::Uint8);
le_element!(u16, DataType::Uint16);
le_element!(u32, DataType::Uint32);
le_element!(u64, DataType::Uint64);
le_element!(i8, DataType::Int8);
le_element!(i16, DataType::Int16);
le_element!(i32, DataType::Int32);
le_element!(i64, DataType::Int64);
le_element!(f32, DataType::Fp32);
le_element!(f64, DataType::Fp64);
le_element!(half::f16, DataType::Fp16);
le_element!(half::bf16, DataType::Bf16);

impl WireElement for bool {
    const DATATYPE: DataType = DataType::Bool;
    const SIZE: usize = 1;
    #[inline]
    fn read(chunk: &[u8]) -> Result<Self> {
        match chunk[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(Error::invalid_arg(format!("invalid BOOL byte {b}: must be 0 or 1"))),
        }
    }
    #[inline]
    fn write(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
}

/// Decodes a wire buffer into typed elements. The buffer length must be a multiple of the element size.
pub fn decode<T: WireElement>(buf: &[u8]) -> Result<Vec<T>> {
    if !buf.len().is_multiple_of(T::SIZE) {
        return Err(Error::invalid_arg(format!(
            "{} buffer of {} bytes is not a multiple of {}",
            T::DATATYPE,
            buf.len(),
            T::SIZE
        )));
    }
    buf.chunks_exact(T::SIZE).map(T::read).collect()
}

/// Encodes typed elements into the wire layout.
pub fn encode<T: WireElement>(elements: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(elements.len() * T::SIZE);
    for &e in elements {
        e.write(&mut out);
    }
    out
}

/// Calls `$body` with `$T` bound to the Rust element type of a fixed-size `DataType`; evaluates `$bytes` for
/// `DataType::Bytes`.
#[macro_export]
macro_rules! with_element_type {
    ($dt:expr, $T:ident => $body:expr, bytes => $bytes:expr) => {
        match $dt {
            $crate::DataType::Bool => {
                type $T = bool;
                $body
            }
            $crate::DataType::Uint8 => {
                type $T = u8;
                $body
            }
            $crate::DataType::Uint16 => {
                type $T = u16;
                $body
            }
            $crate::DataType::Uint32 => {
                type $T = u32;
                $body
            }
            $crate::DataType::Uint64 => {
                type $T = u64;
                $body
            }
            $crate::DataType::Int8 => {
                type $T = i8;
                $body
            }
            $crate::DataType::Int16 => {
                type $T = i16;
                $body
            }
            $crate::DataType::Int32 => {
                type $T = i32;
                $body
            }
            $crate::DataType::Int64 => {
                type $T = i64;
                $body
            }
            $crate::DataType::Fp16 => {
                type $T = $crate::half::f16;
                $body
            }
            $crate::DataType::Bf16 => {
                type $T = $crate::half::bf16;
                $body
            }
            $crate::DataType::Fp32 => {
                type $T = f32;
                $body
            }
            $crate::DataType::Fp64 => {
                type $T = f64;
                $body
            }
            $crate::DataType::Bytes => $bytes,
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = vec![1.5f32, -2.0, 3.25];
        assert_eq!(decode::<f32>(&encode(&v)).unwrap(), v);
        assert_eq!(decode::<bool>(&[0, 1]).unwrap(), vec![false, true]);
        assert!(decode::<bool>(&[2]).is_err());
        assert!(decode::<i32>(&[0, 0, 0]).is_err());
        let h = vec![half::f16::from_f32(0.5)];
        assert_eq!(decode::<half::f16>(&encode(&h)).unwrap(), h);
    }
}
