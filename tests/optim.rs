//! The optimizer kernels (`adamw_update`, `sgd_update`) and the gradient's
//! sum of squares (`sumsq_partials`) against their CPU twins in
//! `wgpipe::cpu::optim`, on the real adapter, over several steps with
//! hyperparameters rewritten per step; and the CPU twins against numbers
//! computed with PyTorch.
//!
//! Tolerances: the GPU's sqrt and divide may differ from the CPU's by a few
//! ulp (Vulkan precision), and Vulkan need not round WGSL's `fma` once (nor
//! keep a plain multiply-add unfused), so moments and parameters agree to
//! 1e-6 relative, not exactly. Where m cancels (m + w (g - m) near zero) an
//! ulp of the terms (|g| <= 2 here: 3e-8) is the honest absolute bound.

// The torch references are pasted as printed ("%.9g", 9 digits round-trip an f32).
#![allow(clippy::excessive_precision)]

mod common;

use common::{assert_close, Rng};
use wgpipe::cpu::optim;
use wgpipe::device::{download, upload, Gpu};
use wgpipe::kernels::{self, AdamWParams, Dispatch, SgdParams};
use wgpipe::model::optim::{bias_corrections, AdamWStep, SgdStep};

fn run(gpu: &Gpu, dispatches: &[&Dispatch]) {
    let names: Vec<_> = dispatches.iter().map(|d| d.name).collect();
    kernels::run(gpu, dispatches).unwrap_or_else(|e| panic!("{names:?} on {}: {e}", gpu.label));
}

fn read(gpu: &Gpu, buf: &wgpu::Buffer, len: usize) -> Vec<f32> {
    download(gpu, buf, len).unwrap_or_else(|e| panic!("download on {}: {e}", gpu.label))
}

/// AdamW hyperparameters of step `step` (from 1), as a trainer would set them.
fn adamw_step(step: u64, lr: f32, weight_decay: f32, grad_scale: f32) -> AdamWStep {
    let (beta1, beta2) = (0.9, 0.999);
    let (bc1, bc2) = bias_corrections(beta1, beta2, step);
    AdamWStep {
        lr,
        beta1: beta1 as f32,
        beta2: beta2 as f32,
        eps: 1e-8,
        weight_decay,
        bias_correction1: bc1,
        bias_correction2: bc2,
        grad_scale,
    }
}

#[test]
fn adamw_update_matches_cpu_over_three_steps() {
    let gpu = common::gpu();
    let len = 1001;
    let mut rng = Rng::new(1);
    let mut params = rng.vec(len, 1.0);
    let (mut m, mut v) = (vec![0.0f32; len], vec![0.0f32; len]);
    let (p_b, g_b, m_b, v_b) = (
        upload(&gpu, "params", &params),
        upload(&gpu, "grads", &vec![0.0; len]),
        upload(&gpu, "m", &m),
        upload(&gpu, "v", &v),
    );
    let d = kernels::adamw_update(&gpu, &p_b, &g_b, &m_b, &v_b, len);
    let built: AdamWParams = d.params().unwrap();
    assert_eq!((built.len, built.step.lr), (len as u32, 0.0));
    // (lr, weight decay, grad scale) per step: a clipped step, a schedule.
    for (step, (lr, wd, scale)) in [(1e-2, 0.1, 1.0), (5e-3, 0.1, 0.25), (1e-3, 0.0, 1.0)]
        .into_iter()
        .enumerate()
    {
        let grads = rng.vec(len, 2.0);
        gpu.queue
            .write_buffer(&g_b, 0, bytemuck::cast_slice(&grads));
        let h = adamw_step(step as u64 + 1, lr, wd, scale);
        // Keep the build's len and stride, set the rest.
        d.update_params(&gpu.queue, |p: &mut AdamWParams| p.step = h)
            .unwrap();
        run(&gpu, &[&d]);
        optim::adamw_update(&mut params, &grads, &mut m, &mut v, &h);
        let what = |x: &str| format!("adamw step {} {x}", step + 1);
        assert_close(&what("m"), &read(&gpu, &m_b, len), &m, 3e-8, 1e-6);
        assert_close(&what("v"), &read(&gpu, &v_b, len), &v, 1e-12, 1e-6);
        assert_close(&what("params"), &read(&gpu, &p_b, len), &params, 1e-7, 1e-6);
    }
}

