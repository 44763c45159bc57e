//! Self-test of the device primitives (cuda/selftest.cu → device.cuh): mma.m16n8k16 (bf16, fp16),
//! ldmatrix (x4, x2, trans), cp.async, shuffles, votes, packing and conversions.
//!
//! On the emulator: against plain scalar computations (a scalar matrix product, CUDA's documented
//! shuffle semantics, the `half` crate's round-to-nearest-even) — this proves the emulated fragment
//! layouts. On a GPU (`MODERNBERT_TEST_DEVICE=cuda`): additionally the same inputs through the
//! emulator, compared bit for bit (mma on small-integer inputs, whose exact sums every accumulation
//! order gives; on general inputs within a few f32 ulps, the hardware's order being unspecified).
#![allow(clippy::too_many_arguments, clippy::needless_range_loop)]
use kernels_tests::*;
use modernbert::kernels::emu::Emulator;
use modernbert::kernels::params::SelftestParams;

fn bits(dt: Dtype, v: f32) -> u16 {
    match dt {
        Dtype::Bf16 => half::bf16::from_f32(v).to_bits(),
        Dtype::F16 => half::f16::from_f32(v).to_bits(),
    }
}

fn pack_u16(x: &[u16]) -> Vec<u32> {
    x.chunks(2).map(|c| c[0] as u32 | (c[1] as u32) << 16).collect()
}

/// Runs `kernel` on `dev` with input words `input`, returning `out_words` output words.
fn run(
    dev: &dyn Device,
    kernel: &str,
    input: &[u32],
    out_words: usize,
    grid: u32,
    block: u32,
    n: u32,
    mode: u32,
) -> Vec<u32> {
    let d_in = upload_u32(dev, input, "in");
    let d_out = poisoned(dev, out_words * 4, "out");
    let p = SelftestParams {
        in_: d_in.addr(),
        out: d_out.addr(),
        n,
        mode,
    };
    dev.launch(kernel, [grid, 1, 1], [block, 1, 1], 0, &p)
        .unwrap_or_else(|e| panic!("{kernel}: {e}"));
    dev.synchronize().unwrap();
    bytes_u32(&dev.download_vec(&d_out).unwrap())
}

/// On a GPU, the emulator's answer for the same launch (bit-for-bit comparisons).
fn emulated(kernel: &str, input: &[u32], out_words: usize, grid: u32, block: u32, n: u32, mode: u32) -> Vec<u32> {
    let emu = Emulator::new();
    run(&emu, kernel, input, out_words, grid, block, n, mode)
}

/// A (16x16), B (16x8, [k][n]), C (16x8 f32) → the input words of selftest_mma_*.
fn mma_input(dt: Dtype, a: &[f32], b: &[f32], c: &[f32]) -> Vec<u32> {
    let mut w = pack_u16(&a.iter().map(|&v| bits(dt, v)).collect::<Vec<_>>());
    w.extend(pack_u16(&b.iter().map(|&v| bits(dt, v)).collect::<Vec<_>>()));
    w.extend(c.iter().map(|v| v.to_bits()));
    w
}

fn matmul(a: &[f32], b: &[f32], c: &[f32]) -> Vec<f32> {
    let mut d = vec![0f32; 128];
    for i in 0..16 {
        for j in 0..8 {
            let mut s = c[i * 8 + j] as f64;
            for k in 0..16 {
                s += a[i * 16 + k] as f64 * b[k * 8 + j] as f64;
            }
            d[i * 8 + j] = s as f32;
        }
    }
    d
}

