// HF gelu_new (tanh approximation), elementwise over n values:
//   y = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   dx = dy (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)),  t = tanh(u)
// u is clamped to [-15, 15] before tanh (tanh(15) is 1 in f32): some drivers build tanh
// from exp and return NaN for large arguments.

struct Params {
    n: u32,
}

const S: f32 = 0.7978845608028654;  // sqrt(2 / pi)
const K: f32 = 0.044715;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn tanh_u(v: f32) -> f32 {
    return tanh(clamp(S * (v + K * v * v * v), -15.0, 15.0));
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i < p.n) {
        let v = x[i];
        out[i] = 0.5 * v * (1.0 + tanh_u(v));
    }
}

@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i < p.n) {
        let v = x[i];
        let t = tanh_u(v);
        let d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * S * (1.0 + 3.0 * K * v * v);
        out[i] = dy[i] * d;
    }
}
