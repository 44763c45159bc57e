//! Build script: the CUDA kernels and their host emulator. It needs no libclang: the Rust view of
//! `cuda/include/params.h` is committed (`src/kernels/params_bindings.rs`, bindgen's output) and
//! `cargo test -p params-bindgen` fails when it is stale (`cargo run -p params-bindgen` refreshes it).
//!
//! 1. nvcc (from `$NVCC`, `$CUDA_HOME/bin/nvcc`, `PATH`, then the repo's `.toolchain/cuda`, installed by
//!    `scripts/install-toolchain.sh`): every `cuda/*.cu` → one fatbin with SASS for each arch of
//!    `MODERNBERT_CUDA_ARCHS` (default `80;86;89;90`) plus compute_80 PTX, embedded through
//!    `OUT_DIR/fatbins.rs` (`none`: no kernels, nvcc or not); the `-Xptxas -v` report kept in
//!    `OUT_DIR/ptxas/<name>.txt` and the PTX in `OUT_DIR/ptx/<name>.ptx` for the static checks. Without nvcc: a warning and
//!    `cfg(modernbert_no_kernels)`, unless `MODERNBERT_REQUIRE_KERNELS=1` (then an error, as is a failed
//!    compile). No nvidia-smi, no network.
//! 2. The host emulator: the same `cuda/*.cu` compiled by the C++ compiler with `-DMODERNBERT_EMULATOR`
//!    against `cuda/emu/emu.h`, plus `cuda/emu/emu.cpp` and a generated registry of every
//!    `extern "C" __global__ void NAME(const __grid_constant__ TYPE p)` → one static library.
//!
//! Outputs are cached per source by a hash of its inputs, so editing one `.cu` recompiles only it.

use std::collections::hash_map::DefaultHasher;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

const DEFAULT_ARCHS: &str = "80;86;89;90";
const PTX_ARCH: &str = "80";
/// Sources named `*_sm90.cu` use sm_90a-only instructions (cuda/include/hopper.cuh): they are built
/// for `sm_90a` alone (no portable PTX), and only when 90 is among the archs.
const HOPPER_SUFFIX: &str = "_sm90";
const RUNTIME_PREFIX: &str = "emu_rt_";

struct Kernel {
    name: String,
    param_type: String,
    /// Declared `MB_PDL_PRIMARY` (hopper.cuh): a primary of programmatic dependent launch.
    triggers_dependents: bool,
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let cuda = manifest.join("cuda");
    println!("cargo::rustc-check-cfg=cfg(modernbert_no_kernels)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=cuda");
    for v in [
        "NVCC",
        "CUDA_HOME",
        "MODERNBERT_CUDA_ARCHS",
        "MODERNBERT_REQUIRE_KERNELS",
        "CXX",
    ] {
        println!("cargo::rerun-if-env-changed={v}");
    }
    let require = env::var("MODERNBERT_REQUIRE_KERNELS")
        .map(|v| v == "1")
        .unwrap_or(false);

    let mut sources: Vec<PathBuf> = fs::read_dir(&cuda)
        .expect("read cuda/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    sources.sort();
    let stem = |p: &Path| p.file_stem().unwrap().to_string_lossy().into_owned();

    // Hash of everything a source depends on besides itself: the shared headers and the emulator.
    let mut common = DefaultHasher::new();
    for dir in [cuda.join("include"), cuda.join("emu")] {
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            f.hash(&mut common);
            fs::read(&f).unwrap_or_default().hash(&mut common);
        }
    }
    let common = common.finish();

    let archs: Vec<String> = env::var("MODERNBERT_CUDA_ARCHS")
        .unwrap_or_else(|_| DEFAULT_ARCHS.into())
        .split([';', ',', ' '])
        .map(|s| s.trim().trim_start_matches("sm_").to_string())
        .filter(|s| !s.is_empty() && s != "none")
        .collect();
    // `MODERNBERT_CUDA_ARCHS=none`: no kernels even where nvcc is installed (the fuzz targets, which
    // use none, build without them).
    let nvcc = if archs.is_empty() { None } else { find_nvcc(&manifest) };

