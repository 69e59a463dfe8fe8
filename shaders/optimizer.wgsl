// Optimizer: global gradient L2 norm (+ clip coefficient) and AdamW, f32.
//
// Gradient norm, deterministic in two stages:
//   sumsq_partials: per gradient tensor, a fixed number of workgroups (chosen from its
//     length alone) each write Σ g² over a grid-stride slice into partials[offset + wg];
//   norm_finish: one workgroup sums all partials in a fixed order and writes
//     out = (norm, clip = min(1, max_norm / (norm + 1e-6)), or 1 when max_norm <= 0).
// AdamW (torch.optim.AdamW, one element per invocation), reading the per-step scalars
// from a storage tensor the host rewrites each step and the clip coefficient out[1].

struct Params {
    n: u32,        // elements of this tensor (sumsq, adamw) / number of partials (finish)
    offset: u32,   // first partial this tensor writes (sumsq)
    groups: u32,   // workgroups of this tensor's dispatch (sumsq)
    max_norm: f32, // finish
}

struct Step {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    step_size: f32, // lr / (1 - beta1^t)
    bc2_sqrt: f32,  // sqrt(1 - beta2^t)
    pad: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
// grad norm
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@group(0) @binding(3) var<storage, read_write> norm_out: array<f32>;
// adamw
@group(0) @binding(4) var<storage, read> st: Step;
@group(0) @binding(5) var<storage, read> clip: array<f32>;
@group(0) @binding(6) var<storage, read_write> param: array<f32>;
@group(0) @binding(7) var<storage, read> g: array<f32>;
@group(0) @binding(8) var<storage, read_write> m: array<f32>;
@group(0) @binding(9) var<storage, read_write> v: array<f32>;

const WG: u32 = 256u; // reductions: shaders/lib/reduce.wgsl

@compute @workgroup_size(256)
fn sumsq_partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let stride = p.groups * 256u;
    var s0 = 0.0;
    var s1 = 0.0;
    var i = wid.x * 256u + lid;
    // two independent accumulators, then the tail
    for (; i + stride < p.n; i = i + 2u * stride) {
        let a = grad[i];
        let b = grad[i + stride];
        s0 = s0 + a * a;
        s1 = s1 + b * b;
    }
    if (i < p.n) {
        let a = grad[i];
        s0 = s0 + a * a;
    }
    let total = wg_sum(lid, s0 + s1);
    if (lid == 0u) {
        partials[p.offset + wid.x] = total;
    }
}

@compute @workgroup_size(256)
fn norm_finish(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < p.n; i = i + 256u) {
        s = s + partials[i];
    }
    let total = wg_sum(lid, s);
    if (lid == 0u) {
        let norm = sqrt(total);
        var c = 1.0;
        if (p.max_norm > 0.0) {
            c = min(1.0, p.max_norm / (norm + 1e-6));
        }
        norm_out[0] = norm;
        norm_out[1] = c;
    }
}

@compute @workgroup_size(256)
fn adamw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    let gi = g[i] * clip[1];
    let pi = param[i] * (1.0 - st.lr * st.weight_decay);
    // torch: exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
    let mi = m[i] + (1.0 - st.beta1) * (gi - m[i]);
    let vi = v[i] * st.beta2 + (1.0 - st.beta2) * gi * gi;
    let denom = sqrt(vi) / st.bc2_sqrt + st.eps;
    param[i] = pi - st.step_size * (mi / denom);
    m[i] = mi;
    v[i] = vi;
}