#[test]
fn mma_m16n8k16_matches_scalar_product() {
    let dev = device();
    let mut rng = Rng::for_test("selftest mma");
    for dt in DTYPES {
        let kernel = match dt {
            Dtype::Bf16 => "selftest_mma_bf16",
            Dtype::F16 => "selftest_mma_f16",
        };
        for trial in 0..6 {
            let exact = trial % 2 == 0;
            let gen = |rng: &mut Rng, n: usize| -> Vec<f32> {
                (0..n)
                    .map(|_| {
                        if exact {
                            rng.below(17) as f32 - 8.0
                        } else {
                            round(dt, rng.normal())
                        }
                    })
                    .collect()
            };
            let (a, b) = (gen(&mut rng, 256), gen(&mut rng, 128));
            let c: Vec<f32> = if exact {
                (0..128).map(|_| rng.below(64) as f32 - 32.0).collect()
            } else {
                (0..128).map(|_| rng.normal()).collect()
            };
            let input = mma_input(dt, &a, &b, &c);
            let got: Vec<f32> = run(&*dev, kernel, &input, 128, 1, 32, 0, 0)
                .iter()
                .map(|&u| f32::from_bits(u))
                .collect();
            let want = matmul(&a, &b, &c);
            for i in 0..128 {
                let scale: f32 = (0..16)
                    .map(|k| (a[(i / 8) * 16 + k] * b[k * 8 + i % 8]).abs())
                    .sum::<f32>()
                    + c[i].abs();
                let tol = if exact { 0.0 } else { 4.0 * f32::EPSILON * scale };
                assert!(
                    (got[i] - want[i]).abs() <= tol,
                    "{kernel} trial {trial}: D[{}][{}] = {} want {} (a wrong fragment index?)",
                    i / 8,
                    i % 8,
                    got[i],
                    want[i]
                );
            }
            if is_gpu(&*dev) && exact {
                let emu = emulated(kernel, &input, 128, 1, 32, 0, 0);
                assert_eq!(
                    run(&*dev, kernel, &input, 128, 1, 32, 0, 0),
                    emu,
                    "{kernel}: GPU and emulator differ"
                );
            }
        }
    }
}

#[test]
fn ldmatrix_layouts() {
    let dev = device();
    let mut rng = Rng::for_test("selftest ldmatrix");
    // A 16 x 24 tile of distinct 16-bit values.
    let tile: Vec<u16> = (0..16 * 24).map(|_| rng.next_u64() as u16).collect();
    let input = pack_u16(&tile);
    // Matrix j, row r comes from lane 8j + r, which points at row (lane & 15), column 8 (lane >> 4).
    let m = |j: usize, r: usize, c: usize| -> u16 {
        let lane = 8 * j + r;
        tile[(lane & 15) * 24 + 8 * (lane >> 4) + c]
    };
    for mode in 0..4u32 {
        let count = if mode < 2 { 4 } else { 2 };
        let trans = mode % 2 == 1;
        let got = run(&*dev, "selftest_ldmatrix", &input, 128, 1, 32, 0, mode);
        for lane in 0..32 {
            let (g, t) = (lane >> 2, lane & 3);
            for j in 0..4 {
                let want = if j >= count {
                    0
                } else if trans {
                    m(j, 2 * t, g) as u32 | (m(j, 2 * t + 1, g) as u32) << 16
                } else {
                    m(j, g, 2 * t) as u32 | (m(j, g, 2 * t + 1) as u32) << 16
                };
                assert_eq!(
                    got[lane * 4 + j],
                    want,
                    "ldmatrix mode {mode}: lane {lane} register {j}"
                );
            }
        }
        if is_gpu(&*dev) {
            assert_eq!(
                got,
                emulated("selftest_ldmatrix", &input, 128, 1, 32, 0, mode),
                "ldmatrix mode {mode}: GPU vs emulator"
            );
        }
    }
}