    // The emulator's runtime: every cuda/emu/*.cpp (emu.cpp, hopper.cpp).
    let mut runtime: Vec<PathBuf> = fs::read_dir(cuda.join("emu"))
        .expect("read cuda/emu")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cpp"))
        .collect();
    runtime.sort();
    // Jobs: one nvcc and one emulator compile per source, run on a few threads.
    let nvcc_results: Mutex<Vec<(String, Result<(), String>)>> = Mutex::new(Vec::new());
    let emu_results: Mutex<Vec<(String, Result<PathBuf, String>)>> = Mutex::new(Vec::new());
    let mut jobs: Vec<Box<dyn FnOnce() + Send + '_>> = Vec::new();
    for src in &sources {
        let name = stem(src);
        let key = {
            let mut h = DefaultHasher::new();
            common.hash(&mut h);
            fs::read(src).unwrap_or_default().hash(&mut h);
            h.finish()
        };
        let hopper = name.ends_with(HOPPER_SUFFIX);
        if let Some(nvcc) = nvcc.as_ref().filter(|_| !hopper || archs.iter().any(|a| a == "90")) {
            let (name, out, cuda, archs, res) = (name.clone(), &out, &cuda, &archs, &nvcc_results);
            jobs.push(Box::new(move || {
                let target = if hopper {
                    Target::Hopper
                } else {
                    Target::Portable(archs)
                };
                let r = compile_nvcc(nvcc, cuda, src, &name, out, target, key);
                res.lock().unwrap().push((name, r));
            }));
        }
        let (out, cuda, res) = (&out, &cuda, &emu_results);
        jobs.push(Box::new(move || {
            let r = compile_emu(cuda, src, &name, out, key);
            res.lock().unwrap().push((name, r));
        }));
    }
    // The runtime's objects are `emu_rt_<stem>`.
    for src in &runtime {
        let name = format!("{RUNTIME_PREFIX}{}", stem(src));
        let (out, cuda, res) = (&out, &cuda, &emu_results);
        jobs.push(Box::new(move || {
            let r = compile_emu(cuda, src, &name, out, common);
            res.lock().unwrap().push((name, r));
        }));
    }
    run_jobs(jobs);
    let mut nvcc_results = nvcc_results.into_inner().unwrap();
    let mut emu_results = emu_results.into_inner().unwrap();
    nvcc_results.sort_by(|a, b| a.0.cmp(&b.0));
    emu_results.sort_by(|a, b| a.0.cmp(&b.0));

    // ---- emulator library ----
    let mut objects = Vec::new();
    let mut emu_failed = Vec::new();
    let mut kernels_by_source = Vec::new();
    for (name, r) in &emu_results {
        match r {
            Ok(obj) => {
                objects.push(obj.clone());
                if !name.starts_with(RUNTIME_PREFIX) {
                    let text = fs::read_to_string(cuda.join(format!("{name}.cu"))).unwrap_or_default();
                    kernels_by_source.push((name.clone(), scan_kernels(&text)));
                }
            }
            Err(e) => {
                if require || name.starts_with(RUNTIME_PREFIX) {
                    panic!("emulator build of {name} failed:\n{e}");
                }
                println!(
                    "cargo::warning=emulator: cuda/{name}.cu does not compile with the host compiler; its kernels \
                     are left out of the emulator: {}",
                    e.lines().find(|l| l.contains("error")).unwrap_or("").replace('\n', " ")
                );
                emu_failed.push((name.clone(), e.clone()));
            }
        }
    }
    let registry = out.join("emu_registry.cpp");
    write_if_changed(&registry, &registry_source(&kernels_by_source));
    // Keyed by the shared headers as well: the table's `sizeof(…Params)` is params.h's, and a
    // struct that grows leaves the registry's own text unchanged.
    let reg_obj =
        compile_emu(&cuda, &registry, "emu_registry", &out, common).unwrap_or_else(|e| panic!("registry: {e}"));
    objects.push(reg_obj);
    let mut lib = cc::Build::new();
    lib.cpp(true).cargo_warnings(false);
    for o in &objects {
        lib.object(o);
    }
    lib.compile("modernbert_emu");

