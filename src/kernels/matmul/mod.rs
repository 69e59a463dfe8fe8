//! Batched, strided matmul (shaders/matmul.wgsl): C = alpha · op(A) · op(B) + beta · C,
//! plus an optional bias[n] added to every row and an optional GELU epilogue (D = gelu(C)).
//!
//! A product runs as one shader variant: its layout (NN, NT, TN), a [`Tile`] (chosen per device
//! and shape class by [`tile_for`]: measured on native GPUs, from a table on CPU adapters and in
//! browsers), vec4 loads for operands the host finds aligned, and the epilogue. Every variant
//! gives bit-identical results, so the choice never changes a run. Before a dispatch is prepared
//! the host checks every index the kernel can compute against its tensor ([`push_with`]), which
//! lets native builds run the shader without wgpu's runtime checks ([`Gpu::kernel_trusted`]).

mod codegen;
mod tune;

pub use codegen::Tile;
pub use tune::{all_tiles, tile_for, Class};

use crate::gpu::{grid, Gpu, Program, Tensor};
use codegen::Variant;

/// The layouts the shader supports: (ta, tb).
const LAYOUTS: [(bool, bool); 3] = [(false, false), (false, true), (true, false)];

/// Every shader variant: each layout with each candidate tile, scalar and vec4 operands, with and
/// without the GELU epilogue, B in f32 or f16 (a frozen weight; the model never has an f16 A).
pub fn variants() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for &(ta, tb) in &LAYOUTS {
        for tile in tune::all_tiles() {
            for (va, vb) in [(false, false), (true, false), (false, true), (true, true)] {
                for gelu in [false, true] {
                    for hb in [false, true] {
                        let var = Variant::new(ta, tb, tile, va, vb, gelu).half(false, hb);
                        if !v.iter().any(|(k, _)| *k == var.key()) {
                            v.push((var.key(), var.source()));
                        }
                    }
                }
            }
        }
    }
    v
}

/// C = alpha * op(A) · op(B) + beta * C  (+ bias[n] broadcast over rows, if given), batched.
#[derive(Clone, Copy, Debug)]
pub struct Matmul {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// A is stored [k, m] (row-major), use its transpose.
    pub ta: bool,
    /// B is stored [n, k], use its transpose.
    pub tb: bool,
    /// Default 1.
    pub alpha: f32,
    /// Default 0 (overwrite, C is not read); 1 = accumulate into C.
    pub beta: f32,
    /// Row strides in elements, as stored; [`Matmul::new`] sets packed values.
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    /// Element offsets of batch 0.
    pub a_offset: usize,
    pub b_offset: usize,
    pub c_offset: usize,
    /// Number of products (default 1).
    pub batch: usize,
    /// Batch index z = outer * batch_inner + inner (default 1).
    pub batch_inner: usize,
    /// (outer, inner) element strides between batches.
    pub a_stride: (usize, usize),
    pub b_stride: (usize, usize),
    pub c_stride: (usize, usize),
}

impl Matmul {
    /// C[m, n] = A[m, k] · B[k, n], packed, alpha 1, beta 0, one product.
    pub fn new(m: usize, n: usize, k: usize) -> Matmul {
        Matmul {
            m,
            n,
            k,
            ta: false,
            tb: false,
            alpha: 1.0,
            beta: 0.0,
            lda: k,
            ldb: n,
            ldc: n,
            a_offset: 0,
            b_offset: 0,
            c_offset: 0,
            batch: 1,
            batch_inner: 1,
            a_stride: (0, 0),
            b_stride: (0, 0),
            c_stride: (0, 0),
        }
    }
    /// A is stored [k, m]; sets the packed lda (= m).
    pub fn ta(mut self) -> Matmul {
        self.ta = true;
        self.lda = self.m;
        self
    }
    /// B is stored [n, k]; sets the packed ldb (= k).
    pub fn tb(mut self) -> Matmul {
        self.tb = true;
        self.ldb = self.k;
        self
    }
    pub fn alpha(mut self, a: f32) -> Matmul {
        self.alpha = a;
        self
    }
    /// beta = 1: C += alpha · op(A) · op(B).
    pub fn accumulate(mut self) -> Matmul {
        self.beta = 1.0;
        self
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    batch_inner: u32,
    a_so: u32,
    a_si: u32,
    b_so: u32,
    b_si: u32,
    c_so: u32,
    c_si: u32,
    tiles_n: u32,
    tiles_mn: u32,
    total: u32,
    has_bias: u32,
    alpha: f32,
    beta: f32,
    d_off: u32,
}

/// What is added to the product and where the result goes.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// bias[n], added to every row (batch 1 only).
    pub bias: Option<&'a Tensor>,
    /// Also write D = gelu_new(C) here, laid out like C (batch 1 only).
    pub gelu: Option<&'a Tensor>,
}