#[test]
fn cp_async_ldmatrix_mma_pipeline() {
    // A via ldmatrix_x4, B via ldmatrix_x2_trans from a row-major [k][n] tile: the product must be
    // A·B, which holds only if the ldmatrix layouts produce exactly the mma fragments.
    let dev = device();
    let mut rng = Rng::for_test("selftest ldmatrix+mma");
    for reverse in orders(&*dev) {
        set_order(&*dev, reverse);
        let a: Vec<f32> = (0..256).map(|_| rng.below(17) as f32 - 8.0).collect();
        let b: Vec<f32> = (0..128).map(|_| rng.below(17) as f32 - 8.0).collect();
        let mut input = pack_u16(&a.iter().map(|&v| bits(Dtype::Bf16, v)).collect::<Vec<_>>());
        input.extend(pack_u16(&b.iter().map(|&v| bits(Dtype::Bf16, v)).collect::<Vec<_>>()));
        let got: Vec<f32> = run(&*dev, "selftest_ldmatrix_mma", &input, 128, 1, 32, 0, 0)
            .iter()
            .map(|&u| f32::from_bits(u))
            .collect();
        assert_eq!(got, matmul(&a, &b, &[0.0; 128]), "ldmatrix + mma pipeline");
    }
}

#[test]
fn shuffles_and_votes() {
    let dev = device();
    let mut rng = Rng::for_test("selftest shuffle");
    for reverse in orders(&*dev) {
        set_order(&*dev, reverse);
        let v: Vec<u32> = (0..64).map(|_| rng.below(16)).collect();
        let got = run(&*dev, "selftest_shuffle", &v, 64 * 16, 1, 64, 0, 0);
        for t in 0..64usize {
            let (w, l) = (t / 32 * 32, t % 32);
            let at = |src: usize| v[w + src];
            let seg = |width: usize| l / width * width;
            let mut want = [0u32; 16];
            for i in 0..5 {
                want[i] = at(l ^ (1 << i));
            }
            want[5] = at((l * 7 + 3) & 31);
            want[6] = if l + 3 < 32 { at(l + 3) } else { at(l) };
            want[7] = if l >= 5 { at(l - 5) } else { at(l) };
            want[8] = at(l ^ 4); // stays inside the 8-lane segment
            want[9] = at(seg(16) + (l + 1) % 16);
            want[10] = if l - seg(8) + 2 < 8 { at(l + 2) } else { at(l) };
            let ballot = (0..32).filter(|&i| v[w + i] & 1 == 1).fold(0u32, |m, i| m | 1 << i);
            want[11] = ballot;
            want[12] = (0..32).any(|i| v[w + i] == 7) as u32;
            want[13] = (0..32).all(|i| v[w + i] != 0) as u32;
            // Butterfly sum of small multiples of 0.25: exact in any order.
            want[14] = ((0..32).map(|i| v[w + i] as f32 * 0.25).sum::<f32>()).to_bits();
            want[15] = v[t];
            assert_eq!(&got[t * 16..t * 16 + 16], &want[..], "thread {t}");
        }
        if is_gpu(&*dev) {
            assert_eq!(got, emulated("selftest_shuffle", &v, 64 * 16, 1, 64, 0, 0));
        }
    }
}