    // ---- fatbins ----
    let mut fatbins = String::new();
    let mut built = Vec::new();
    let mut failed = Vec::new();
    if nvcc.is_none() && archs.is_empty() {
        if require {
            panic!("MODERNBERT_REQUIRE_KERNELS=1 but MODERNBERT_CUDA_ARCHS names no arch");
        }
        println!("cargo::warning=MODERNBERT_CUDA_ARCHS=none: building without CUDA kernels");
    } else if nvcc.is_none() {
        if require {
            panic!(
                "MODERNBERT_REQUIRE_KERNELS=1 but no nvcc was found (NVCC, CUDA_HOME, PATH, .toolchain/cuda); \
                 run scripts/install-toolchain.sh"
            );
        }
        println!(
            "cargo::warning=nvcc not found (NVCC, CUDA_HOME, PATH, .toolchain/cuda): building without CUDA \
             kernels; run scripts/install-toolchain.sh and `export NVCC=...` to build them"
        );
    }
    // (kernel, source) of every kernel nvcc built: the GPU device asks only that source's module.
    let mut gpu_kernels: Vec<(String, String)> = Vec::new();
    for (name, r) in &nvcc_results {
        match r {
            Ok(()) => {
                built.push(name.clone());
                let text = fs::read_to_string(cuda.join(format!("{name}.cu"))).unwrap_or_default();
                gpu_kernels.extend(scan_kernels(&text).into_iter().map(|k| (k.name, name.clone())));
            }
            Err(e) => {
                if require {
                    panic!("nvcc failed on cuda/{name}.cu:\n{e}");
                }
                println!(
                    "cargo::warning=nvcc failed on cuda/{name}.cu (left out of the fatbins): {}",
                    e.lines().find(|l| l.contains("error")).unwrap_or("")
                );
                failed.push((name.clone(), e.clone()));
            }
        }
    }
    if nvcc.is_none() {
        println!("cargo::rustc-cfg=modernbert_no_kernels");
    }
    fatbins.push_str(
        "/// (source name, fatbin bytes, the one compute capability × 10 that can load it, 0: any).\n\
         pub const FATBINS: &[(&str, &[u8], u32)] = &[\n",
    );
    for name in &built {
        let p = out.join("fatbin").join(format!("{name}.fatbin"));
        // sm_90a code runs on compute capability 9.0 alone (the `a` features are not forward-compatible).
        let only_sm = if name.ends_with(HOPPER_SUFFIX) { 90 } else { 0 };
        let _ = writeln!(
            fatbins,
            "    ({name:?}, include_bytes!({:?}), {only_sm}),",
            p.display().to_string()
        );
    }
    fatbins.push_str("];\n");
    fatbins.push_str("/// (kernel, source name) of every kernel in [`FATBINS`].\n");
    let _ = writeln!(fatbins, "pub const FATBIN_KERNELS: &[(&str, &str)] = &{gpu_kernels:?};");
    write_if_changed(&out.join("fatbins.rs"), &fatbins);

    // ---- build info ----
    let mut info = String::new();
    let q = |s: &str| format!("{s:?}");
    let _ = writeln!(
        info,
        "/// OUT_DIR of the build: `ptxas/<name>.txt`, `ptx/<name>.ptx`, `fatbin/<name>.fatbin`."
    );
    let _ = writeln!(info, "pub const OUT_DIR: &str = {};", q(&out.display().to_string()));
    let _ = writeln!(
        info,
        "/// The nvcc used, if any.\npub const NVCC: Option<&str> = {};",
        nvcc.as_ref()
            .map_or("None".into(), |p| format!("Some({})", q(&p.display().to_string())))
    );
    let _ = writeln!(
        info,
        "/// SASS architectures in the fatbins (plus compute_{PTX_ARCH} PTX)."
    );
    let _ = writeln!(info, "pub const CUDA_ARCHS: &[&str] = &{:?};", archs);
    let _ = writeln!(info, "/// Every cuda/*.cu (stem).");
    let names: Vec<String> = sources.iter().map(|s| stem(s)).collect();
    let _ = writeln!(info, "pub const SOURCES: &[&str] = &{:?};", names);
    let _ = writeln!(
        info,
        "/// Sources nvcc compiled (each has a fatbin, a ptxas report and PTX)."
    );
    let _ = writeln!(info, "pub const NVCC_BUILT: &[&str] = &{:?};", built);
    let _ = writeln!(info, "/// (source, first error line) for sources nvcc rejected.");
    let fl: Vec<(String, String)> = failed
        .iter()
        .map(|(n, e)| {
            (
                n.clone(),
                e.lines().find(|l| l.contains("error")).unwrap_or("").to_string(),
            )
        })
        .collect();
    let _ = writeln!(info, "pub const NVCC_FAILED: &[(&str, &str)] = &{:?};", fl);
    let el: Vec<(String, String)> = emu_failed
        .iter()
        .map(|(n, e)| {
            (
                n.clone(),
                e.lines().find(|l| l.contains("error")).unwrap_or("").to_string(),
            )
        })
        .collect();
    let _ = writeln!(
        info,
        "/// (source, first error line) for sources the host compiler rejected (emulator)."
    );
    let _ = writeln!(info, "pub const EMU_FAILED: &[(&str, &str)] = &{:?};", el);
    let _ = writeln!(
        info,
        "/// (kernel, source, parameter struct) of every kernel in the emulator."
    );
    let ks: Vec<(String, String, String)> = kernels_by_source
        .iter()
        .flat_map(|(s, ks)| {
            ks.iter()
                .map(move |k| (k.name.clone(), s.clone(), k.param_type.clone()))
        })
        .collect();
    let _ = writeln!(info, "pub const KERNELS: &[(&str, &str, &str)] = &{:?};", ks);
    write_if_changed(&out.join("build_info.rs"), &info);
}

