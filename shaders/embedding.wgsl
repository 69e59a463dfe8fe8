{{ENABLE}}
// Token (+ position) embedding over n = B*T token rows of width c:
//   forward:   x[r, :] = wte[tokens[r], :] + wpe[r % t, :]          (one workgroup per row)
//   dwte_add:  dwte[unique[u], :] += sum of dx[positions[k], :] over k in offsets[u]..offsets[u+1]
//              (one workgroup per unique token; the host groups positions by token, so no
//              atomics and a fixed summation order; workgroups past unique_count return)
//   dwpe_add:  dwpe[s, :] += sum over b of dx[b*t + s, :]              (one workgroup per position)
// A token id >= vocab reads as a zero row and gets no gradient (the data layer rejects them).
//
// A table larger than one storage binding is stored as row chunks and each entry point runs once
// per chunk: wte / dwte then hold rows row0 .. row0 + rows of the whole table, and a token row
// is written (or its gradient added) only by the chunk that holds its id. The last chunk (tail
// = 1) also writes the rows whose id lies past it (as zero rows), so every output row is written
// exactly once. One chunk holding the whole table is row0 = 0, rows = vocab, tail = 1.

struct Params {
    n: u32,      // B * T token rows
    t: u32,
    c: u32,
    rows: u32,   // rows of this chunk of wte / dwte
    row0: u32,   // the chunk's first row in the whole table
    tail: u32,   // 1 for the last chunk
    _pad0: u32,
    _pad1: u32,
}

// Whether this chunk writes token row `tok`, and (when it lies in the chunk) where its row starts.
fn owns(tok: u32) -> bool {
    return tok >= p.row0 && (tok - p.row0 < p.rows || p.tail != 0u);
}

const WG: u32 = 256u;
// Whether the model learns absolute positions (GPT-2's wpe); the Llama family has none (RoPE),
// and then wpe is neither read nor bound.
const POSITIONS: bool = {{POSITIONS}};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
// The table is f32, or f16 when the model stores frozen base weights so (WTE_T; read as f32).
@group(0) @binding(2) var<storage, read> wte: array<{{WTE_T}}>;
@group(0) @binding(3) var<storage, read> wpe: array<f32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;
@group(0) @binding(5) var<storage, read> dx: array<f32>;
@group(0) @binding(6) var<storage, read> unique_count: array<u32>;
@group(0) @binding(7) var<storage, read> unique: array<u32>;
@group(0) @binding(8) var<storage, read> offsets: array<u32>;
@group(0) @binding(9) var<storage, read> positions: array<u32>;
@group(0) @binding(10) var<storage, read_write> dwte: array<f32>;
@group(0) @binding(11) var<storage, read_write> dwpe: array<f32>;

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.n) {
        return;
    }
    let tok = tokens[r];
    if (!owns(tok)) {
        return;
    }
    let pos = (r % p.t) * p.c;
    let base = r * p.c;
    for (var j = lid; j < p.c; j += WG) {
        var v = 0.0;
        if (tok - p.row0 < p.rows) {
            v = f32(wte[(tok - p.row0) * p.c + j]);
        }
        if (POSITIONS) {
            v += wpe[pos + j];
        }
        x[base + j] = v;
    }
}

@compute @workgroup_size(256)
fn dwte_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let u = wid.x + wid.y * nwg.x;
    if (u >= unique_count[0]) {
        return;
    }
    let tok = unique[u];
    if (tok < p.row0 || tok - p.row0 >= p.rows) {
        return;
    }
    let k0 = offsets[u];
    let k1 = offsets[u + 1u];
    let row = (tok - p.row0) * p.c;
    for (var j = lid; j < p.c; j += WG) {
        var s = 0.0;
        for (var k = k0; k < k1; k++) {
            s += dx[positions[k] * p.c + j];
        }
        dwte[row + j] += s;
    }
}

@compute @workgroup_size(256)
fn dwpe_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let s_pos = wid.x + wid.y * nwg.x;
    if (s_pos >= p.t) {
        return;
    }
    let row = s_pos * p.c;
    for (var j = lid; j < p.c; j += WG) {
        var s = 0.0;
        for (var r = s_pos; r < p.n; r += p.t) {
            s += dx[r * p.c + j];
        }
        dwpe[row + j] += s;
    }
}

// Decoding: x[r, :] = wte[tokens[r], :] + wpe[pos[0] + r, :] for r < n, the position offset
// read on the GPU (so one prepared dispatch serves every step); p.t = rows of wpe, and a
// position at or past it reads as a zero row.
@group(0) @binding(12) var<storage, read> pos: array<u32>;

@compute @workgroup_size(256)
fn forward_at(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.n) {
        return;
    }
    let tok = tokens[r];
    if (!owns(tok)) {
        return;
    }
    let at = pos[0] + r;
    let base = r * p.c;
    for (var j = lid; j < p.c; j += WG) {
        var v = 0.0;
        if (tok - p.row0 < p.rows) {
            v = f32(wte[(tok - p.row0) * p.c + j]);
        }
        if (POSITIONS && at < p.t) {
            v += wpe[at * p.c + j];
        }
        x[base + j] = v;
    }
}
