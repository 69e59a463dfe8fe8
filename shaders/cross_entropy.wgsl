// Softmax cross-entropy over rows of a logits chunk, forward and backward in one pass
// pair, f32. One workgroup per row:
//   1. each invocation keeps an online (max, Σ exp(z - max)) over a strided slice of
//      the row; wg_logsumexp (shaders/lib/reduce.wgsl) merges the 256 pairs into lse;
//   2. losses[row0 + r] = lse - z[target] (0 for an ignored row: target < 0 or >= v);
//   3. if backward, the row becomes dlogits = (softmax - onehot) * scale[0] in place
//      (all zeros for an ignored row).
// loss_sum: one workgroup, loss[0] = scale[0] * Σ losses[0..n] in a fixed order.

struct Params {
    v: u32,        // row length (vocabulary)
    row0: u32,     // global row of the chunk's first row (targets, losses)
    rows: u32,     // rows in this chunk (ce_rows) / rows in all (loss_sum)
    backward: u32, // 1: write dlogits over the logits
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read_write> losses: array<f32>;
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;

const NEG_BIG: f32 = -3.0e38;

const WG: u32 = 256u; // reductions: shaders/lib/reduce.wgsl

@compute @workgroup_size(256)
fn ce_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) {
        return;
    }
    let base = r * p.v;
    let t = bitcast<i32>(targets[p.row0 + r]);
    let valid = t >= 0 && u32(t) < p.v;
    let y = select(0xffffffffu, u32(t), valid);

    // Each invocation reads and writes only columns j = lid (mod 256), so the in-place
    // gradient below never races with another invocation's reads (barriers here order
    // workgroup memory only). The owner of column y keeps z[y].
    var zy = 0.0;
    var mx = NEG_BIG;
    var s = 0.0;
    for (var j = lid; j < p.v; j = j + 256u) {
        let z = logits[base + j];
        if (j == y) {
            zy = z;
        }
        if (z > mx) {
            s = s * exp(mx - z) + 1.0;
            mx = z;
        } else {
            s = s + exp(z - mx);
        }
    }
    let lse = wg_logsumexp(lid, mx, s);

    if (valid && (y & 255u) == lid) {
        losses[p.row0 + r] = lse - zy;
    }
    if (!valid && lid == 0u) {
        losses[p.row0 + r] = 0.0;
    }
    if (p.backward != 0u) {
        let sc = scale[0];
        for (var j = lid; j < p.v; j = j + 256u) {
            let pj = exp(logits[base + j] - lse);
            let g = select(pj, pj - 1.0, j == y);
            logits[base + j] = select(0.0, g * sc, valid);
        }
    }
}

@compute @workgroup_size(256)
fn loss_sum(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < p.rows; i = i + 256u) {
        s = s + losses[i];
    }
    let total = wg_sum(lid, s);
    if (lid == 0u) {
        loss[0] = scale[0] * total;
    }
}