/// Pushes C = alpha · op(A) · op(B) + beta · C (+ bias) for every batch onto `prog`.
/// `a`, `b` and `bias` may share a buffer; `c` must not alias any of them. `a` and `b` may be f16
/// tensors (read as f32); `c`, `bias` and D are f32.
/// The transposed-transposed layout (ta and tb) is not supported.
/// A shape that reaches outside a tensor is a bug in the caller: nothing is pushed and the
/// GPU's error slot reports it ([`Gpu::check`]).
pub fn matmul(gpu: &Gpu, prog: &mut Program, spec: &Matmul, a: &Tensor, b: &Tensor, c: &Tensor, bias: Option<&Tensor>) {
    matmul_ex(gpu, prog, spec, a, b, c, Epilogue { bias, gelu: None });
}

/// [`matmul`] that also writes D = gelu_new(C) into `d` (same layout as C; batch 1).
#[allow(clippy::too_many_arguments)]
pub fn matmul_gelu(gpu: &Gpu, prog: &mut Program, spec: &Matmul, a: &Tensor, b: &Tensor, c: &Tensor, bias: Option<&Tensor>, d: &Tensor) {
    matmul_ex(gpu, prog, spec, a, b, c, Epilogue { bias, gelu: Some(d) });
}

#[allow(clippy::too_many_arguments)]
fn matmul_ex(gpu: &Gpu, prog: &mut Program, spec: &Matmul, a: &Tensor, b: &Tensor, c: &Tensor, epi: Epilogue) {
    let tile = tile_for(gpu, spec);
    if let Err(e) = push_with(gpu, prog, spec, a, b, c, epi, tile) {
        gpu.report_error(e);
    }
}

/// Checks that every index the kernel computes stays inside its tensor and fits u32 (so the
/// shader can run without runtime bounds checks), then pushes the dispatch of `tile`.
#[allow(clippy::too_many_arguments)]
pub fn push_with(
    gpu: &Gpu,
    prog: &mut Program,
    spec: &Matmul,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    epi: Epilogue,
    tile: Tile,
) -> Result<(), String> {
    let s = spec;
    check(s, a, b, c, &epi, tile)?;
    if s.m == 0 || s.n == 0 || s.batch == 0 {
        return Ok(());
    }
    let inner = s.batch_inner.max(1);
    let (bm, bn) = (tile.bm() as usize, tile.bn() as usize);
    let tiles_n = s.n.div_ceil(bn);
    let tiles_mn = tiles_n * s.m.div_ceil(bm);
    let total = tiles_mn * s.batch;
    let u = |x: usize| x as u32; // every value was checked to fit u32
    let params = Params {
        m: u(s.m),
        n: u(s.n),
        k: u(s.k),
        lda: u(s.lda),
        ldb: u(s.ldb),
        ldc: u(s.ldc),
        a_off: u(s.a_offset),
        b_off: u(s.b_offset),
        c_off: u(s.c_offset),
        batch_inner: u(inner),
        a_so: u(s.a_stride.0),
        a_si: u(s.a_stride.1),
        b_so: u(s.b_stride.0),
        b_si: u(s.b_stride.1),
        c_so: u(s.c_stride.0),
        c_si: u(s.c_stride.1),
        tiles_n: u(tiles_n),
        tiles_mn: u(tiles_mn),
        total: u(total),
        has_bias: epi.bias.is_some() as u32,
        alpha: s.alpha,
        beta: s.beta,
        d_off: 0,
    };
    let (va, vb) = aligned(s, tile, a, b);
    let var = Variant::new(s.ta, s.tb, tile, va, vb, epi.gelu.is_some()).half(a.half, b.half);
    let key = var.key();
    let k = gpu.kernel_trusted(&key, &|| var.source(), "matmul", &[]);
    // Without a bias, binding 4 gets A (read-only, never read) so the layout is complete; D's
    // binding exists only in the GELU variants.
    let bias_buf = epi.bias.map_or(&a.buffer, |t| &t.buffer);
    let mut bindings = vec![(1, &a.buffer), (2, &b.buffer), (3, &c.buffer), (4, bias_buf)];
    if let Some(d) = epi.gelu {
        bindings.push((5, &d.buffer));
    }
    prog.push(gpu.dispatch(&key, &k, super::bytes_of(&params), &bindings, grid(u(total))));
    Ok(())
}

