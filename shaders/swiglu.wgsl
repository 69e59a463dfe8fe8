// SwiGLU, the Llama MLP's activation, elementwise over [n, i] views:
//   h = silu(gate) * up,  silu(v) = v * sigmoid(v)
//   dgate = dh * up * sigmoid(gate) * (1 + gate * sigmoid(-gate)),  dup = dh * silu(gate)
// sigmoid is built from exp(-|v|) <= 1, so no exp overflows for large |v| (silu -> 0 below,
// -> v above), and 1 - sigmoid(v) is computed as sigmoid(-v), not by cancellation.
// Each of gate, up, h, dh, dgate, dup has its own offset and row stride (row r, column j at
// off + r * ld + j), so gate and up may be two tensors or the two halves of one [n, 2i] buffer.

struct Params {
    n: u32,
    i: u32,
    g_off: u32,
    g_ld: u32,
    u_off: u32,
    u_ld: u32,
    h_off: u32,    // h (forward) or dh (backward)
    h_ld: u32,
    dg_off: u32,
    dg_ld: u32,
    du_off: u32,
    du_ld: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> h: array<f32>;
@group(0) @binding(4) var<storage, read> dh: array<f32>;
@group(0) @binding(5) var<storage, read_write> dgate: array<f32>;
@group(0) @binding(6) var<storage, read_write> dup: array<f32>;
// dgate and dup when they are views of one buffer: WebGPU forbids binding a buffer to two
// writable bindings of one dispatch.
@group(0) @binding(7) var<storage, read_write> dgu: array<f32>;

// (sigmoid(v), sigmoid(-v))
fn sigmoids(v: f32) -> vec2<f32> {
    let e = exp(-abs(v));
    let big = 1.0 / (1.0 + e);
    let small = e / (1.0 + e);
    return select(vec2<f32>(small, big), vec2<f32>(big, small), v >= 0.0);
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let id = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (id >= p.n * p.i) {
        return;
    }
    let r = id / p.i;
    let j = id % p.i;
    let g = gate[p.g_off + r * p.g_ld + j];
    h[p.h_off + r * p.h_ld + j] = g * sigmoids(g).x * up[p.u_off + r * p.u_ld + j];
}

// (dgate, dup) of element id of the [n, i] matrices.
fn grads(id: u32) -> vec2<f32> {
    let r = id / p.i;
    let j = id % p.i;
    let g = gate[p.g_off + r * p.g_ld + j];
    let u = up[p.u_off + r * p.u_ld + j];
    let d = dh[p.h_off + r * p.h_ld + j];
    let s = sigmoids(g);
    return vec2<f32>(d * u * s.x * (1.0 + g * s.y), d * g * s.x);
}

@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let id = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (id >= p.n * p.i) {
        return;
    }
    let gr = grads(id);
    let r = id / p.i;
    let j = id % p.i;
    dgate[p.dg_off + r * p.dg_ld + j] = gr.x;
    dup[p.du_off + r * p.du_ld + j] = gr.y;
}

// backward, with dgate and dup in one buffer (binding dgu).
@compute @workgroup_size(256)
fn backward_shared(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let id = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (id >= p.n * p.i) {
        return;
    }
    let gr = grads(id);
    let r = id / p.i;
    let j = id % p.i;
    dgu[p.dg_off + r * p.dg_ld + j] = gr.x;
    dgu[p.du_off + r * p.du_ld + j] = gr.y;
}
