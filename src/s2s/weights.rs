//! Hugging Face checkpoints: `model.safetensors` (or shards listed in `model.safetensors.index.json`),
//! memory-mapped, with tensors converted at load time to the kernels' formats.
//!
//! Every failure names the file and, where there is one, the tensor: a missing tensor, a shape that differs from
//! what the config implies, an unsupported dtype, a truncated or corrupt file.

use crate::kernels::quant::{DType, Weights};
use crate::{Error, Result};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

struct Shard {
    path: PathBuf,
    mmap: Mmap,
    /// Start of the data section (8 + header length).
    data_start: usize,
    meta: Metadata,
}

/// The tensors of a checkpoint directory, memory-mapped.
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<Shard>,
    /// Tensor name → shard index.
    index: HashMap<String, usize>,
}

/// A borrowed tensor: its element type, shape and raw little-endian bytes.
pub struct RawTensor<'a> {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: &'a [u8],
    pub file: &'a Path,
}

impl Checkpoint {
    /// Open `dir/model.safetensors`, or the shards named by `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let mut files: Vec<PathBuf> = Vec::new();
        if index_path.exists() {
            let text = std::fs::read_to_string(&index_path)
                .map_err(|e| Error::file(&index_path, format!("cannot read: {e}")))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                Error::file(
                    &index_path,
                    format!("line {}:{}: {e}", e.line(), e.column()),
                )
            })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::file(&index_path, "no `weight_map` object"))?;
            for (name, f) in map {
                let f = f.as_str().ok_or_else(|| {
                    Error::file(
                        &index_path,
                        format!("weight_map entry `{name}` is not a file name"),
                    )
                })?;
                let p = dir.join(f);
                if !files.contains(&p) {
                    files.push(p);
                }
            }
            files.sort();
        } else if single.exists() {
            files.push(single);
        } else {
            return Err(Error::file(
                dir,
                "neither model.safetensors nor model.safetensors.index.json found",
            ));
        }
        let mut shards = Vec::new();
        let mut index = HashMap::new();
        for path in files {
            let file = std::fs::File::open(&path)
                .map_err(|e| Error::file(&path, format!("cannot open: {e}")))?;
            // SAFETY: the file is mapped read-only; sigflow never writes checkpoint files. A concurrent writer
            // could change the bytes under us (as with any mmap reader); all reads are bounds-checked slices.
            let mmap = unsafe { Mmap::map(&file) }
                .map_err(|e| Error::file(&path, format!("cannot map: {e}")))?;
            let (n, meta) = SafeTensors::read_metadata(&mmap)
                .map_err(|e| Error::file(&path, format!("not a valid safetensors file: {e}")))?;
            let si = shards.len();
            for name in meta.tensors().keys() {
                index.insert(name.clone(), si);
            }
            shards.push(Shard {
                path,
                mmap,
                data_start: 8 + n,
                meta,
            });
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            shards,
            index,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The file a tensor would be looked up in (for error messages about a missing tensor).
    fn where_missing(&self) -> PathBuf {
        if self.shards.len() == 1 {
            self.shards[0].path.clone()
        } else {
            self.dir.join("model.safetensors.index.json")
        }
    }

    /// The raw bytes of tensor `name`.
    pub fn raw(&self, name: &str) -> Result<RawTensor<'_>> {
        let si = *self.index.get(name).ok_or_else(|| {
            Error::file(self.where_missing(), format!("tensor `{name}` is missing"))
        })?;
        let sh = &self.shards[si];
        let info = sh
            .meta
            .info(name)
            .ok_or_else(|| Error::file(&sh.path, format!("tensor `{name}` is missing")))?;
        let (a, b) = info.data_offsets;
        let bytes = sh
            .mmap
            .get(sh.data_start + a..sh.data_start + b)
            .ok_or_else(|| {
                Error::file(
                    &sh.path,
                    format!("tensor `{name}`: data lies outside the file"),
                )
            })?;
        Ok(RawTensor {
            dtype: info.dtype,
            shape: info.shape.clone(),
            bytes,
            file: &sh.path,
        })
    }

    /// Tensor `name` as f32, checking that its shape is `shape`.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self.raw(name)?;
        check_shape(&t, name, shape)?;
        to_f32(&t, name)
    }

    /// Tensor `name` as f32 with whatever shape it has.
    pub fn f32_any(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let t = self.raw(name)?;
        let v = to_f32(&t, name)?;
        Ok((v, t.shape))
    }

    /// An integer tensor (I64 or I32) as i64 values with its shape.
    pub fn i64_any(&self, name: &str) -> Result<(Vec<i64>, Vec<usize>)> {
        let t = self.raw(name)?;
        let v = match t.dtype {
            Dtype::I64 => t
                .bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
            Dtype::I32 => t
                .bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i64)
                .collect(),
            other => {
                return Err(Error::file(
                    t.file,
                    format!("tensor `{name}`: expected an integer dtype, found {other:?}"),
                ))
            }
        };
        Ok((v, t.shape))
    }

    /// A `rows × cols` matrix converted to `dtype`. A tensor of shape `[rows, 1, cols]` (a depthwise conv
    /// weight) is accepted as `rows × cols` too.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize, dtype: DType) -> Result<Weights> {
        let t = self.raw(name)?;
        check_shape(&t, name, &[rows, cols])?;
        let r = if t.dtype == Dtype::BF16 {
            let bits: Vec<u16> = t
                .bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            Weights::from_bf16_bits(rows, cols, &bits, dtype)
        } else {
            let v = to_f32(&t, name)?;
            Weights::from_f32(rows, cols, &v, dtype)
        };
        r.map_err(|e| Error::file(t.file, format!("tensor `{name}`: {e}")))
    }
}

fn check_shape(t: &RawTensor<'_>, name: &str, shape: &[usize]) -> Result<()> {
    let squeezed: Vec<usize> = if t.shape.len() == 3 && t.shape[1] == 1 && shape.len() == 2 {
        vec![t.shape[0], t.shape[2]]
    } else {
        t.shape.clone()
    };
    if squeezed != shape {
        return Err(Error::file(
            t.file,
            format!(
                "tensor `{name}` has shape {:?}, expected {:?}",
                t.shape, shape
            ),
        ));
    }
    Ok(())
}

fn to_f32(t: &RawTensor<'_>, name: &str) -> Result<Vec<f32>> {
    let expect = t.shape.iter().product::<usize>();
    let v: Vec<f32> = match t.dtype {
        Dtype::F32 => t
            .bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::BF16 => t
            .bytes
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect(),
        Dtype::F16 => t
            .bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        other => {
            return Err(Error::file(
                t.file,
                format!("tensor `{name}`: unsupported dtype {other:?} (expected F32, BF16 or F16)"),
            ))
        }
    };
    if v.len() != expect {
        return Err(Error::file(
            t.file,
            format!("tensor `{name}`: data length does not match its shape"),
        ));
    }
    Ok(v)
}
