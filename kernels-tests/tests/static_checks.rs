//! Static checks of the compiled kernels (no GPU needed; nvcc and cuobjdump from
//! scripts/install-toolchain.sh): every source built, 0 spill bytes in every ptxas report, the
//! embedded PTX is ISA 9.0 (what driver 580 JIT-compiles), every emulated kernel exists in the
//! fatbin for every arch, and the memory-bound kernels use 128-bit global loads/stores.
//!
//! These fail (never skip) when the kernels were not built: CI installs nvcc.
use modernbert::kernels::build_info;

fn require_built() {
    assert!(
        build_info::NVCC.is_some(),
        "CUDA kernels were not built (no nvcc at build time): run scripts/install-toolchain.sh, \
         export the NVCC it prints, and rebuild"
    );
    assert!(
        build_info::NVCC_FAILED.is_empty(),
        "nvcc failed on: {:?}",
        build_info::NVCC_FAILED
    );
    assert!(
        build_info::EMU_FAILED.is_empty(),
        "the host compiler failed on: {:?}",
        build_info::EMU_FAILED
    );
    for s in build_info::SOURCES {
        assert!(build_info::NVCC_BUILT.contains(s), "cuda/{s}.cu has no fatbin");
    }
}

fn cuobjdump_required() {
    assert!(
        build_info::cuobjdump().is_some(),
        "cuobjdump not found (CUOBJDUMP, next to nvcc, .toolchain): run scripts/install-toolchain.sh"
    );
}

/// (kernel, arch, registers, spill stores, spill loads, stack frame) from a ptxas -v report.
fn parse_ptxas(report: &str) -> Vec<(String, String, u32, u32, u32, u32)> {
    let mut out = Vec::new();
    let (mut kernel, mut arch) = (String::new(), String::new());
    let mut spill = None;
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let mut it = rest.split('\'');
            kernel = it.next().unwrap_or("").to_string();
            arch = rest
                .split("for '")
                .nth(1)
                .unwrap_or("")
                .trim_end_matches('\'')
                .to_string();
        } else if line.contains("bytes spill stores") {
            let nums: Vec<u32> = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|s| s.parse().ok())
                .collect();
            spill = Some((nums[0], nums[1], nums[2])); // stack frame, spill stores, spill loads
        } else if let Some(rest) = line.split("Used ").nth(1) {
            let regs: u32 = rest.split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(0);
            if let Some((stack, st, ld)) = spill.take() {
                out.push((kernel.clone(), arch.clone(), regs, st, ld, stack));
            }
        }
    }
    out
}

#[test]
fn every_source_was_compiled() {
    require_built();
}

/// The GPU device finds each kernel through the fatbin kernel table (one module per source): every
/// kernel the emulator registers must be listed there, under the same source.
#[test]
fn every_kernel_is_in_the_fatbin_table() {
    require_built();
    let table = modernbert::kernels::fatbins::FATBIN_KERNELS;
    for (kernel, source, _) in build_info::KERNELS {
        assert!(
            table.contains(&(*kernel, *source)),
            "{kernel} ({source}.cu) is missing from FATBIN_KERNELS"
        );
    }
    assert_eq!(table.len(), build_info::KERNELS.len(), "{table:?}");
}

#[test]
fn no_kernel_spills_registers() {
    require_built();
    let mut bad = Vec::new();
    let mut entries = 0;
    for s in build_info::NVCC_BUILT {
        let path = build_info::ptxas_report(s).unwrap();
        let report = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let parsed = parse_ptxas(&report);
        assert!(!parsed.is_empty(), "no kernel entries in {}", path.display());
        for (k, arch, regs, st, ld, stack) in parsed {
            entries += 1;
            if arch == "sm_90" {
                eprintln!("{s:>10} {k:<24} {arch}: {regs:>3} registers, {stack} B stack, spills {st}/{ld}");
            }
            if st != 0 || ld != 0 {
                bad.push(format!("{k} ({arch}): {st} bytes spill stores, {ld} bytes spill loads"));
            }
        }
    }
    assert!(entries > 0);
    assert!(bad.is_empty(), "register spills:\n{}", bad.join("\n"));
}

