//! Batched, strided matmul (shaders/matmul.wgsl): C = alpha · op(A) · op(B) + beta · C,
//! plus an optional bias[n] added to every row. The layout (NN, NT, TN) picks a shader
//! variant: the template's `{{TA}}` / `{{TB}}` placeholders, filled here with the tile sizes.

use crate::gpu::shaders::Template;
use crate::gpu::{grid, Gpu, Program, Tensor};

const SRC: &str = include_str!("../../shaders/matmul.wgsl");

/// Rows and columns of C that one workgroup computes, and the K step (the shader's thread
/// layout is written for these).
const BM: usize = 64;
const BN: usize = 64;
const BK: usize = 16;

/// The layouts the shader supports: (ta, tb).
const LAYOUTS: [(bool, bool); 3] = [(false, false), (false, true), (true, false)];

fn key(ta: bool, tb: bool) -> &'static str {
    match (ta, tb) {
        (false, false) => "matmul:nn",
        (false, true) => "matmul:nt",
        (true, false) => "matmul:tn",
        (true, true) => "matmul:tt",
    }
}

fn source(ta: bool, tb: bool) -> String {
    Template::new(key(ta, tb), SRC).set("TA", ta).set("TB", tb).set("BM", BM).set("BN", BN).set("BK", BK).render()
}

pub fn variants() -> Vec<(String, String)> {
    LAYOUTS
        .iter()
        .map(|&(ta, tb)| (key(ta, tb).to_string(), source(ta, tb)))
        .collect()
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
    causal: u32,
    alpha: f32,
    beta: f32,
}

/// Which triangle of a square-ish product matters (causal attention); see
/// shaders/matmul.wgsl. Work outside it is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Causal {
    None = 0,
    /// Only C[i, j] with j <= i is needed; tiles wholly above the diagonal are not written.
    LowerC = 1,
    /// op(A)[i, p] = 0 for p > i.
    LowerA = 2,
    /// op(A)[i, p] = 0 for p < i.
    UpperA = 3,
}

/// Pushes C = alpha · op(A) · op(B) + beta · C (+ bias) for every batch onto `prog`.
/// `a`, `b` and `bias` may share a buffer; `c` must not alias any of them.
/// The transposed-transposed layout (ta and tb) is not supported.
pub fn matmul(gpu: &Gpu, prog: &mut Program, spec: &Matmul, a: &Tensor, b: &Tensor, c: &Tensor, bias: Option<&Tensor>) {
    matmul_causal(gpu, prog, spec, a, b, c, bias, Causal::None);
}

/// [`matmul`] that skips the work a triangular operand or result makes useless.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_causal(
    gpu: &Gpu,
    prog: &mut Program,
    spec: &Matmul,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    bias: Option<&Tensor>,
    causal: Causal,
) {
    let s = spec;
    debug_assert!(!(s.ta && s.tb), "matmul: the TT layout is not supported");
    debug_assert!(bias.is_none() || s.batch == 1, "matmul: bias only with batch 1");
    if s.m == 0 || s.n == 0 || s.batch == 0 {
        return;
    }
    let inner = s.batch_inner.max(1);
    #[cfg(debug_assertions)]
    {
        // The last element each operand touches must lie inside its tensor.
        let last = |off: usize, st: (usize, usize), rows: usize, cols: usize, ld: usize| {
            let z = s.batch - 1;
            off + (z / inner) * st.0 + (z % inner) * st.1 + (rows - 1) * ld + cols - 1
        };
        if s.k > 0 {
            let (ar, ac) = if s.ta { (s.k, s.m) } else { (s.m, s.k) };
            let (br, bc) = if s.tb { (s.n, s.k) } else { (s.k, s.n) };
            debug_assert!(
                last(s.a_offset, s.a_stride, ar, ac, s.lda) < a.len(),
                "matmul: A out of bounds"
            );
            debug_assert!(
                last(s.b_offset, s.b_stride, br, bc, s.ldb) < b.len(),
                "matmul: B out of bounds"
            );
        }
        debug_assert!(
            last(s.c_offset, s.c_stride, s.m, s.n, s.ldc) < c.len(),
            "matmul: C out of bounds"
        );
        if let Some(bias) = bias {
            debug_assert!(bias.len() >= s.n, "matmul: bias shorter than n");
        }
    }
    let tiles_n = s.n.div_ceil(BN);
    let tiles_mn = tiles_n * s.m.div_ceil(BM);
    let total = tiles_mn * s.batch;
    let params = Params {
        m: s.m as u32,
        n: s.n as u32,
        k: s.k as u32,
        lda: s.lda as u32,
        ldb: s.ldb as u32,
        ldc: s.ldc as u32,
        a_off: s.a_offset as u32,
        b_off: s.b_offset as u32,
        c_off: s.c_offset as u32,
        batch_inner: inner as u32,
        a_so: s.a_stride.0 as u32,
        a_si: s.a_stride.1 as u32,
        b_so: s.b_stride.0 as u32,
        b_si: s.b_stride.1 as u32,
        c_so: s.c_stride.0 as u32,
        c_si: s.c_stride.1 as u32,
        tiles_n: tiles_n as u32,
        tiles_mn: tiles_mn as u32,
        total: total as u32,
        has_bias: bias.is_some() as u32,
        causal: causal as u32,
        alpha: s.alpha,
        beta: s.beta,
    };
    let (ta, tb) = (s.ta, s.tb && !s.ta);
    let k = gpu.kernel(key(ta, tb), &|| source(ta, tb), "matmul", &[]);
    // Without a bias, binding 4 gets A (read-only, never read) so the layout is complete.
    let bias_buf = bias.map_or(&a.buffer, |t| &t.buffer);
    prog.push(gpu.dispatch(
        key(ta, tb),
        &k,
        super::bytes_of(&params),
        &[(1, &a.buffer), (2, &b.buffer), (3, &c.buffer), (4, bias_buf)],
        grid(total as u32),
    ));
}