fn write_if_changed(path: &Path, text: &str) {
    if fs::read_to_string(path).ok().as_deref() != Some(text) {
        fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

fn run_jobs(jobs: Vec<Box<dyn FnOnce() + Send + '_>>) {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 16);
    let queue = Mutex::new(jobs.into_iter().collect::<Vec<_>>());
    std::thread::scope(|s| {
        for _ in 0..n {
            s.spawn(|| loop {
                let job = queue.lock().unwrap().pop();
                match job {
                    Some(j) => j(),
                    None => break,
                }
            });
        }
    });
}

fn find_nvcc(manifest: &Path) -> Option<PathBuf> {
    let ok = |p: PathBuf| if p.is_file() { Some(p) } else { None };
    if let Some(p) = env::var_os("NVCC").map(PathBuf::from).and_then(ok) {
        return Some(p);
    }
    if let Some(p) = env::var_os("CUDA_HOME")
        .map(|h| PathBuf::from(h).join("bin/nvcc"))
        .and_then(ok)
    {
        return Some(p);
    }
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            if let Some(p) = ok(dir.join("nvcc")) {
                return Some(p);
            }
        }
    }
    ok(manifest.join(".toolchain/cuda/nvidia/cu13/bin/nvcc"))
}

/// What nvcc builds a source for.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// SASS for each arch plus compute_80 PTX.
    Portable(&'a [String]),
    /// SASS for sm_90a only (wgmma, setmaxnreg: the `a` features exist on that chip alone).
    Hopper,
}

fn compile_nvcc(
    nvcc: &Path,
    cuda: &Path,
    src: &Path,
    name: &str,
    out: &Path,
    target: Target,
    key: u64,
) -> Result<(), String> {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    match target {
        Target::Portable(archs) => archs.hash(&mut h),
        Target::Hopper => "90a".hash(&mut h),
    }
    nvcc.hash(&mut h);
    let key = format!("{:016x}", h.finish());
    let fatbin = out.join("fatbin").join(format!("{name}.fatbin"));
    let ptx = out.join("ptx").join(format!("{name}.ptx"));
    let report = out.join("ptxas").join(format!("{name}.txt"));
    let keyfile = out.join("fatbin").join(format!("{name}.key"));
    for d in ["fatbin", "ptx", "ptxas"] {
        fs::create_dir_all(out.join(d)).map_err(|e| e.to_string())?;
    }
    if fs::read_to_string(&keyfile).ok().as_deref() == Some(key.as_str())
        && fatbin.exists()
        && ptx.exists()
        && report.exists()
    {
        return Ok(());
    }
    let _ = fs::remove_file(&keyfile);
    let common = |c: &mut Command| {
        c.arg("-O3")
            .arg("-std=c++17")
            .arg("-lineinfo")
            .arg("-I")
            .arg(cuda.join("include"))
            .arg("-I")
            .arg(cuda);
    };
    let mut c = Command::new(nvcc);
    c.arg("-fatbin");
    common(&mut c);
    c.arg("-Xptxas").arg("-v").arg("--threads").arg("0");
    match target {
        Target::Portable(archs) => {
            for a in archs {
                c.arg(format!("-gencode=arch=compute_{a},code=sm_{a}"));
            }
            c.arg(format!("-gencode=arch=compute_{PTX_ARCH},code=compute_{PTX_ARCH}"));
        }
        Target::Hopper => {
            c.arg("-gencode=arch=compute_90a,code=sm_90a");
        }
    }
    c.arg("-o").arg(&fatbin).arg(src);
    let o = c.output().map_err(|e| format!("run {}: {e}", nvcc.display()))?;
    let text = String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        return Err(text);
    }
    fs::write(&report, &text).map_err(|e| e.to_string())?;
    let mut c = Command::new(nvcc);
    c.arg("-ptx");
    common(&mut c);
    let ptx_arch = match target {
        Target::Portable(_) => format!("-arch=compute_{PTX_ARCH}"),
        Target::Hopper => "-arch=compute_90a".to_string(),
    };
    c.arg(ptx_arch).arg("-o").arg(&ptx).arg(src);
    let o = c.output().map_err(|e| format!("run {}: {e}", nvcc.display()))?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    fs::write(&keyfile, &key).map_err(|e| e.to_string())?;
    Ok(())
}

