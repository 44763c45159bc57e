//! cuda/attention.cu against the f32 reference (`modernbert::reference::ops::attention`).
//!
//! Device: `MODERNBERT_TEST_DEVICE` (emulator by default, `cuda` on a GPU). On the emulator every case
//! runs twice, with the threads of a block in forward and in reverse order (a missing barrier shows in
//! one of them), except the 8192-token ones (forward only, to bound the run time).
//!
//! Inputs: fresh seeded random Q, K, V each run (seed printed; `KERNEL_TEST_SEED=N` replays one),
//! uniform in [-2, 2) and rounded to the element type (scores of std ~1.3: peaked but not one-hot
//! softmax rows); the output is poisoned with NaN before every launch, so an unwritten element fails.
//!
//! Tolerance (flash-attention's rule): max |kernel - ref| <= 2 * max |naive - ref| + floor, with
//! `ref` the f32 reference on the same (rounded) inputs and `naive` what PyTorch does in bf16/fp16:
//! S = Q K^T accumulated in fp32 then scaled and rounded to the element type, softmax in fp32 of the
//! rounded scores with P rounded to the element type, O = P V accumulated in fp32 and rounded.
//! The floor is the shared one of `kernels_tests::check` (1e-6 * max(1, max |ref|)); attention does not
//! need it: where the naive computation is exact (one visible key: O = V; no visible key: O = 0) the
//! kernel is exact too (p = exp2(~0) rounds to 1, 1/l ~ 1 leaves a representable V unchanged), as the
//! local0 case checks. Every output element must also be finite (never NaN for fully masked rows).
//! Observed: kernel error 0.2-0.5x the naive error in both element types.

use kernels_tests::cases::attention::{self as cases, naive_attention, AttentionCase, AttentionRun, HEAD_DIM};
use kernels_tests::cases::Inputs;
use kernels_tests::{check, device, set_order, Failures, Rng};
use modernbert::kernels::device::Device;
use modernbert::kernels::params::AttentionParams;
use modernbert::kernels::{ops, Dtype, KernelError};
use modernbert::reference::ops::{attention as reference_attention, AttentionWindow};

fn run_all(test: &str, cases: &[AttentionCase], both_orders: bool) {
    cases::check_cases(&*device(), test, cases, both_orders);
}

#[test]
fn attention_global_edge_lengths() {
    let cases: Vec<_> = cases::cases()
        .into_iter()
        .filter(|c| c.name.starts_with("global_len"))
        .collect();
    run_all("attention_global_edge_lengths", &cases, true);
}

#[test]
fn attention_local_edge_lengths() {
    let cases: Vec<_> = cases::cases()
        .into_iter()
        .filter(|c| c.name.starts_with("local64_len"))
        .collect();
    run_all("attention_local_edge_lengths", &cases, true);
}

#[test]
fn attention_varlen_windows_key_lens() {
    let cases: Vec<_> = cases::cases()
        .into_iter()
        .filter(|c| !c.name.starts_with("global_len") && !c.name.starts_with("local64_len"))
        .collect();
    run_all("attention_varlen_windows_key_lens", &cases, true);
}

#[test]
fn attention_8192_global_bf16() {
    let cases: Vec<_> = cases::long_cases().into_iter().filter(|c| c.radius.is_none()).collect();
    run_all("attention_8192_global_bf16", &cases, false);
}

#[test]
fn attention_8192_local_f16() {
    let cases: Vec<_> = cases::long_cases().into_iter().filter(|c| c.radius.is_some()).collect();
    run_all("attention_8192_local_f16", &cases, true);
}

/// Attention launched as the programmatic dependent of a primary that writes its qkv
/// (selftest_pdl_copy: triggers its dependents, then copies): qkv must be read only after
/// griddepcontrol.wait. On the emulator the dependent runs first, up to its wait, so a read before
/// it sees the poisoned qkv (NaN in the output). Below sm_90 the launcher refuses such a launch.
#[test]
fn a_dependent_attention_reads_qkv_after_the_wait() {
    use modernbert::kernels::emu::Emulator;
    use modernbert::kernels::params::SelftestSm90Params;
    let refused = ops::attention(&Emulator::new(), Dtype::Bf16, &AttentionParams::default(), true);
    match refused {
        Err(KernelError::Unsupported { message, .. }) => assert!(message.contains("sm_90"), "{message}"),
        other => panic!("a dependent launch on sm_80 must be refused, got {other:?}"),
    }
    let env = device();
    let dev: Box<dyn Device> = if env.as_emulator().is_some() {
        Box::new(Emulator::new().with_compute_capability((9, 0)))
    } else if env.compute_capability() < (9, 0) {
        eprintln!(
            "SKIP: {} is below sm_90: no programmatic dependent launch to test",
            env.name()
        );
        return;
    } else {
        env
    };
    let cases: Vec<_> = cases::cases()
        .into_iter()
        .filter(|c| c.name == "global_varlen_a" || c.name == "local64_varlen_a")
        .collect();
    assert_eq!(cases.len(), 2);
    let mut rng = Rng::for_test("attention_dependent");
    let mut failures = Failures::default();
    for case in &cases {
        for &dt in case.dtypes {
            let mut run = AttentionRun::new(&*dev, case, &mut Inputs::drawn(&mut rng, dt));
            let source = kernels_tests::upload(&*dev, dt, &run.qkv, "qkv source");
            let mut reference = vec![0f32; case.tokens() * case.heads * HEAD_DIM];
            let window = case
                .radius
                .map_or(AttentionWindow::Global, |radius| AttentionWindow::Local { radius });
            let (qkv, cu) = (&run.qkv, &run.cu_seqlens);
            reference_attention(qkv, cu, None, case.heads, HEAD_DIM, window, &mut reference);
            let mut naive = vec![0f32; reference.len()];
            naive_attention(dt, &run.qkv, case, &mut naive);
            for reverse in kernels_tests::orders(&*dev) {
                let order = set_order(&*dev, reverse);
                let what = format!("{} {dt:?} {order}", case.name);
                run.poison_qkv(&*dev);
                run.poison_out(&*dev);
                let copy = SelftestSm90Params {
                    in_: source.addr(),
                    out: run.params.qkv,
                    n: (run.qkv.len() / 2) as u32, // u32 words of 2-byte elements
                    ..Default::default()
                };
                let launched = dev
                    .launch("selftest_pdl_copy", [4, 1, 1], [128, 1, 1], 0, &copy)
                    .and_then(|_| ops::attention(&*dev, dt, &run.params, true))
                    .and_then(|_| dev.synchronize());
                if let Err(e) = launched {
                    failures.fail(format!("{what}: {e}"));
                    continue;
                }
                let out = run.out(&*dev);
                if let Some(i) = out.iter().position(|v| !v.is_finite()) {
                    failures.fail(format!("{what}: output {} at {i}: qkv read before the wait?", out[i]));
                    continue;
                }
                failures.push(check(&what, &out, &naive, &reference));
            }
        }
    }
    failures.finish();
}

