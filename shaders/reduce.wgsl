// Column sums: out[j] (+)= sum_i x[i, j] over x [rows, cols] (bias gradients).
// Deterministic, no atomics: a workgroup owns 64 columns x a chunk of rows (4 row lanes,
// combined in a fixed order). With one chunk it writes `out` directly (sum_direct);
// otherwise chunks write partials [chunks, cols] and sum_finish adds them in chunk order.

struct Params {
    rows: u32,
    cols: u32,
    accumulate: u32,
    rows_per_chunk: u32,
    chunks: u32,
    col_blocks: u32,
    pad0: u32,
    pad1: u32,
}

const WG: u32 = 256u; // COLS (columns per workgroup) = 64: 4 row lanes (shaders/lib/reduce.wgsl)

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;

// Sum over rows [r0, r1) of column `block * COLS + lid % COLS`; meaningful where lid < COLS.
fn column_block(lid: u32, block: u32, r0: u32, r1: u32) -> f32 {
    let j = block * COLS + lid % COLS;
    var a = 0.0;
    if (j < p.cols) {
        for (var i = r0 + lid / COLS; i < r1; i += WG / COLS) {
            a += x[i * p.cols + j];
        }
    }
    return lanes_sum(lid, a);
}

fn store(j: u32, s: f32) {
    if (p.accumulate != 0u) {
        out[j] += s;
    } else {
        out[j] = s;
    }
}

@compute @workgroup_size(256)
fn sum_direct(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let block = wid.x + wid.y * nwg.x;
    if (block >= p.col_blocks) {
        return;
    }
    let s = column_block(lid, block, 0u, p.rows);
    let j = block * COLS + lid;
    if (lid < COLS && j < p.cols) {
        store(j, s);
    }
}

@compute @workgroup_size(256)
fn sum_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.col_blocks * p.chunks) {
        return;
    }
    let block = id % p.col_blocks;
    let chunk = id / p.col_blocks;
    let r0 = chunk * p.rows_per_chunk;
    let s = column_block(lid, block, r0, min(r0 + p.rows_per_chunk, p.rows));
    let j = block * COLS + lid;
    if (lid < COLS && j < p.cols) {
        partial[chunk * p.cols + j] = s;
    }
}

@compute @workgroup_size(256)
fn sum_finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let j = (wid.x + wid.y * nwg.x) * WG + lid;
    if (j >= p.cols) {
        return;
    }
    var s = 0.0;
    for (var k = 0u; k < p.chunks; k++) {
        s += partial[k * p.cols + j];
    }
    store(j, s);
}