#[test]
fn embedded_ptx_is_isa_9_0() {
    require_built();
    for s in build_info::NVCC_BUILT {
        let path = build_info::ptx(s).unwrap();
        let ptx = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let version = ptx.lines().find(|l| l.starts_with(".version")).unwrap_or("");
        assert_eq!(
            version.trim(),
            ".version 9.0",
            "{s}: PTX ISA must be 9.0 (driver 580 rejects newer)"
        );
        if is_hopper(s) {
            assert!(
                ptx.contains(".target sm_90a"),
                "{s}: a Hopper source's PTX must target sm_90a"
            );
        } else {
            assert!(ptx.contains(".target sm_80"), "{s}: PTX must target sm_80");
        }
    }
    // The fatbins embedded in the binary are the files the checks read, and the PTX inside each
    // (what the driver JIT-compiles on an arch without SASS) is ISA 9.0 too.
    cuobjdump_required();
    let tool = build_info::cuobjdump().unwrap();
    for (name, bytes, _) in modernbert::kernels::fatbins::FATBINS {
        let path = build_info::fatbin(name).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[..], *bytes, "{name}: embedded fatbin differs from OUT_DIR");
        let o = std::process::Command::new(&tool)
            .arg("-ptx")
            .arg(&path)
            .output()
            .expect("run cuobjdump");
        let text = String::from_utf8_lossy(&o.stdout);
        let versions: Vec<&str> = text.lines().filter(|l| l.starts_with(".version")).collect();
        if is_hopper(name) {
            // sm_90a code cannot be JIT-compiled for another arch: SASS only, by design.
            assert!(versions.is_empty(), "{name}: a Hopper fatbin carries PTX {versions:?}");
            continue;
        }
        assert!(!versions.is_empty(), "{name}: no PTX in the fatbin");
        assert!(
            versions.iter().all(|v| v.trim() == ".version 9.0"),
            "{name}: embedded PTX {versions:?}"
        );
    }
}

#[test]
fn every_kernel_is_in_every_arch() {
    require_built();
    cuobjdump_required();
    for &arch in build_info::CUDA_ARCHS {
        for s in build_info::NVCC_BUILT.iter().filter(|s| !is_hopper(s) || arch == "90") {
            let sass = build_info::sass(s, arch).unwrap_or_else(|e| panic!("{s} sm_{arch}: {e}"));
            for (k, src, _) in build_info::KERNELS.iter().filter(|(_, src, _)| src == s) {
                assert!(
                    sass.contains(&format!("Function : {k}")),
                    "{k} missing from the sm_{arch} SASS of {src}"
                );
            }
        }
    }
}

/// `*_sm90.cu` (build.rs): sm_90a code only.
fn is_hopper(source: &str) -> bool {
    source.ends_with("_sm90")
}