#[test]
fn conversions_round_to_nearest_even() {
    let dev = device();
    let mut rng = Rng::for_test("selftest convert");
    // Random values over a wide range, ties, subnormals, overflow, infinities and NaN.
    let mut x: Vec<f32> = (0..4000)
        .map(|i| {
            let e = i % 60 - 30;
            rng.normal() * 2f32.powi(e)
        })
        .collect();
    x.extend([
        0.0,
        -0.0,
        1.0 + f32::EPSILON * 64.0,
        1.0 + 2f32.powi(-8),
        1.0 + 3.0 * 2f32.powi(-8),
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        65504.0,
        65519.0,
        65520.0,
        1e6,
        -1e6,
        5.96e-8,
        2.98e-8,
        2.99e-8,
        6.1e-5,
        1e-7,
        3e-39,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN_POSITIVE,
    ]);
    if x.len() % 2 == 1 {
        x.push(0.5);
    }
    let n = x.len() / 2;
    let input: Vec<u32> = x.iter().map(|v| v.to_bits()).collect();
    let got = run(
        &*dev,
        "selftest_convert",
        &input,
        n * 4,
        n.div_ceil(128) as u32,
        128,
        n as u32,
        0,
    );
    for i in 0..n {
        let (lo, hi) = (x[2 * i], x[2 * i + 1]);
        let bf = |v: f32| half::bf16::from_f32(v).to_bits() as u32;
        let hf = |v: f32| half::f16::from_f32(v).to_bits() as u32;
        assert_eq!(got[i * 4], bf(lo) | bf(hi) << 16, "pack_bf16x2({lo:e}, {hi:e})");
        assert_eq!(got[i * 4 + 1], hf(lo) | hf(hi) << 16, "pack_f16x2({lo:e}, {hi:e})");
        assert_eq!(
            got[i * 4 + 2],
            half::bf16::from_f32(lo).to_f32().to_bits(),
            "bf16 round trip of {lo:e}"
        );
        assert_eq!(
            got[i * 4 + 3],
            half::f16::from_f32(lo).to_f32().to_bits(),
            "fp16 round trip of {lo:e}"
        );
    }
    if is_gpu(&*dev) {
        let emu = emulated(
            "selftest_convert",
            &input,
            n * 4,
            n.div_ceil(128) as u32,
            128,
            n as u32,
            0,
        );
        assert_eq!(got, emu, "conversions: GPU vs emulator");
    }
}

#[test]
fn emulator_reports_errors_without_panicking() {
    let emu = Emulator::new();
    let p = SelftestParams::default();
    assert!(matches!(
        emu.launch("no_such_kernel", [1, 1, 1], [32, 1, 1], 0, &p),
        Err(KernelError::UnknownKernel(_))
    ));
    assert!(matches!(
        emu.launch_raw("selftest_shuffle", [1, 1, 1], [64, 1, 1], 0, &[0u8; 8]),
        Err(KernelError::ParamSize { .. })
    ));
    assert!(matches!(
        emu.launch("selftest_shuffle", [1, 1, 1], [2048, 1, 1], 0, &p),
        Err(KernelError::BadLaunch { .. })
    ));
    // A guard overwrite: selftest_convert writes 4 words per pair into a buffer one word short.
    let d_in = emu.alloc(8);
    d_in.upload(0, &[0u8; 8]).unwrap();
    let d_out = emu.alloc_labeled(12, "short_out");
    let p = SelftestParams {
        in_: d_in.addr(),
        out: d_out.addr(),
        n: 1,
        mode: 0,
    };
    match emu.launch("selftest_convert", [1, 1, 1], [32, 1, 1], 0, &p) {
        Err(KernelError::GuardOverwrite { kernel, buffer, .. }) => {
            assert_eq!(kernel, "selftest_convert");
            assert_eq!(buffer, "short_out");
        }
        other => panic!("expected a guard overwrite, got {other:?}"),
    }
    // A warp collective some lanes never reach (the shuffle kernel with 48 threads: a partial warp
    // with a full mask) is an error, not a hang.
    let d_in = emu.alloc(64 * 4);
    d_in.upload(0, &[1u8; 256]).unwrap();
    let d_out = emu.alloc(64 * 64);
    let p = SelftestParams {
        in_: d_in.addr(),
        out: d_out.addr(),
        n: 0,
        mode: 0,
    };
    assert!(matches!(
        emu.launch("selftest_shuffle", [1, 1, 1], [48, 1, 1], 0, &p),
        Err(KernelError::KernelFailed { .. })
    ));
}