/// Whether A and B can be read as vec4s: every vec4 the kernel would load starts at a multiple of
/// 4 elements (offsets, strides and the leading dimension are multiples of 4), and for a vec4 across
/// rows or columns of C (TA: along m; B not TB: along n) the matrix has a multiple of 4 of them, so
/// clamped groups stay whole. The buffer must hold whole vec4s (gpu/tensor.rs allocates so), so the
/// vec4 around any element inside the tensor is inside the binding.
fn aligned(s: &Matmul, tile: Tile, a: &Tensor, b: &Tensor) -> (bool, bool) {
    let four = |xs: &[usize]| xs.iter().all(|x| x.is_multiple_of(4));
    let whole = |t: &Tensor| t.buffer.size().is_multiple_of(16);
    let va = whole(a) && four(&[s.lda, s.a_offset, s.a_stride.0, s.a_stride.1]) && (!s.ta || tile.staged || s.m.is_multiple_of(4));
    let vb = whole(b) && four(&[s.ldb, s.b_offset, s.b_stride.0, s.b_stride.1]) && (s.tb || s.n.is_multiple_of(4) || tile.staged);
    (va, vb)
}

/// The host-side checks that make the unchecked shader safe: layout, tile, and the last
/// element each operand touches inside its tensor (which also bounds every index below u32).
fn check(s: &Matmul, a: &Tensor, b: &Tensor, c: &Tensor, epi: &Epilogue, tile: Tile) -> Result<(), String> {
    let what = format!("matmul {}x{}x{} (batch {})", s.m, s.n, s.k, s.batch);
    if s.ta && s.tb {
        return Err(format!("{what}: the transposed-transposed layout is not supported"));
    }
    if c.half || epi.bias.is_some_and(|b| b.half) || epi.gelu.is_some_and(|d| d.half) {
        return Err(format!("{what}: C, bias and D must be f32"));
    }
    if !tile.valid() {
        return Err(format!("{what}: invalid tile {tile:?}"));
    }
    if (epi.bias.is_some() || epi.gelu.is_some()) && s.batch > 1 {
        return Err(format!("{what}: bias and GELU only with batch 1"));
    }
    let inner = s.batch_inner.max(1);
    let max = u32::MAX as usize;
    let tiles = s.m.div_ceil(tile.bm() as usize).checked_mul(s.n.div_ceil(tile.bn() as usize));
    let fits = [s.m, s.n, s.k, s.lda, s.ldb, s.ldc, s.a_offset, s.b_offset, s.c_offset, inner]
        .into_iter()
        .chain([s.a_stride.0, s.a_stride.1, s.b_stride.0, s.b_stride.1, s.c_stride.0, s.c_stride.1])
        .all(|x| x <= max);
    let grid_ok = tiles.and_then(|t| t.checked_mul(s.batch)).is_some_and(|t| t <= 65535 * 65535);
    if !fits || !grid_ok {
        return Err(format!("{what}: a size, stride or offset is too large for the kernel"));
    }
    if s.m == 0 || s.n == 0 || s.batch == 0 {
        return Ok(());
    }
    // Last element touched: offset + strides of the last batch + (rows-1)·ld + cols-1.
    let last = |off: usize, st: (usize, usize), rows: usize, cols: usize, ld: usize| -> Option<usize> {
        let z = s.batch - 1;
        off.checked_add((z / inner).checked_mul(st.0)?)?
            .checked_add((z % inner).checked_mul(st.1)?)?
            .checked_add((rows - 1).checked_mul(ld)?)?
            .checked_add(cols - 1)
    };
    let inside = |name: &str, t: &Tensor, last: Option<usize>| -> Result<(), String> {
        match last {
            Some(l) if l < t.len() && l <= max => Ok(()),
            _ => Err(format!("{what}: {name} reaches past its tensor '{}' ({} elements)", t.label, t.len())),
        }
    };
    if s.k > 0 {
        let (ar, ac) = if s.ta { (s.k, s.m) } else { (s.m, s.k) };
        let (br, bc) = if s.tb { (s.n, s.k) } else { (s.k, s.n) };
        inside("A", a, last(s.a_offset, s.a_stride, ar, ac, s.lda))?;
        inside("B", b, last(s.b_offset, s.b_stride, br, bc, s.ldb))?;
    }
    let c_last = last(s.c_offset, s.c_stride, s.m, s.n, s.ldc);
    inside("C", c, c_last)?;
    if let Some(bias) = epi.bias {
        if bias.len() < s.n {
            return Err(format!("{what}: bias '{}' has {} elements, fewer than n", bias.label, bias.len()));
        }
    }
    if let Some(d) = epi.gelu {
        // D is indexed like C, from offset 0: its last element is C's last minus c_offset.
        inside("D", d, c_last.map(|l| l - s.c_offset))?;
        if d.buffer == c.buffer {
            return Err(format!("{what}: D '{}' must be a tensor other than C", d.label));
        }
    }
    Ok(())
}
