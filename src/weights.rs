//! Memory-mapped safetensors: one `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`. Tensors stay in the page cache until a consumer converts them
//! (to f32 for the CPU executor, to bf16/f16 for a GPU upload). The safetensors crate validates
//! each header completely (offsets contiguous, inside the file, sizes = shape × dtype) before any
//! byte is read, so a corrupt file is an error, never an out-of-bounds read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, TensorInfo};
use safetensors::SafeTensors;

use crate::error::{Error, Result};

/// Storage types we read. Everything else (ints, f64, fp8) is an "unsupported dtype" error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageType {
    F32,
    F16,
    BF16,
}

impl StorageType {
    fn from_dtype(dtype: Dtype) -> Option<Self> {
        match dtype {
            Dtype::F32 => Some(Self::F32),
            Dtype::F16 => Some(Self::F16),
            Dtype::BF16 => Some(Self::BF16),
            _ => None,
        }
    }
}

struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
    /// Bytes before the data section (8 + header length).
    data_start: usize,
}

struct Entry {
    file: usize,
    info: TensorInfo,
}

/// All tensors of a checkpoint, by name.
pub struct TensorStore {
    files: Vec<MappedFile>,
    entries: HashMap<String, Entry>,
}

impl TensorStore {
    /// Open the weights of a checkpoint directory: `model.safetensors`, else the shards named by
    /// `model.safetensors.index.json`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if crate::limits::exists(&single) {
            Self::open_files(&[single])
        } else if crate::limits::exists(&index) {
            let text = crate::limits::read_regular_text(&index, crate::limits::file_bound::JSON_CONFIG)?;
            let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Safetensors {
                path: index.clone(),
                message: format!("index is not JSON ({e})"),
            })?;
            let map = value
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::Safetensors {
                    path: index.clone(),
                    message: "index has no weight_map object".into(),
                })?;
            let mut shards: Vec<String> = Vec::new();
            for (tensor, file) in map {
                let file = file.as_str().ok_or_else(|| Error::Safetensors {
                    path: index.clone(),
                    message: format!("weight_map[{tensor:?}] is not a file name"),
                })?;
                if file.contains('/') || file.contains('\\') || file == ".." {
                    return Err(Error::Safetensors {
                        path: index.clone(),
                        message: format!("shard name {file:?} is not a plain file name"),
                    });
                }
                if !shards.iter().any(|s| s == file) {
                    shards.push(file.to_string());
                }
            }
            shards.sort();
            let store = Self::open_files(&shards.iter().map(|s| dir.join(s)).collect::<Vec<_>>())?;
            for tensor in map.keys() {
                if !store.entries.contains_key(tensor) {
                    return Err(Error::Safetensors {
                        path: index.clone(),
                        message: format!("tensor {tensor:?} is listed but in no shard"),
                    });
                }
            }
            Ok(store)
        } else if dir.join("pytorch_model.bin").is_file() {
            Err(Error::Unsupported(format!(
                "{}: only pytorch_model.bin is present; convert it to model.safetensors",
                dir.display()
            )))
        } else {
            Err(Error::io(dir, "no model.safetensors or model.safetensors.index.json"))
        }
    }

    /// Open one or more safetensors files as one store (a tensor name may appear only once).
    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut store = TensorStore {
            files: Vec::new(),
            entries: HashMap::new(),
        };
        for path in paths {
            // A regular file only: mapping a FIFO or a device is refused with a clear error.
            let (file, _len) = crate::limits::open_regular_file(path)?;
            // SAFETY: the mapping is read-only; like every mmap-based loader we assume the file is
            // not truncated by another process while the store is alive.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            let (header_len, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| Error::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let file_index = store.files.len();
            for (name, info) in metadata.tensors() {
                if store.entries.contains_key(&name) {
                    return Err(Error::Safetensors {
                        path: path.clone(),
                        message: format!("tensor {name:?} appears in more than one shard"),
                    });
                }
                store.entries.insert(
                    name,
                    Entry {
                        file: file_index,
                        info: info.clone(),
                    },
                );
            }
            store.files.push(MappedFile {
                path: path.clone(),
                mmap,
                data_start: 8 + header_len,
            });
        }
        Ok(store)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.info.shape.as_slice())
    }

    /// The storage type of a tensor, or an error naming it when we cannot read that dtype.
    pub fn storage_type(&self, name: &str) -> Result<StorageType> {
        let entry = self.entry(name)?;
        StorageType::from_dtype(entry.info.dtype).ok_or_else(|| {
            Error::Unsupported(format!(
                "tensor {name:?} in {} has dtype {:?}; supported: F32, F16, BF16",
                self.files[entry.file].path.display(),
                entry.info.dtype
            ))
        })
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries
            .get(name)
            .ok_or_else(|| Error::Weights(format!("missing tensor {name:?}")))
    }

    /// The raw little-endian bytes of a tensor (unaligned, inside the mmap).
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let entry = self.entry(name)?;
        let file = &self.files[entry.file];
        let (start, end) = entry.info.data_offsets;
        file.mmap
            .get(file.data_start + start..file.data_start + end)
            .ok_or_else(|| Error::Safetensors {
                path: file.path.clone(),
                message: format!("tensor {name:?} points past the end of the file"),
            })
    }

    /// A tensor converted to f32, after checking its shape.
    pub fn f32(&self, name: &str, expected_shape: &[usize]) -> Result<Vec<f32>> {
        let shape = self
            .shape(name)
            .ok_or_else(|| Error::Weights(format!("missing tensor {name:?}")))?;
        if shape != expected_shape {
            return Err(Error::Weights(format!(
                "tensor {name:?} has shape {shape:?}, expected {expected_shape:?}"
            )));
        }
        let bytes = self.bytes(name)?;
        let dtype = self.storage_type(name)?;
        let width = match dtype {
            StorageType::F32 => 4,
            StorageType::F16 | StorageType::BF16 => 2,
        };
        let mut values = Vec::with_capacity(bytes.len() / width);
        // In slices, each slice's file pages released once converted: the mapped bytes and the
        // f32 copy then never coexist beyond one slice (the embedding table alone is 155 MB).
        const SLICE_BYTES: usize = 4 << 20;
        let mmap = &self.files[self.entry(name)?.file].mmap;
        for slice in bytes.chunks(SLICE_BYTES) {
            match dtype {
                StorageType::F32 => values.extend(
                    slice
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                ),
                StorageType::F16 => {
                    values.extend(slice.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()))
                }
                StorageType::BF16 => values.extend(
                    slice
                        .chunks_exact(2)
                        .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
                ),
            }
            release(mmap, slice);
        }
        Ok(values)
    }
}

