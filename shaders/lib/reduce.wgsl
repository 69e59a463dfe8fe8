// Workgroup reductions shared by the kernels: src/gpu/shaders.rs puts this file in front of
// a shader that asks for it (`Template::lib(REDUCE)`). The shader defines `const WG: u32`,
// its workgroup size (a power of two). Every invocation of the workgroup must call a
// reduction (they hold barriers), and each gets the same result. The order of the
// additions is fixed, so results are deterministic.

var<workgroup> red: array<f32, WG>;
var<workgroup> red2: array<vec2<f32>, WG>;

// Σ v over the workgroup (tree reduction).
fn wg_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier(); // red is reused by the next reduction
    return total;
}

// max v over the workgroup.
fn wg_max(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

// Σ v over the workgroup, two sums at once.
fn wg_sum2(lid: u32, v: vec2<f32>) -> vec2<f32> {
    red2[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red2[lid] = red2[lid] + red2[lid + s];
        }
        workgroupBarrier();
    }
    let total = red2[0];
    workgroupBarrier();
    return total;
}

// log Σ exp over the workgroup from each invocation's online pair (m, s) = (its max, Σ exp(z - m)).
fn wg_logsumexp(lid: u32, m: f32, s: f32) -> f32 {
    var acc = vec2<f32>(m, s);
    red2[lid] = acc;
    workgroupBarrier();
    for (var off = WG / 2u; off > 0u; off >>= 1u) {
        if (lid < off) {
            let o = red2[lid + off];
            let mm = max(acc.x, o.x);
            acc = vec2<f32>(mm, acc.y * exp(acc.x - mm) + o.y * exp(o.x - mm));
            red2[lid] = acc;
        }
        workgroupBarrier();
    }
    let total = red2[0];
    workgroupBarrier();
    return total.x + log(total.y);
}

// Column sums: a workgroup owns COLS columns and WG / COLS row lanes; invocation `lid` holds
// lane lid / COLS's partial sum `v` of column lid % COLS. Returns, for lid < COLS, the sum of
// the lanes of column lid in lane order.
const COLS: u32 = {{COLS}}u;

fn lanes_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    let k = lid % COLS;
    var s = red[k];
    for (var l = 1u; l < WG / COLS; l++) {
        s += red[k + l * COLS];
    }
    workgroupBarrier();
    return s;
}

fn lanes_sum2(lid: u32, v: vec2<f32>) -> vec2<f32> {
    red2[lid] = v;
    workgroupBarrier();
    let k = lid % COLS;
    var s = red2[k];
    for (var l = 1u; l < WG / COLS; l++) {
        s += red2[k + l * COLS];
    }
    workgroupBarrier();
    return s;
}