/// Compiles one source for the emulator; returns the object file, cached by a hash of `key` (what
/// the source depends on besides itself), its text and the compiler.
fn compile_emu(cuda: &Path, src: &Path, name: &str, out: &Path, key: u64) -> Result<PathBuf, String> {
    let dir = out.join("emu");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let obj = dir.join(format!("{name}.o"));
    let keyfile = dir.join(format!("{name}.key"));
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    fs::read(src).unwrap_or_default().hash(&mut h);
    env::var("CXX").ok().hash(&mut h);
    let key = format!("{:016x}", h.finish());
    if fs::read_to_string(&keyfile).ok().as_deref() == Some(key.as_str()) && obj.exists() {
        return Ok(obj);
    }
    let _ = fs::remove_file(&keyfile);
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        .opt_level(2)
        .debug(false)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .warnings(false)
        .define("MODERNBERT_EMULATOR", None)
        .include(cuda.join("include"))
        .include(cuda.join("emu"))
        .include(cuda)
        .flag("-fno-strict-aliasing")
        .flag("-Wno-unknown-pragmas")
        .flag("-x")
        .flag("c++");
    let mut cmd = b.try_get_compiler().map_err(|e| e.to_string())?.to_command();
    let tmp = dir.join(format!("{name}.o.tmp"));
    cmd.arg("-c").arg(src).arg("-o").arg(&tmp);
    let o = cmd.output().map_err(|e| format!("run the C++ compiler: {e}"))?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    fs::rename(&tmp, &obj).map_err(|e| e.to_string())?;
    fs::write(&keyfile, &key).map_err(|e| e.to_string())?;
    Ok(obj)
}

/// Finds `extern "C" __global__ void NAME(const __grid_constant__ TYPE p)` declarations.
fn scan_kernels(text: &str) -> Vec<Kernel> {
    // Drop comments first so a commented-out kernel is not registered.
    let mut clean = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
        } else {
            let c = rest.chars().next().unwrap();
            clean.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    let mut kernels = Vec::new();
    let mut from = 0;
    while let Some(i) = clean[from..].find("extern \"C\"") {
        let start = from + i;
        from = start + 10;
        let Some(open) = clean[start..].find('(').map(|j| start + j) else {
            break;
        };
        let head = &clean[start + 10..open];
        if !head.contains("__global__") {
            continue;
        }
        // `__launch_bounds__(...)` may sit between __global__ and the name.
        let (head, open) = if head.contains("__launch_bounds__") {
            let close = clean[open..].find(')').map(|j| open + j).unwrap_or(open);
            let next = clean[close..].find('(').map(|j| close + j).unwrap_or(close);
            (&clean[start + 10..next], next)
        } else {
            (head, open)
        };
        let name = head.split_whitespace().last().unwrap_or("").to_string();
        let Some(close) = clean[open..].find(')').map(|j| open + j) else {
            break;
        };
        let args: Vec<&str> = clean[open + 1..close]
            .split_whitespace()
            .filter(|t| *t != "const" && *t != "__grid_constant__")
            .collect();
        if args.len() == 2 && !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            kernels.push(Kernel {
                name,
                param_type: args[0].to_string(),
                triggers_dependents: head.split_whitespace().any(|t| t == "MB_PDL_PRIMARY"),
            });
        }
    }
    kernels
}

fn registry_source(kernels: &[(String, Vec<Kernel>)]) -> String {
    let mut s = String::from(
        "// Generated by build.rs: the emulator's kernel table.\n#include <cstring>\n#include \"registry.h\"\n#include \"params.h\"\n\n",
    );
    let all: Vec<&Kernel> = kernels.iter().flat_map(|(_, k)| k.iter()).collect();
    for k in &all {
        let _ = writeln!(s, "extern \"C\" void {}(const {} p);", k.name, k.param_type);
        let _ = writeln!(
            s,
            "static void run_{0}(const void* p) {{ {1} q; std::memcpy(&q, p, sizeof q); {0}(q); }}",
            k.name, k.param_type
        );
    }
    s.push_str("\nextern \"C\" const EmuKernel emu_kernel_table[] = {\n");
    for k in &all {
        let _ = writeln!(
            s,
            "    {{\"{0}\", sizeof({1}), run_{0}, {2}}},",
            k.name, k.param_type, k.triggers_dependents as u8
        );
    }
    s.push_str("    {nullptr, 0, nullptr, 0},\n};\n");
    let _ = writeln!(s, "extern \"C\" const size_t emu_kernel_table_len = {};", all.len());
    s
}