#[test]
fn attention_rejects_other_head_dims() {
    let dev = device();
    let p = AttentionParams {
        qkv: 0,
        out: 0,
        cu_seqlens: 0,
        key_lens: 0,
        batch: 0,
        max_sequences: 1,
        max_seqlen: 16,
        heads: 1,
        head_dim: 2 * HEAD_DIM as u32,
        window_radius: -1,
        softmax_scale: 1.0 / (2.0 * HEAD_DIM as f32).sqrt(),
    };
    for dt in [Dtype::Bf16, Dtype::F16] {
        match ops::attention(&*dev, dt, &p, false) {
            Err(KernelError::Unsupported { message, .. }) => {
                assert!(message.contains(&format!("head_dim {}", 2 * HEAD_DIM)), "{message}")
            }
            other => panic!("head_dim {} must be rejected on the host, got {other:?}", 2 * HEAD_DIM),
        }
    }
}

/// Static check: the attention kernels use the tensor cores (HMMA in the SASS of every built arch).
#[test]
fn attention_sass_uses_tensor_cores() {
    use modernbert::kernels::build_info;
    let require = std::env::var("MODERNBERT_REQUIRE_KERNELS").is_ok_and(|v| v == "1");
    if build_info::fatbin("attention").is_none() {
        assert!(
            !require,
            "MODERNBERT_REQUIRE_KERNELS=1 but nvcc did not build cuda/attention.cu"
        );
        eprintln!("SKIP: nvcc did not build cuda/attention.cu in this build (no SASS to check)");
        return;
    }
    // ptxas: no spills, within the budget the kernel's header states (<= 170 registers, 40 KiB smem).
    let report = std::fs::read_to_string(build_info::ptxas_report("attention").expect("ptxas report"))
        .expect("read the ptxas report of attention.cu");
    let mut entries = 0;
    for line in report.lines() {
        if line.contains("spill") {
            assert!(
                line.contains(" 0 bytes spill stores, 0 bytes spill loads"),
                "attention spills: {line}"
            );
        }
        if let Some(rest) = line.split("Used ").nth(1) {
            let regs: u32 = rest.split(' ').next().unwrap().parse().unwrap();
            assert!(regs <= 170, "attention uses {regs} registers (budget 170): {line}");
            let smem = format!("{} bytes smem", modernbert::kernels::params::MB_ATTENTION_SMEM_BYTES);
            assert!(
                line.contains(&smem),
                "attention shared memory is not MB_ATTENTION_SMEM_BYTES ({smem}): {line}"
            );
            entries += 1;
        }
    }
    assert!(
        entries >= 2 * build_info::CUDA_ARCHS.len(),
        "ptxas report has {entries} kernel entries:\n{report}"
    );
    if build_info::cuobjdump().is_none() {
        assert!(
            !require,
            "MODERNBERT_REQUIRE_KERNELS=1 but cuobjdump was not found (CUOBJDUMP, next to nvcc, .toolchain)"
        );
        eprintln!("SKIP: cuobjdump not found (CUOBJDUMP, next to nvcc, .toolchain)");
        return;
    }
    assert!(!build_info::CUDA_ARCHS.is_empty());
    for &arch in build_info::CUDA_ARCHS {
        for k in ["attention_bf16", "attention_f16"] {
            let sass = build_info::kernel_sass("attention", k, arch).unwrap_or_else(|e| panic!("{k} sm_{arch}: {e}"));
            let hmma = sass.matches("HMMA.16816.F32").count();
            assert!(
                hmma >= 64,
                "{k} sm_{arch}: {hmma} HMMA.16816.F32 instructions (expected >= 64: 32 for QK^T, 32 for PV)"
            );
            assert!(sass.contains("LDSM"), "{k} sm_{arch}: no ldmatrix (LDSM) in the SASS");
        }
    }
}