/// The Hopper sources exist only as sm_90a SASS, and that SASS uses the instructions their headers
/// promise: warpgroup MMA (HGMMA), TMA loads (UTMALDG) and stores (UTMASTG), the register
/// reallocation of warp specialisation (USETMAXREG); and the GEMM gets the registers its header
/// states (the 384-thread bound: 65,536 / 384 rounded down to 8 = 168) with no spills.
#[test]
fn hopper_kernels_use_hopper_instructions() {
    require_built();
    cuobjdump_required();
    if !build_info::CUDA_ARCHS.contains(&"90") {
        eprintln!("SKIPPED: MODERNBERT_CUDA_ARCHS has no 90, so no sm_90a code was built");
        return;
    }
    let hopper: Vec<&str> = build_info::NVCC_BUILT
        .iter()
        .copied()
        .filter(|s| is_hopper(s))
        .collect();
    assert!(
        hopper.contains(&"gemm_sm90") && hopper.contains(&"selftest_sm90"),
        "{hopper:?}"
    );
    for (kernel, needs) in [
        (
            "gemm_sm90_bf16",
            &[
                "HGMMA.64x128x16.F32.BF16",
                "UTMALDG.2D",
                "UTMASTG.2D",
                "USETMAXREG",
                "SYNCS",
            ][..],
        ),
        (
            "gemm_sm90_f16",
            &["HGMMA.64x128x16.F32", "UTMALDG.2D", "UTMASTG.2D", "USETMAXREG", "SYNCS"][..],
        ),
        (
            "gemm_sm90_geglu_bf16",
            &["HGMMA.64x128x16.F32.BF16", "UTMALDG.2D", "UTMASTG.2D", "USETMAXREG"][..],
        ),
        (
            "gemm_sm90_rope_bf16",
            &["HGMMA.64x128x16.F32.BF16", "UTMALDG.2D", "UTMASTG.2D", "USETMAXREG"][..],
        ),
        (
            "gemm_sm90_residual_f16",
            &["HGMMA.64x128x16.F32", "UTMALDG.2D", "UTMASTG.2D", "USETMAXREG", "SYNCS"][..],
        ),
        ("selftest_wgmma", &["HGMMA.64x256x16", "HGMMA.64x64x16"][..]),
        ("selftest_tma_load", &["UTMALDG.2D", "UTMALDG.3D", "UTMALDG.5D"][..]),
        // x multicast to the cluster (a plain bulk copy for a cluster of one), the cluster barrier.
        (
            "gemm_stream_sm90_bf16",
            &[
                "UBLKCP.S.G.MULTICAST",
                "UBLKCP.S.G ",
                "UCGABAR_ARV",
                "UCGABAR_WAIT",
                "HMMA.16816.F32.BF16",
            ][..],
        ),
        (
            "selftest_cluster_multicast",
            &["UBLKCP.S.G.MULTICAST", "UCGABAR_ARV", "UCGABAR_WAIT"][..],
        ),
        // S = Q Kᵀ from shared memory (128 keys; 64 in the window kernel), P·V with P in registers
        // and V MN-major (.tnspB), TMA loads, the producer / consumer register split.
        (
            "attention_sm90_bf16",
            &[
                "HGMMA.64x128x16.F32.BF16",
                "HGMMA.64x64x16.F32.BF16 R",
                ".tnspB",
                "UTMALDG.2D",
                "USETMAXREG",
                "SYNCS",
            ][..],
        ),
        (
            "attention_sm90_local_f16",
            &["HGMMA.64x64x16.F32", ".tnspB", "UTMALDG.2D", "USETMAXREG"][..],
        ),
    ] {
        let source = if kernel.starts_with("gemm_stream") {
            "gemm_stream_sm90"
        } else if kernel.starts_with("attention_sm90") {
            "attention_sm90"
        } else if kernel.starts_with("gemm") {
            "gemm_sm90"
        } else {
            "selftest_sm90"
        };
        let sass = build_info::kernel_sass(source, kernel, "90").unwrap_or_else(|e| panic!("{kernel}: {e}"));
        for n in needs {
            assert!(sass.contains(n), "{kernel}: no {n} in its sm_90a SASS");
        }
    }
    let report = std::fs::read_to_string(build_info::ptxas_report("gemm_sm90").unwrap()).unwrap();
    let gemm: Vec<_> = parse_ptxas(&report)
        .into_iter()
        .filter(|e| e.0.starts_with("gemm_sm90"))
        .collect();
    assert_eq!(
        gemm.len(),
        8,
        "the store, GeGLU, RoPE and residual epilogues, bf16 and fp16: {gemm:?}"
    );
    for (k, arch, regs, st, ld, stack) in gemm {
        assert_eq!(arch, "sm_90a", "{k}");
        assert_eq!(regs, 168, "{k}: the header states 168 registers before setmaxnreg");
        assert_eq!((st, ld), (0, 0), "{k}: spills");
        // sincosf's slow path (Payne-Hanek reduction, for |angle| > 105,615; a ModernBERT angle is
        // at most its position, < 8192) keeps its 28-byte table on a stack frame; no other
        // epilogue may have one.
        let allowed = if k.starts_with("gemm_sm90_rope") { 32 } else { 0 };
        assert!(
            stack <= allowed,
            "{k}: a stack frame of {stack} bytes (allowed {allowed})"
        );
    }
    for (name, _, only_sm) in modernbert::kernels::fatbins::FATBINS {
        assert_eq!(*only_sm, if is_hopper(name) { 90 } else { 0 }, "{name}");
    }
}