#[test]
fn emulator_exposes_a_missing_syncthreads_in_both_orders() {
    // The emulator runs warp 0 to its next barrier before warp 1 starts (or the reverse), so a
    // read of another warp's shared-memory write without __syncthreads in between sees the poison.
    let emu = Emulator::new();
    let v: Vec<u32> = (0..64).map(|i| 1000 + i).collect();
    let want: Vec<u32> = (0..64).map(|t| v[(t + 32) % 64]).collect();
    for reverse in [false, true] {
        emu.set_reverse(reverse);
        let launch = |mode: u32| {
            let d_in = emu.alloc(256);
            d_in.upload(0, &u32_bytes(&v)).unwrap();
            let d_out = emu.alloc(256);
            let p = SelftestParams {
                in_: d_in.addr(),
                out: d_out.addr(),
                n: 0,
                mode,
            };
            emu.launch("selftest_barrier", [1, 1, 1], [64, 1, 1], 256, &p).unwrap();
            let mut out = vec![0u8; 256];
            d_out.download(0, &mut out).unwrap();
            bytes_u32(&out)
        };
        assert_eq!(launch(1), want, "with the barrier (reverse = {reverse})");
        assert_ne!(
            launch(0),
            want,
            "a missing barrier went unnoticed (reverse = {reverse})"
        );
    }
}

/// The chain of selftest_grid_chain: block b waits for block b - 1 through a flag in global memory.
fn grid_chain(dev: &dyn Device, blocks: u32, mode: u32, coscheduled: bool) -> Result<Vec<u32>, KernelError> {
    let flags = dev.upload_new(&vec![0u8; (blocks as usize + 1) * 4], "flags")?;
    let out = dev.upload_new(&vec![0xffu8; blocks as usize * 4], "out")?;
    let p = SelftestParams {
        in_: flags.addr(),
        out: out.addr(),
        n: blocks,
        mode,
    };
    if coscheduled {
        dev.launch_coscheduled("selftest_grid_chain", [blocks, 1, 1], [32, 1, 1], 0, &p)?;
    } else {
        dev.launch("selftest_grid_chain", [blocks, 1, 1], [32, 1, 1], 0, &p)?;
    }
    dev.synchronize()?;
    Ok(bytes_u32(&dev.download_vec(&out)?))
}

#[test]
fn a_coscheduled_grid_lets_blocks_wait_on_each_other() {
    let dev = device();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        let blocks = 12;
        let got = grid_chain(&*dev, blocks, 0, true).unwrap_or_else(|e| panic!("{order}: {e}"));
        let want: Vec<u32> = (0..blocks).map(|b| (b + 1) * (b + 2) / 2).collect();
        assert_eq!(got, want, "{order}");
    }
}

/// The persistent forward's grid barrier (grid_wait_all_geq): after it every block reads every
/// block's value. 300 blocks: past one round of a warp's batched loads (32 lanes x
/// MB_GRID_WAIT_BATCH flags), so lanes wait in two rounds; 12 blocks: most lanes watch none; flags
/// raised past 2^32 compare across the wrap, as the forward's do.
#[test]
fn a_grid_barrier_lets_every_block_read_every_blocks_writes() {
    let dev = device();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        // (blocks, the flags' value before, the value raised): the last case crosses 2^32.
        for (blocks, start, level) in [(12u32, 0u32, 1u32), (300, 0, 1), (40, u32::MAX - 1, 1)] {
            let flags: Vec<u8> = std::iter::repeat_n(start, blocks as usize)
                .flat_map(u32::to_le_bytes)
                .collect();
            let flags = dev.upload_new(&flags, "flags").unwrap();
            let out = dev.upload_new(&vec![0u8; 2 * blocks as usize * 4], "out").unwrap();
            let p = SelftestParams {
                in_: flags.addr(),
                out: out.addr(),
                n: level,
                mode: 3,
            };
            dev.launch_coscheduled("selftest_grid_chain", [blocks, 1, 1], [32, 1, 1], 0, &p)
                .unwrap_or_else(|e| panic!("{order}, {blocks} blocks: {e}"));
            dev.synchronize().unwrap();
            let got = bytes_u32(&dev.download_vec(&out).unwrap());
            let sum = blocks * (blocks + 1) / 2;
            assert!(
                got[blocks as usize..].iter().all(|&s| s == sum),
                "{order}, {blocks} blocks from {start}: sums {:?}, want {sum}",
                &got[blocks as usize..]
            );
        }
    }
}