/// Drop `bytes` (converted, inside `mmap`) from this process's resident set: the loader reads each
/// tensor once into its own f32 copy, so keeping the mapped pages as well would double the peak
/// memory of a load. Best effort (advice); a later read faults the pages back in.
fn release(mmap: &Mmap, bytes: &[u8]) {
    let offset = (bytes.as_ptr() as usize).wrapping_sub(mmap.as_ptr() as usize);
    #[cfg(unix)]
    if !bytes.is_empty() && offset.checked_add(bytes.len()).is_some_and(|end| end <= mmap.len()) {
        // SAFETY: the mapping is shared and read-only (`Mmap::map`), so MADV_DONTNEED only
        // discards clean page-cache pages from this mapping; a later access reads the same file
        // bytes again. No byte of the mapping is changed.
        let _ = unsafe { mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, bytes.len()) };
    }
    #[cfg(not(unix))]
    let _ = offset;
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn write(dir: &Path, name: &str, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> PathBuf {
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        let path = dir.join(name);
        safetensors::serialize_to_file(views, None, &path).unwrap();
        path
    }

    #[test]
    fn reads_all_float_types_and_checks_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let f32s: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let bf16s: Vec<u8> = [bf16::from_f32(0.5), bf16::from_f32(3.0)]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let f16s: Vec<u8> = [f16::from_f32(-0.25)].iter().flat_map(|v| v.to_le_bytes()).collect();
        let ints: Vec<u8> = 7i64.to_le_bytes().to_vec();
        write(
            dir.path(),
            "model.safetensors",
            &[
                ("a", Dtype::F32, vec![2], f32s),
                ("b", Dtype::BF16, vec![1, 2], bf16s),
                ("c", Dtype::F16, vec![1], f16s),
                ("d", Dtype::I64, vec![1], ints),
            ],
        );
        let s = TensorStore::open_dir(dir.path()).unwrap();
        assert_eq!(s.f32("a", &[2]).unwrap(), vec![1.5, -2.0]);
        assert_eq!(s.f32("b", &[1, 2]).unwrap(), vec![0.5, 3.0]);
        assert_eq!(s.f32("c", &[1]).unwrap(), vec![-0.25]);
        let e = s.f32("b", &[2]).unwrap_err().to_string();
        assert!(e.contains("\"b\" has shape [1, 2], expected [2]"), "{e}");
        let e = s.f32("d", &[1]).unwrap_err().to_string();
        assert!(e.contains("dtype I64"), "{e}");
        let e = s.f32("zzz", &[1]).unwrap_err().to_string();
        assert!(e.contains("missing tensor \"zzz\""), "{e}");
    }

    #[test]
    fn sharded_checkpoints_are_one_store() {
        let dir = tempfile::tempdir().unwrap();
        let one: Vec<u8> = 1f32.to_le_bytes().to_vec();
        write(
            dir.path(),
            "model-00001-of-00002.safetensors",
            &[("x", Dtype::F32, vec![1], one.clone())],
        );
        write(
            dir.path(),
            "model-00002-of-00002.safetensors",
            &[("y", Dtype::F32, vec![1], one)],
        );
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            r#"{"weight_map": {"x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let s = TensorStore::open_dir(dir.path()).unwrap();
        assert_eq!(s.f32("y", &[1]).unwrap(), vec![1.0]);
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            r#"{"weight_map": {"x": "../etc/passwd"}}"#,
        )
        .unwrap();
        assert!(TensorStore::open_dir(dir.path()).is_err());
    }

    #[test]
    fn corrupt_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "model.safetensors",
            &[("x", Dtype::F32, vec![4], vec![0u8; 16])],
        );
        let full = std::fs::read(&path).unwrap();
        // truncated data section
        std::fs::write(&path, &full[..full.len() - 4]).unwrap();
        let e = TensorStore::open_dir(dir.path())
            .err()
            .expect("truncated file must fail")
            .to_string();
        assert!(e.contains("invalid safetensors"), "{e}");
        // header length pointing past the end
        let mut bad = full.clone();
        bad[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        std::fs::write(&path, &bad).unwrap();
        assert!(TensorStore::open_dir(dir.path()).is_err());
        // offsets pointing past the end of the file
        let header = r#"{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,1600]}}"#.to_string();
        let mut forged = (header.len() as u64).to_le_bytes().to_vec();
        forged.extend_from_slice(header.as_bytes());
        forged.extend_from_slice(&[0u8; 16]);
        std::fs::write(&path, &forged).unwrap();
        assert!(TensorStore::open_dir(dir.path()).is_err());
        // empty file
        std::fs::write(&path, b"").unwrap();
        assert!(TensorStore::open_dir(dir.path()).is_err());
    }
}