/// The product's wgmma kernels keep their MMAs asynchronous. ptxas serializes every wgmma of a
/// kernel (a wait after each; its "Potential Performance Loss" notes C7514-C7520) when a register
/// of an MMA in flight is touched by other code or a wgmma sits on a path it cannot prove
/// warp-uniform — the code still runs correctly, only slower, so no other test would see it.
/// attention_sm90 must also overlap: S_t retired while P_{t-1}·V_{t-1} is still in flight
/// (`WARPGROUP.DEPBAR.LE gsb0, 0x1`). The instruments of selftest_sm90 are exempt.
#[test]
fn hopper_wgmmas_stay_asynchronous() {
    require_built();
    cuobjdump_required();
    if !build_info::CUDA_ARCHS.contains(&"90") {
        eprintln!("SKIPPED: MODERNBERT_CUDA_ARCHS has no 90, so no sm_90a code was built");
        return;
    }
    for source in ["gemm_sm90", "attention_sm90"] {
        let report = std::fs::read_to_string(build_info::ptxas_report(source).unwrap()).unwrap();
        let entries = parse_ptxas(&report);
        assert!(entries.len() >= 4, "{source}: {entries:?}");
        for (k, _, regs, st, ld, stack) in entries {
            assert_eq!((st, ld), (0, 0), "{k}: spills");
            if source == "attention_sm90" {
                assert_eq!(
                    (regs, stack),
                    (168, 0),
                    "{k}: the header states 168 registers and no stack frame"
                );
            }
        }
        let serialized: Vec<&str> = report.lines().filter(|l| l.contains("Performance Loss")).collect();
        assert!(
            serialized.is_empty(),
            "{source}: ptxas serialized its wgmmas:\n{}",
            serialized.join("\n")
        );
    }
    for kernel in [
        "attention_sm90_bf16",
        "attention_sm90_f16",
        "attention_sm90_local_bf16",
        "attention_sm90_local_f16",
    ] {
        let sass = build_info::kernel_sass("attention_sm90", kernel, "90").unwrap_or_else(|e| panic!("{kernel}: {e}"));
        assert!(
            sass.contains("WARPGROUP.DEPBAR.LE gsb0, 0x1"),
            "{kernel}: no wait that leaves one wgmma group in flight (P·V under the softmax)"
        );
    }
}

