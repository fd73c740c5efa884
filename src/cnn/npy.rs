//! Reading and writing `.npy` files of little-endian f32 in C order (NumPy format versions 1–3).

use crate::error::{Error, Result};
use std::path::Path;

/// An f32 array: shape and C-order data.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Read an `.npy` file holding `<f4` data in C order.
pub fn read(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    parse(&bytes).map_err(|m| Error::file(path, m))
}

/// Parse `.npy` bytes; the error is a message without the file name.
pub fn parse(bytes: &[u8]) -> Result<Array, String> {
    let (descr, shape, body) = parse_header(bytes)?;
    if !(descr.starts_with("'<f4'") || descr.starts_with("'float32'")) {
        let d: String = descr.chars().take_while(|&c| c != ',').collect();
        return Err(format!(
            "data type {d} is not supported: only little-endian float32 ('<f4')"
        ));
    }
    let n: usize = shape.iter().product();
    if body.len() != n * 4 {
        return Err(format!(
            "shape {shape:?} needs {} bytes of data, the file has {}",
            n * 4,
            body.len()
        ));
    }
    let data = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Array { shape, data })
}

/// Read an `.npy` file of integers: little-endian int64 or int32, or float32 holding whole numbers.
/// Returns the shape and the values in C order.
pub fn read_integers(path: &Path) -> Result<(Vec<usize>, Vec<i64>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let (descr, shape, body) = parse_header(&bytes).map_err(|m| Error::file(path, m))?;
    let n: usize = shape.iter().product();
    let d: String = descr.chars().take_while(|&c| c != ',').collect();
    let width = match d.as_str() {
        "'<i8'" | "'int64'" => 8,
        "'<i4'" | "'int32'" | "'<f4'" | "'float32'" => 4,
        _ => {
            return Err(Error::file(
                path,
                format!("data type {d} is not supported: expected int64, int32 or float32"),
            ))
        }
    };
    if body.len() != n * width {
        return Err(Error::file(
            path,
            format!(
                "shape {shape:?} needs {} bytes of data, the file has {}",
                n * width,
                body.len()
            ),
        ));
    }
    let mut values = Vec::with_capacity(n);
    for (i, c) in body.chunks_exact(width).enumerate() {
        let v = match d.as_str() {
            "'<i8'" | "'int64'" => {
                i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
            }
            "'<i4'" | "'int32'" => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64,
            _ => {
                let f = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                if f.fract() != 0.0 || !f.is_finite() {
                    return Err(Error::file(
                        path,
                        format!("value {f} at index {i} is not a whole number"),
                    ));
                }
                f as i64
            }
        };
        values.push(v);
    }
    Ok((shape, values))
}

/// The header fields (`descr` text, shape) and the data bytes of an `.npy` file.
fn parse_header(bytes: &[u8]) -> Result<(String, Vec<usize>, &[u8]), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let major = bytes[6];
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated .npy header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes
        .get(start..start + hlen)
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
    let field = |key: &str| -> Result<&str, String> {
        let at = header
            .find(&format!("'{key}'"))
            .ok_or(format!("the .npy header has no '{key}'"))?;
        let rest = header[at + key.len() + 2..].trim_start();
        Ok(rest
            .strip_prefix(':')
            .ok_or(format!("bad '{key}' in the .npy header"))?
            .trim_start())
    };
    let descr = field("descr")?.to_string();
    if field("fortran_order")?.starts_with("True") {
        return Err("Fortran-order arrays are not supported: save in C order".into());
    }
    let sh = field("shape")?;
    let sh = sh.strip_prefix('(').ok_or("bad shape in the .npy header")?;
    let sh = &sh[..sh.find(')').ok_or("bad shape in the .npy header")?];
    let shape: Vec<usize> = sh
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad dimension {s:?} in the .npy header"))
        })
        .collect::<Result<_, _>>()?;
    shape
        .iter()
        .try_fold(1usize, |a, &d| {
            a.checked_mul(d.max(1)).and_then(|v| v.checked_mul(8))
        })
        .ok_or("shape too large")?;
    Ok((descr, shape, &bytes[start + hlen..]))
}

/// Encode an f32 array as `.npy` (version 1.0).
pub fn encode(a: &Array) -> Vec<u8> {
    let shape = match a.shape.len() {
        1 => format!("({},)", a.shape[0]),
        _ => format!(
            "({})",
            a.shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + a.data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in &a.data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Write an f32 array to an `.npy` file.
pub fn write(path: &Path, a: &Array) -> Result<()> {
    std::fs::write(path, encode(a)).map_err(|e| Error::file(path, format!("cannot write: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let a = Array {
            shape: vec![2, 3],
            data: vec![1.0, -2.0, 3.5, 0.0, 1e-7, 9.0],
        };
        let bytes = encode(&a);
        assert_eq!((bytes.len() - a.data.len() * 4) % 64, 0);
        assert_eq!(parse(&bytes).unwrap(), a);
        let v = Array {
            shape: vec![4],
            data: vec![1.0; 4],
        };
        assert_eq!(parse(&encode(&v)).unwrap(), v);
    }

    #[test]
    fn refuses_bad_files() {
        assert!(parse(b"hello").unwrap_err().contains("magic"));
        let mut b = encode(&Array {
            shape: vec![3],
            data: vec![1.0; 3],
        });
        b.truncate(b.len() - 1);
        assert!(parse(&b).unwrap_err().contains("needs 12 bytes"));
        let h =
            b"\x93NUMPY\x01\x00\x3a\x00{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }\n";
        assert!(parse(h).unwrap_err().contains("<f8"));
    }
}
