//! One rule for every size that comes from outside the program: options, config.json values,
//! safetensors headers, text lengths and counts through the C ABI.
//!
//! 1. Sizes are computed with checked arithmetic ([`bytes_of`]): an overflow is an error naming the
//!    value, never a wrapped size.
//! 2. Before anything is allocated, the total is compared with what the device can hold
//!    ([`check_fits`]): a CUDA device's free memory, and for the CPU and the emulator the
//!    [`host_memory_limit`] — the smaller of the machine's physical memory and the process's
//!    address-space limit (`ulimit -v`, RLIMIT_AS).
//! 3. Large buffers are allocated fallibly ([`zeroed`]): a refused allocation is an error, not an
//!    abort of the caller's process (Rust's default on allocation failure, which `catch_unwind`
//!    cannot catch).
//! 4. Files are opened only when they are regular files (after following links) no larger than a
//!    bound for their kind ([`read_regular_file`]): no FIFO that blocks forever, no `/dev/zero` read
//!    until memory runs out.
//!
//! Every refusal is one line naming the value and the limit.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// Bytes the host can give this process: min(physical memory, RLIMIT_AS soft limit).
pub fn host_memory_limit() -> u64 {
    let mut limit = u64::MAX;
    #[cfg(unix)]
    {
        // SAFETY: sysconf and getrlimit only read process/system information into plain values.
        unsafe {
            let pages = libc::sysconf(libc::_SC_PHYS_PAGES);
            let page = libc::sysconf(libc::_SC_PAGESIZE);
            if pages > 0 && page > 0 {
                limit = (pages as u64).saturating_mul(page as u64);
            }
            let mut r = std::mem::zeroed::<libc::rlimit>();
            if libc::getrlimit(libc::RLIMIT_AS, &mut r) == 0 && r.rlim_cur != libc::RLIM_INFINITY {
                limit = limit.min(r.rlim_cur as u64);
            }
        }
    }
    limit
}

/// The product of `factors` in bytes, or an error naming `what` when it overflows.
pub fn bytes_of(what: &str, factors: &[usize]) -> Result<usize> {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| Error::TooLarge(format!("{what}: {factors:?} overflows the address space")))
}

/// The sum of `parts`, or an error naming `what` when it overflows.
pub fn sum_of(what: &str, parts: &[usize]) -> Result<usize> {
    parts
        .iter()
        .try_fold(0usize, |acc, &p| acc.checked_add(p))
        .ok_or_else(|| Error::TooLarge(format!("{what}: the sum of {parts:?} overflows the address space")))
}

/// `bytes` of `what` (which names the value that set it) must fit in `limit` bytes of `place`.
pub fn check_fits(what: &str, bytes: usize, limit: u64, place: &str) -> Result<()> {
    if bytes as u64 > limit {
        return Err(Error::TooLarge(format!(
            "{what} needs {} of memory, more than {place} has ({})",
            human(bytes as u64),
            human(limit)
        )));
    }
    Ok(())
}

/// A vector of `n` default values, allocated fallibly.
pub fn zeroed<T: Clone + Default>(n: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Error::TooLarge(format!(
            "{what}: cannot allocate {} on the host",
            human((n as u64).saturating_mul(std::mem::size_of::<T>() as u64))
        ))
    })?;
    v.resize(n, T::default());
    Ok(v)
}

/// Size bounds per kind of file (a file larger than its bound is refused before it is read).
pub mod file_bound {
    /// config.json, modules.json, pooling / Dense / sentence-transformers configs, shard indexes.
    pub const JSON_CONFIG: u64 = 16 << 20;
    /// tokenizer.json (ModernBERT's is 3.6 MB; the largest common ones are about 20 MB).
    pub const TOKENIZER: u64 = 256 << 20;
}

/// Whether `path` names something (a file, a directory, a dangling link...): the test for an
/// optional file. What exists must then be readable: an optional file that is present but cannot
/// be read is an error, never a silent default.
pub fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Open `path` only if it is a regular file after following links; refuse FIFOs, devices,
/// directories and dangling links with a one-line error.
pub fn open_regular_file(path: &Path) -> Result<(std::fs::File, u64)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, socket or device)"
        };
        return Err(Error::io(path, format!("is {kind}")));
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // The metadata of what was opened: a path swapped between the two calls is caught here.
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::io(path, "is not a regular file"));
    }
    Ok((file, meta.len()))
}

/// The bytes of a regular file of at most `bound` bytes (the read itself stops at the bound, so a
/// file that grows while it is read cannot exceed it either).
pub fn read_regular_file(path: &Path, bound: u64) -> Result<Vec<u8>> {
    let (file, len) = open_regular_file(path)?;
    if len > bound {
        return Err(Error::io(
            path,
            format!(
                "is {}, more than the {} allowed for this kind of file",
                human(len),
                human(bound)
            ),
        ));
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len as usize)
        .map_err(|_| Error::io(path, format!("cannot allocate {} to read it", human(len))))?;
    file.take(bound + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > bound {
        return Err(Error::io(
            path,
            format!("grew past the {} allowed while being read", human(bound)),
        ));
    }
    Ok(bytes)
}

/// [`read_regular_file`] as UTF-8 text.
pub fn read_regular_text(path: &Path, bound: u64) -> Result<String> {
    String::from_utf8(read_regular_file(path, bound)?).map_err(|e| Error::io(path, format!("is not UTF-8 ({e})")))
}

/// `1.5 GiB`-style sizes for messages.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {} ({bytes} bytes)", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        assert!(bytes_of("x", &[1 << 40, 1 << 30]).is_err());
        assert_eq!(bytes_of("x", &[3, 5, 7]).unwrap(), 105);
        assert!(sum_of("x", &[usize::MAX, 1]).is_err());
    }

    #[test]
    fn host_limit_is_positive_and_refuses_the_impossible() {
        let limit = host_memory_limit();
        assert!(limit > 1 << 20);
        assert!(check_fits("a test", usize::MAX, limit, "the host").is_err());
        assert!(zeroed::<u8>(usize::MAX / 2, "a test").is_err());
    }

    #[test]
    fn special_files_are_refused() {
        let e = read_regular_file(Path::new("/dev/zero"), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = read_regular_file(Path::new("/"), 1 << 20).unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; 2048]).unwrap();
        let e = read_regular_file(&big, 1024).unwrap_err().to_string();
        assert!(e.contains("more than"), "{e}");
        assert_eq!(read_regular_file(&big, 4096).unwrap().len(), 2048);
    }
}