/// A grid barrier's flag loads stay in flight together and end in an acquire fence
/// (grid_wait_all_geq, device.cuh): in the SASS of the persistent forward and of the hand-off
/// microbenchmark's persistent way, at least MB_GRID_WAIT_BATCH strong loads with no branch,
/// barrier, sleep or other memory access between them; none followed at once by an acquire's L1
/// invalidation (`LDG.E.STRONG.GPU` then `CCTL.IVALL`: the form that waited a round trip for each
/// flag in turn); and the fence.acq_rel.gpu (`MEMBAR.*.GPU`, then `CCTL.IVALL` with no memory
/// access between — a release has a store there, an acquiring atomic its atomic). Without the
/// fence the barrier would read other blocks' writes unordered, which the emulator's sequentially
/// consistent memory cannot show; without the batch it would only be slower.
#[test]
fn grid_barriers_load_their_flags_together_then_fence() {
    require_built();
    cuobjdump_required();
    if !build_info::CUDA_ARCHS.contains(&"90") {
        eprintln!("SKIPPED: MODERNBERT_CUDA_ARCHS has no 90, so no sm_90a code was built");
        return;
    }
    let batch = modernbert::kernels::params::MB_GRID_WAIT_BATCH as usize;
    for (source, kernel) in [
        ("forward_small_sm90", "forward_small_sm90_bf16"),
        ("forward_small_sm90", "forward_small_sm90_f16"),
        ("handoff_sm90", "handoff_persistent"),
    ] {
        let sass = build_info::kernel_sass(source, kernel, "90").unwrap_or_else(|e| panic!("{kernel}: {e}"));
        // The instructions in order, without addresses, encodings or predicates.
        let ops: Vec<&str> = sass
            .lines()
            .filter_map(|l| l.split_once("*/").map(|(_, op)| op.trim()))
            .filter(|op| !op.is_empty() && !op.starts_with("/*"))
            .map(|op| match op.strip_prefix('@') {
                Some(rest) => rest.split_once(' ').map_or(rest, |(_, op)| op.trim()),
                None => op,
            })
            .collect();
        let strong = |op: &str| op.starts_with("LDG.E.STRONG.GPU");
        let memory = |op: &str| {
            ["LD", "ST", "ATOM", "RED", "MEMBAR", "CCTL"]
                .iter()
                .any(|m| op.starts_with(m))
        };
        let control = |op: &str| {
            [
                "BRA",
                "BRX",
                "JMP",
                "CALL",
                "RET",
                "EXIT",
                "BAR",
                "WARPSYNC",
                "BSYNC",
                "NANOSLEEP",
            ]
            .iter()
            .any(|m| op.starts_with(m))
        };
        let serial = ops
            .windows(2)
            .filter(|w| strong(w[0]) && w[1].starts_with("CCTL.IVALL"))
            .count();
        assert_eq!(
            serial, 0,
            "{kernel}: a flag's load waited for before the next (an acquire per flag)"
        );
        let (mut run, mut longest) = (0usize, 0usize);
        for op in &ops {
            if strong(op) {
                run += 1;
                longest = longest.max(run);
            } else if memory(op) || control(op) {
                run = 0;
            }
        }
        assert!(
            longest >= batch,
            "{kernel}: at most {longest} flag loads in flight together, not the {batch} of a round"
        );
        let fences = (0..ops.len())
            .filter(|&k| ops[k].starts_with("MEMBAR") && ops[k].contains("GPU"))
            .filter(|&k| {
                ops[k + 1..ops.len().min(k + 4)]
                    .iter()
                    .take_while(|op| !(memory(op) && !op.starts_with("CCTL")))
                    .any(|op| op.starts_with("CCTL.IVALL"))
            })
            .count();
        assert!(
            fences >= 1,
            "{kernel}: no acquire fence (MEMBAR.*.GPU, then CCTL.IVALL)"
        );
    }
}

