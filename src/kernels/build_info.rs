//! What build.rs produced: paths of the nvcc artefacts (for the static checks) and the kernel list.
//! `OUT_DIR/ptxas/<source>.txt` (the `-Xptxas -v` report), `OUT_DIR/ptx/<source>.ptx` (compute_80 PTX),
//! `OUT_DIR/fatbin/<source>.fatbin`.
include!(concat!(env!("OUT_DIR"), "/build_info.rs"));

use std::path::PathBuf;

/// The ptxas report of one source (None when nvcc did not build it).
pub fn ptxas_report(source: &str) -> Option<PathBuf> {
    NVCC_BUILT
        .contains(&source)
        .then(|| PathBuf::from(OUT_DIR).join("ptxas").join(format!("{source}.txt")))
}

/// The compute_80 PTX of one source.
pub fn ptx(source: &str) -> Option<PathBuf> {
    NVCC_BUILT
        .contains(&source)
        .then(|| PathBuf::from(OUT_DIR).join("ptx").join(format!("{source}.ptx")))
}

/// The fatbin of one source.
pub fn fatbin(source: &str) -> Option<PathBuf> {
    NVCC_BUILT
        .contains(&source)
        .then(|| PathBuf::from(OUT_DIR).join("fatbin").join(format!("{source}.fatbin")))
}

/// cuobjdump: `$CUOBJDUMP`, else next to the nvcc used, else the repo's `.toolchain`.
pub fn cuobjdump() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CUOBJDUMP").map(PathBuf::from).filter(|p| p.is_file()) {
        return Some(p);
    }
    if let Some(p) = NVCC
        .map(|n| PathBuf::from(n).with_file_name("cuobjdump"))
        .filter(|p| p.is_file())
    {
        return Some(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".toolchain/cuda/nvidia/cu13/bin/cuobjdump");
    p.is_file().then_some(p)
}

/// The SASS of one source for one arch (`"90"`), by `cuobjdump -sass -arch sm_XX` (memoised).
pub fn sass(source: &str, arch: &str) -> Result<String, String> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Cache = Mutex<HashMap<(String, String), Result<String, String>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = (source.to_string(), arch.to_string());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(r) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return r.clone();
    }
    let r = sass_uncached(source, arch);
    cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, r.clone());
    r
}

fn sass_uncached(source: &str, arch: &str) -> Result<String, String> {
    let fatbin = fatbin(source).ok_or_else(|| format!("no fatbin for `{source}` (nvcc did not build it)"))?;
    let tool = cuobjdump().ok_or("cuobjdump not found (CUOBJDUMP, next to nvcc, .toolchain)")?;
    let o = std::process::Command::new(&tool)
        .arg("-sass")
        .arg("-arch")
        .arg(format!("sm_{arch}"))
        .arg(&fatbin)
        .output()
        .map_err(|e| format!("run {}: {e}", tool.display()))?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The SASS of one kernel (the `Function : NAME` section of `sass(source, arch)`).
pub fn kernel_sass(source: &str, kernel: &str, arch: &str) -> Result<String, String> {
    let all = sass(source, arch)?;
    let marker = format!("Function : {kernel}");
    let start = all
        .find(&marker)
        .ok_or_else(|| format!("kernel `{kernel}` not in the sm_{arch} SASS of `{source}`"))?;
    let rest = &all[start + marker.len()..];
    let end = rest.find("Function : ").unwrap_or(rest.len());
    Ok(rest[..end].to_string())
}

/// Whether a kernel's SASS uses tensor-core instructions (HMMA) for the given arch.
pub fn kernel_has_hmma(source: &str, kernel: &str, arch: &str) -> Result<bool, String> {
    Ok(kernel_sass(source, kernel, arch)?.contains("HMMA"))
}
