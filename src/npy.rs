//! NumPy's `.npy` format for f32 matrices (`embed --output npy`): format 1.0, little-endian `<f4`, C
//! order, as `numpy.save` writes it, so `numpy.load` reads it back.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One NumPy .npy file of f32 rows (format 1.0, little-endian, C order), written to a temporary
/// file beside it and renamed into place by [`finish`](Self::finish): a command that fails leaves
/// no partial file (dropping an unfinished one removes the temporary) and an existing file
/// untouched.
pub struct NpyFile {
    path: PathBuf,
    temp: PathBuf,
    /// `None` once finished.
    file: Option<std::io::BufWriter<File>>,
    rows: usize,
    cols: usize,
    written: usize,
}

/// The .npy header of a `[rows, cols]` float32 array as NumPy writes it: magic, version 1.0, the
/// header's length, then its dict padded with spaces and ended by a newline so that the data
/// starts at a multiple of 64 bytes.
pub fn npy_header(rows: usize, cols: usize) -> Vec<u8> {
    const PREAMBLE: &[u8] = b"\x93NUMPY\x01\x00";
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let unpadded = PREAMBLE.len() + 2 + dict.len() + 1;
    let padding = unpadded.next_multiple_of(64) - unpadded;
    let header_len = u16::try_from(dict.len() + padding + 1).expect("two integers' dict is under 64 KiB");
    let mut header = PREAMBLE.to_vec();
    header.extend_from_slice(&header_len.to_le_bytes());
    header.extend_from_slice(dict.as_bytes());
    header.resize(header.len() + padding, b' ');
    header.push(b'\n');
    header
}

impl NpyFile {
    pub fn create(path: &Path, rows: usize, cols: usize) -> Result<Self> {
        let name = path
            .file_name()
            .ok_or_else(|| Error::io(path, "--output npy needs a file path"))?;
        let temp = path.with_file_name(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| Error::io(path, e))?;
        let mut npy = NpyFile {
            path: path.to_path_buf(),
            temp,
            file: Some(std::io::BufWriter::new(file)),
            rows,
            cols,
            written: 0,
        };
        npy.write(&npy_header(rows, cols))?;
        Ok(npy)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let file = self.file.as_mut().expect("not finished");
        file.write_all(bytes).map_err(|e| Error::io(&self.path, e))
    }

    pub fn write_row(&mut self, row: &[f32]) -> Result<()> {
        if row.len() != self.cols || self.written == self.rows {
            return Err(Error::Device(format!(
                "an embedding of {} values as row {} of a ({}, {}) array",
                row.len(),
                self.written + 1,
                self.rows,
                self.cols
            )));
        }
        let bytes: Vec<u8> = row.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.write(&bytes)?;
        self.written += 1;
        Ok(())
    }

    /// Check that every row was written, then move the file into place.
    pub fn finish(mut self) -> Result<()> {
        if self.written != self.rows {
            return Err(Error::Device(format!(
                "{} embeddings for {} texts",
                self.written, self.rows
            )));
        }
        let file = self.file.take().expect("not finished");
        let file = file.into_inner().map_err(|e| Error::io(&self.path, e.error()))?;
        file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        std::fs::rename(&self.temp, &self.path).map_err(|e| {
            let _ = std::fs::remove_file(&self.temp);
            Error::io(&self.path, e)
        })
    }
}

impl Drop for NpyFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_as_numpy_writes_it() {
        for (rows, cols) in [(1, 1), (3, 32), (123_456, 768), (usize::MAX, usize::MAX)] {
            let header = npy_header(rows, cols);
            assert_eq!(header.len() % 64, 0, "the data starts at a multiple of 64 bytes");
            assert_eq!(&header[..8], b"\x93NUMPY\x01\x00");
            assert_eq!(u16::from_le_bytes([header[8], header[9]]) as usize, header.len() - 10);
            let dict = std::str::from_utf8(&header[10..]).unwrap();
            assert_eq!(
                dict.trim_end_matches('\n').trim_end(),
                format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}")
            );
            assert!(dict.ends_with('\n'));
        }
    }
}