#[test]
fn memory_bound_kernels_use_128_bit_accesses() {
    require_built();
    cuobjdump_required();
    // (source, kernel, needs LDG.E.128, needs STG.E.128)
    let kernels: &[(&str, &str, bool, bool)] = &[
        ("layernorm", "layernorm", true, true),
        ("embeddings", "embeddings", true, true),
        ("rope", "rope", true, true),
        ("geglu", "geglu", true, true),
        ("gather", "gather_rows", true, true),
        ("pooling", "pool", true, false), // fp32 output: out_dim floats per sequence, scalar stores
        ("mlm_head", "head_act_norm", true, true),
        ("colbert", "colbert_normalize", true, true),
    ];
    let mut bad = Vec::new();
    for &arch in build_info::CUDA_ARCHS {
        for (src, base, ldg, stg) in kernels {
            for dt in ["_bf16", "_f16"] {
                let k = format!("{base}{dt}");
                let sass = build_info::kernel_sass(src, &k, arch).unwrap_or_else(|e| panic!("{k} sm_{arch}: {e}"));
                if *ldg && !sass.contains("LDG.E.128") {
                    bad.push(format!("{k} sm_{arch}: no 128-bit global load (LDG.E.128)"));
                }
                if *stg && !sass.contains("STG.E.128") {
                    bad.push(format!("{k} sm_{arch}: no 128-bit global store (STG.E.128)"));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Launch geometry has one home, `cuda/include/params.h` (`MB_*`), which the launchers of
/// src/kernels/ops.rs read too: a kernel source that declares its own thread count or tile size, or
/// writes a literal in `__launch_bounds__`, could drift from what the host launches. Needs no nvcc.
#[test]
fn kernels_take_their_geometry_from_params_h() {
    let cuda = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cuda");
    let mut sources = Vec::new();
    for dir in [cuda.clone(), cuda.join("include")] {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if matches!(path.extension().and_then(|e| e.to_str()), Some("cu" | "cuh")) {
                sources.push(path);
            }
        }
    }
    assert!(sources.len() >= 10, "found only {sources:?}");
    let geometry_words = ["threads", "block_m", "blockm", "block_n", "blockn", "tile"];
    let mut bad = Vec::new();
    let mut launch_bounds = 0;
    for path in &sources {
        let text = std::fs::read_to_string(path).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("").trim();
            if code.starts_with('*') || code.starts_with("/*") {
                continue; // inside a block comment (the kernels' headers)
            }
            let at = format!("{}:{}: {line}", path.display(), i + 1);
            if let Some(rest) = code.split("__launch_bounds__(").nth(1) {
                launch_bounds += 1;
                if !rest.starts_with("MB_") {
                    bad.push(format!("{at}  (__launch_bounds__ must name an MB_* of params.h)"));
                }
            }
            // `constexpr int kName = 128;` or `#define NAME 128`: (name, value).
            let declared = if let Some(d) = code.strip_prefix("#define ") {
                d.split_once(char::is_whitespace)
            } else if code.starts_with("constexpr ") || code.starts_with("static constexpr ") {
                code.split_once('=')
                    .map(|(lhs, rhs)| (lhs.split_whitespace().last().unwrap_or(""), rhs))
            } else {
                None
            };
            if let Some((name, value)) = declared {
                let name = name.to_ascii_lowercase();
                let literal = value.trim().starts_with(|c: char| c.is_ascii_digit());
                if geometry_words.iter().any(|w| name.contains(w)) && literal {
                    bad.push(format!("{at}  (a geometry constant belongs in params.h as MB_*)"));
                }
            }
        }
    }
    assert!(launch_bounds >= 20, "only {launch_bounds} __launch_bounds__ found");
    assert!(bad.is_empty(), "launch geometry outside params.h:\n{}", bad.join("\n"));
}

/// The layers of src/kernels point one way: `gemm` (the GEMM descriptor) is a leaf, the host GEMM
/// needs only it, the emulator needs neither the device layer nor the CPU reference executor, and
/// the device layer sits on top. A `use` against that direction would close a module circle.
#[test]
fn kernel_modules_point_one_way() {
    let kernels = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../src/kernels");
    // (module, paths it must not name)
    let rules: &[(&str, &[&str])] = &[
        (
            "gemm.rs",
            &[
                "super::device",
                "super::emu",
                "super::gemm_host",
                "super::cuda",
                "crate::reference",
            ],
        ),
        (
            "gemm_host.rs",
            &["super::device", "super::emu", "super::cuda", "crate::reference"],
        ),
        ("emu.rs", &["super::device", "super::cuda", "crate::reference"]),
        // The trait and its buffers know no backend's code: cuda.rs implements them, and
        // kernels::from_env picks a backend.
        ("device.rs", &["super::cuda", "crate::reference"]),
    ];
    let mut bad = Vec::new();
    for (file, forbidden) in rules {
        let path = kernels.join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for f in *forbidden {
                if code.contains(f) {
                    bad.push(format!("src/kernels/{file}:{}: {} (names {f})", i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "a module depends against the layering:\n{}",
        bad.join("\n")
    );
}