/// grid_count (atom.inc): every block takes a distinct ticket, 0 .. limit and then again from 0,
/// so 12 blocks at limit 11 hold 0 .. 11 once each and leave the counter at 0; at limit 3 each
/// of 0 .. 3 three times, the counter again at 0.
#[test]
fn a_grid_counter_hands_out_tickets_and_wraps_at_its_limit() {
    let dev = device();
    for reverse in orders(&*dev) {
        let order = set_order(&*dev, reverse);
        for (limit, each) in [(11u32, 1usize), (3, 3)] {
            let blocks = 12u32;
            let flags = dev.upload_new(&vec![0u8; (blocks as usize + 1) * 4], "flags").unwrap();
            let out = dev.upload_new(&vec![0xffu8; blocks as usize * 4], "out").unwrap();
            let p = SelftestParams {
                in_: flags.addr(),
                out: out.addr(),
                n: limit,
                mode: 2,
            };
            dev.launch("selftest_grid_chain", [blocks, 1, 1], [32, 1, 1], 0, &p)
                .unwrap();
            dev.synchronize().unwrap();
            let mut tickets = bytes_u32(&dev.download_vec(&out).unwrap());
            tickets.sort_unstable();
            let want: Vec<u32> = (0..=limit).flat_map(|t| std::iter::repeat_n(t, each)).collect();
            assert_eq!(tickets, want, "{order}, limit {limit}");
            let counter = bytes_u32(&dev.download_vec(&flags).unwrap())[blocks as usize];
            assert_eq!(
                counter, 0,
                "{order}, limit {limit}: the counter after a whole number of rounds"
            );
        }
    }
}

/// A co-scheduled grid whose fiber stacks would pass the host's limit on memory mappings is
/// refused with the numbers, not run until mmap fails and the process aborts: 1024 blocks of 1024
/// threads need two million mappings (Linux allows 65,530 by default).
#[test]
fn the_emulator_refuses_a_coscheduled_grid_past_the_hosts_mappings() {
    let dev = device();
    if is_gpu(&*dev) {
        eprintln!("SKIPPED on {}: the limit is the emulator's", dev.name());
        return;
    }
    let flags = dev.upload_new(&[0u8; 4 * 1025], "flags").unwrap();
    let out = dev.upload_new(&[0u8; 4 * 1024], "out").unwrap();
    let p = SelftestParams {
        in_: flags.addr(),
        out: out.addr(),
        n: 1023,
        mode: 2,
    };
    let e = dev
        .launch_coscheduled("selftest_grid_chain", [1024, 1, 1], [1024, 1, 1], 0, &p)
        .and_then(|_| dev.synchronize())
        .unwrap_err()
        .to_string();
    assert!(e.contains("memory mappings"), "{e}");
}

#[test]
fn the_emulator_reports_blocks_that_wait_forever() {
    let dev = device();
    if is_gpu(&*dev) {
        eprintln!("SKIPPED on {}: a deadlocked grid would hang a GPU", dev.name());
        return;
    }
    // Co-scheduled, block 0 waits for a flag no block raises.
    let e = grid_chain(&*dev, 6, 1, true).unwrap_err().to_string();
    assert!(e.contains("deadlock across co-scheduled blocks"), "{e}");
    // Not co-scheduled, blocks run one after another (last first when reversed): the block that
    // waits for a later one can never be released.
    set_order(&*dev, true);
    let e = grid_chain(&*dev, 6, 0, false).unwrap_err().to_string();
    assert!(e.contains("deadlock"), "{e}");
    set_order(&*dev, false);
}
