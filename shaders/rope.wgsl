// Rotary position embedding, Hugging Face's rotate_half convention: in each head of hd values,
// pair k < hd/2 is (k, k + hd/2) and turns by angle(position, k):
//   out[k] = a * cos - b * sin,   out[k + hd/2] = b * cos + a * sin,   (a, b) = (in[k], in[k + hd/2]).
// Backward is the same with sin negated (sign = -1): the rotation by the negative angle.
// Rows of the [n, heads * hd] views: row i starts at off + i * ld; row i sits at position
// start + i % t (t = the sequence length while training; decoding passes the first position).
// cos and sin come from a table [positions, hd] built on the host (src/model/rope.rs): row p
// holds cos in columns 0..hd/2 and sin in hd/2..hd; a position past the table gives zeros.
// One invocation per (row, head, pair). Variants (src/kernels/rope.rs): {{SRC}} is `src` (out of
// place) or `dst` (in place); {{START}} is `p.start` or `pos[0]` (a position read on the GPU,
// so one prepared dispatch serves every decoding step).

struct Params {
    n: u32,
    t: u32,
    start: u32,
    heads: u32,
    half: u32,       // hd / 2
    positions: u32,  // rows of the table
    src_off: u32,
    src_ld: u32,
    dst_off: u32,
    dst_ld: u32,
    sign: f32,       // 1: forward, -1: backward
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read> pos: array<u32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn rotate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let id = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (id >= p.n * p.heads * p.half) {
        return;
    }
    let k = id % p.half;
    let rh = id / p.half;
    let h = rh % p.heads;
    let row = rh / p.heads;
    let hd = 2u * p.half;
    let at = {{START}} + row % p.t;
    var c = 0.0;
    var s = 0.0;
    if (at < p.positions) {
        c = table[at * hd + k];
        s = p.sign * table[at * hd + p.half + k];
    }
    let si = p.src_off + row * p.src_ld + h * hd + k;
    let a = {{SRC}}[si];
    let b = {{SRC}}[si + p.half];
    let di = p.dst_off + row * p.dst_ld + h * hd + k;
    dst[di] = a * c - b * s;
    dst[di + p.half] = b * c + a * s;
}