#[test]
fn sgd_update_matches_cpu_over_three_steps() {
    let gpu = common::gpu();
    let len = 1001;
    for momentum in [0.9f32, 0.0] {
        let mut rng = Rng::new(2);
        let mut params = rng.vec(len, 1.0);
        // Without momentum the buffer must stay as it was: start it non-zero.
        let buf0 = if momentum == 0.0 {
            rng.vec(len, 1.0)
        } else {
            vec![0.0; len]
        };
        let mut buf = buf0.clone();
        let (p_b, g_b, buf_b) = (
            upload(&gpu, "params", &params),
            upload(&gpu, "grads", &vec![0.0; len]),
            upload(&gpu, "momentum", &buf),
        );
        let d = kernels::sgd_update(&gpu, &p_b, &g_b, &buf_b, len);
        for (step, (lr, wd, scale)) in [(0.1, 0.01, 1.0), (0.05, 0.01, 0.5), (0.01, 0.0, 1.0)]
            .into_iter()
            .enumerate()
        {
            let grads = rng.vec(len, 2.0);
            gpu.queue
                .write_buffer(&g_b, 0, bytemuck::cast_slice(&grads));
            let h = SgdStep {
                lr,
                momentum,
                weight_decay: wd,
                grad_scale: scale,
            };
            let built = d.params::<SgdParams>().unwrap();
            d.set_params(&gpu.queue, &SgdParams { step: h, ..built })
                .unwrap();
            run(&gpu, &[&d]);
            optim::sgd_update(&mut params, &grads, &mut buf, &h);
            let what = |x: &str| format!("sgd momentum {momentum} step {} {x}", step + 1);
            assert_close(&what("buf"), &read(&gpu, &buf_b, len), &buf, 1e-7, 1e-6);
            assert_close(&what("params"), &read(&gpu, &p_b, len), &params, 1e-7, 1e-6);
        }
        if momentum == 0.0 {
            assert_eq!(read(&gpu, &buf_b, len), buf0, "momentum 0 wrote its buffer");
        }
    }
}

#[test]
fn sumsq_partials_sum_to_the_cpu_sum_of_squares() {
    let gpu = common::gpu();
    // One element, less than a slice, a slice and a bit, several slices.
    for (i, len) in [1usize, 1001, 4097, 3 * 4096 + 5, 100_003]
        .into_iter()
        .enumerate()
    {
        let x = Rng::new(10 + i as u64).vec(len, 3.0);
        let np = kernels::sumsq_partials_len(len);
        assert_eq!(np, len.div_ceil(4096));
        let (x_b, part_b) = (
            upload(&gpu, "x", &x),
            upload(&gpu, "partials", &vec![f32::NAN; np + 1]),
        );
        let d = kernels::sumsq_partials(&gpu, &part_b, &x_b, len);
        run(&gpu, &[&d]);
        let got = read(&gpu, &part_b, np + 1);
        assert!(got[np].is_nan(), "len {len}: wrote past its {np} partials");
        let want: Vec<f32> = x.chunks(4096).map(|s| optim::sumsq(s) as f32).collect();
        assert_close(
            &format!("sumsq partials len {len}"),
            &got[..np],
            &want,
            0.0,
            1e-6,
        );
        let total: f64 = got[..np].iter().map(|&p| p as f64).sum();
        let exact = optim::sumsq(&x);
        assert!(
            (total - exact).abs() <= 1e-6 * exact,
            "len {len}: gpu {total} cpu {exact}"
        );
    }
}

#[test]
fn cpu_sumsq_is_the_squared_norm() {
    assert_eq!(optim::sumsq(&[]), 0.0);
    assert_eq!(optim::sumsq(&[3.0, -4.0]), 25.0);
    let big = 2.0f32.powi(70); // its square overflows f32, not f64
    assert_eq!(optim::sumsq(&[big, -big]), 2.0f64.powi(141));
}

// ---------------------------------------------------------------------------
// CPU twins against PyTorch

/// Two steps on params [0.5, -1.25, 2.0] with grads [0.1, -0.2, 0.3] then
/// [-0.05, 0.4, 0.0]. The expected values were made with torch 2.15 (float32
/// tensors, CPU), printed with "%.9g":
///
/// ```python
/// p = torch.nn.Parameter(torch.tensor([0.5, -1.25, 2.0]))
/// opt = torch.optim.AdamW([p], lr=1e-2, betas=BETAS, eps=1e-8, weight_decay=0.1)
/// for g in ([0.1, -0.2, 0.3], [-0.05, 0.4, 0.0]):
///     p.grad = torch.tensor(g); opt.step()
///     print(p.tolist(), opt.state[p]["exp_avg"].tolist(), opt.state[p]["exp_avg_sq"].tolist())
/// ```
const GRADS: [[f32; 3]; 2] = [[0.1, -0.2, 0.3], [-0.05, 0.4, 0.0]];
const PARAMS0: [f32; 3] = [0.5, -1.25, 2.0];

/// (params, m, v) after each of the two steps.
type Expected = [[[f32; 3]; 3]; 2];

/// Run the CPU AdamW twin for the two steps and compare with torch's numbers
/// to `rtol_params` (parameters) and `rtol_moments` (m and v).
fn check_adamw_against_torch(
    betas: (f64, f64),
    want: &Expected,
    rtol_params: f32,
    rtol_moments: f32,
) {
    let mut p = PARAMS0.to_vec();
    let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
    for (step, (g, [wp, wm, wv])) in GRADS.iter().zip(want).enumerate() {
        let (bc1, bc2) = bias_corrections(betas.0, betas.1, step as u64 + 1);
        let h = AdamWStep {
            lr: 1e-2,
            beta1: betas.0 as f32,
            beta2: betas.1 as f32,
            eps: 1e-8,
            weight_decay: 0.1,
            bias_correction1: bc1,
            bias_correction2: bc2,
            grad_scale: 1.0,
        };
        optim::adamw_update(&mut p, g, &mut m, &mut v, &h);
        let what = |x: &str| format!("adamw betas {betas:?} step {} {x}", step + 1);
        assert_close(&what("params"), &p, wp, 0.0, rtol_params);
        assert_close(&what("m"), &m, wm, 0.0, rtol_moments);
        assert_close(&what("v"), &v, wv, 0.0, rtol_moments);
    }
}

#[test]
fn cpu_adamw_matches_torch_with_default_betas() {
    // torch forms 1 - beta2 from the f64 0.999 (then rounds it to f32); the
    // kernels get beta2 as f32 already, and 1 - f32(0.999) is 1.3e-5 off
    // relative. So v (and m, by 2.4e-7) differ by that much; the parameters,
    // whose update divides by sqrt(v), still agree to an ulp (1e-6).
    let want: Expected = [
        [
            [0.489500016, -1.23874998, 1.98800004],
            [0.0100000007, -0.0200000014, 0.0300000012],
            [1.00000007e-05, 4.00000026e-05, 9.00000086e-05],
        ],
        [
            [0.486347139, -1.24117231, 1.97931147],
            [0.00400000019, 0.0220000017, 0.0270000007],
            [1.24900007e-05, 0.000199960006, 8.99100123e-05],
        ],
    ];
    check_adamw_against_torch((0.9, 0.999), &want, 1e-6, 2e-5);
}

#[test]
fn cpu_adamw_matches_torch_with_betas_exact_in_f32() {
    // With betas that f32 holds exactly, the twin does torch's arithmetic,
    // operation for operation: the same floats.
    let want: Expected = [
        [
            [0.489500016, -1.23874998, 1.98800004],
            [0.0125000002, -0.0250000004, 0.0375000015],
            [9.76562569e-06, 3.90625028e-05, 8.78906285e-05],
        ],
        [
            [0.486480325, -1.24130547, 1.97941077],
            [0.00468750019, 0.0281250011, 0.0328125022],
            [1.21974954e-05, 0.000195274362, 8.78048013e-05],
        ],
    ];
    check_adamw_against_torch((0.875, 0.9990234375), &want, 0.0, 0.0);
}

#[test]
fn cpu_sgd_matches_torch() {
    // torch 2.15, float32, CPU:
    //   opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1)
    // same params and grads as the AdamW references; (params, momentum_buffer)
    // after each step, printed with "%.9g". The same floats: exact.
    let want = [
        (
            [0.484999985, -1.21749997, 1.95000005],
            [0.150000006, -0.325000018, 0.5],
        ),
        (
            [0.471649975, -1.21607494, 1.88550007],
            [0.13350001, -0.0142500103, 0.644999981],
        ),
    ];
    let mut p = PARAMS0.to_vec();
    let mut buf = vec![0.0; 3];
    let h = SgdStep {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.1,
        grad_scale: 1.0,
    };
    for (step, (g, (wp, wb))) in GRADS.iter().zip(want).enumerate() {
        optim::sgd_update(&mut p, g, &mut buf, &h);
        assert_close(&format!("sgd step {} params", step + 1), &p, &wp, 0.0, 0.0);
        assert_close(&format!("sgd step {} buf", step + 1), &buf, &wb, 0.0, 0.0);
    }
}
