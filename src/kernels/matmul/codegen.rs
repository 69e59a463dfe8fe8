//! Shader generation for shaders/matmul.wgsl: a [`Tile`] configuration and a [`Variant`]
//! (layout, tile, vec4 operands, epilogue) fill the template's placeholders; the unrolled parts
//! (accumulators, the K loop, the stores) are written out here for the tile's sizes.

use std::fmt::Write as _;

use crate::gpu::shaders::Template;

const SRC: &str = include_str!("../../../shaders/matmul.wgsl");

/// One kernel configuration of the template: how a workgroup tiles C and how each thread walks K.
/// Every configuration gives bit-identical results (see shaders/matmul.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tile {
    /// Threads of a workgroup along n and along m.
    pub wx: u32,
    pub wy: u32,
    /// Rows and columns of C per thread: tn a multiple of 4; tm 1, 2 or a multiple of 4
    /// (staged: a multiple of 4).
    pub tm: u32,
    pub tn: u32,
    /// Depth of one K step (unrolled), a multiple of 4; staged: of the workgroup-memory tiles.
    pub bk: u32,
    /// Stage A and B tiles in workgroup memory (GPUs) or load straight from the buffers.
    pub staged: bool,
    /// The workgroup's x dimension runs along m instead of n (CPU drivers run x as SIMD
    /// lanes, so a product with few columns keeps them full this way).
    pub lanes_m: bool,
}

impl Tile {
    pub const fn staged(wx: u32, wy: u32, tm: u32, tn: u32, bk: u32) -> Tile {
        Tile { wx, wy, tm, tn, bk, staged: true, lanes_m: false }
    }
    pub const fn direct(wx: u32, wy: u32, tm: u32, tn: u32, bk: u32) -> Tile {
        Tile { wx, wy, tm, tn, bk, staged: false, lanes_m: false }
    }
    /// This tile with the workgroup's x dimension along m.
    pub const fn lanes_m(self) -> Tile {
        Tile { lanes_m: true, ..self }
    }
    /// Rows of C per workgroup.
    pub fn bm(&self) -> u32 {
        self.tm * self.wy
    }
    /// Columns of C per workgroup.
    pub fn bn(&self) -> u32 {
        self.tn * self.wx
    }
    /// A short name: s|d (staged, direct), BMxBN, k BK, t TMxTN, and "m" for lanes along m
    /// (e.g. "s64x64k16t8x8").
    pub fn name(&self) -> String {
        let kind = if self.staged { 's' } else { 'd' };
        let m = if self.lanes_m { "m" } else { "" };
        format!("{kind}{}x{}k{}t{}x{}{m}", self.bm(), self.bn(), self.bk, self.tm, self.tn)
    }
    /// Fits the device's workgroup limits.
    pub fn fits(&self, limits: &wgpu::Limits) -> bool {
        let (x, y) = if self.lanes_m { (self.wy, self.wx) } else { (self.wx, self.wy) };
        let shared = if self.staged { 4 * self.bk * (self.bm() + self.bn()) } else { 0 };
        x * y <= limits.max_compute_invocations_per_workgroup
            && x <= limits.max_compute_workgroup_size_x
            && y <= limits.max_compute_workgroup_size_y
            && shared <= limits.max_compute_workgroup_storage_size
    }

    pub fn valid(&self) -> bool {
        let threads = self.wx * self.wy;
        let tm_ok = if self.staged { self.tm.is_multiple_of(4) } else { matches!(self.tm, 1 | 2) || self.tm.is_multiple_of(4) };
        threads > 0
            && threads <= 256
            && self.tn.is_multiple_of(4)
            && self.tn > 0
            && tm_ok
            && self.bk > 0
            && self.bk.is_multiple_of(4)
    }
}

pub(crate) fn layout_name(ta: bool, tb: bool) -> &'static str {
    match (ta, tb) {
        (false, false) => "nn",
        (false, true) => "nt",
        (true, false) => "tn",
        (true, true) => "tt",
    }
}

/// A shader variant: layout, tile, whether A / B are read as aligned vec4s, epilogue, and
/// whether A / B are stored as f16 (frozen base weights; converted to f32 as they are loaded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Variant {
    pub ta: bool,
    pub tb: bool,
    pub tile: Tile,
    pub va: bool,
    pub vb: bool,
    pub gelu: bool,
    pub ha: bool,
    pub hb: bool,
}

impl Variant {
    /// A variant; `va` is dropped where the tile cannot read A as vec4s (direct tiles read op(A)
    /// of TA along m, in groups of 4 rows, which needs tm a multiple of 4).
    pub fn new(ta: bool, tb: bool, tile: Tile, va: bool, vb: bool, gelu: bool) -> Variant {
        let va = va && !(ta && !tile.staged && !tile.tm.is_multiple_of(4));
        Variant { ta, tb, tile, va, vb, gelu, ha: false, hb: false }
    }

    /// This variant with A and / or B stored as f16.
    pub fn half(self, ha: bool, hb: bool) -> Variant {
        Variant { ha, hb, ..self }
    }

    pub fn key(&self) -> String {
        let v = match (self.va, self.vb) {
            (false, false) => "",
            (true, false) => ":va",
            (false, true) => ":vb",
            (true, true) => ":vab",
        };
        let g = if self.gelu { ":gelu" } else { "" };
        let h = match (self.ha, self.hb) {
            (false, false) => "",
            (true, false) => ":ha",
            (false, true) => ":hb",
            (true, true) => ":hab",
        };
        format!("matmul:{}:{}{v}{g}{h}", layout_name(self.ta, self.tb), self.tile.name())
    }

    pub fn source(&self) -> String {
        let t = &self.tile;
        debug_assert!(t.valid(), "matmul: invalid tile {t:?}");
        let (shared, body) = if t.staged { staged_body(self) } else { (String::new(), direct_body(self)) };
        // An operand is read through name_at(i) (one element) and, for vec4 loads, name4_at(i)
        // (the i-th vec4), both as f32 whatever it is stored as.
        let decl = |name: &str, binding: u32, vec: bool, half: bool| {
            let ty = if half { "f16" } else { "f32" };
            if vec {
                format!(
                    "@group(0) @binding({binding}) var<storage, read> {name}4: array<vec4<{ty}>>;\n\
                     fn {name}_at(i: u32) -> f32 {{ return f32({name}4[i >> 2u][i & 3u]); }}\n\
                     fn {name}4_at(i: u32) -> vec4<f32> {{ return vec4<f32>({name}4[i]); }}"
                )
            } else {
                format!(
                    "@group(0) @binding({binding}) var<storage, read> {name}: array<{ty}>;\n\
                     fn {name}_at(i: u32) -> f32 {{ return f32({name}[i]); }}"
                )
            }
        };
        let (wg, tx, ty) = match (t.lanes_m, t.wx == 1, t.wy == 1) {
            (false, _, _) => (format!("{}, {}", t.wx, t.wy), "lid3.x", "lid3.y"),
            (true, _, _) => (format!("{}, {}", t.wy, t.wx), "lid3.y", "lid3.x"),
        };
        Template::new(&self.key(), SRC)
            .set("ENABLE", if self.ha || self.hb { "enable f16;" } else { "" })
            .set("TA", self.ta)
            .set("TB", self.tb)
            .set("D_DECL", if self.gelu { "@group(0) @binding(5) var<storage, read_write> d: array<f32>;" } else { "" })
            .set("D_STORE", if self.gelu { "d[idx - p.c_off + p.d_off] = gelu(x);" } else { "" })
            .set("WX", t.wx)
            .set("WY", t.wy)
            .set("BM", t.bm())
            .set("BN", t.bn())
            .set("BK", t.bk)
            .set("WG", wg)
            .set("TX", tx)
            .set("TY", ty)
            .set("A_DECL", decl("a", 1, self.va, self.ha))
            .set("B_DECL", decl("b", 2, self.vb, self.hb))
            .set("SHARED", shared)
            .set("BODY", body)
            .render()
    }
}

/// Row of C (relative to m0) of a thread's i-th row: rows come in groups of up to 4
/// consecutive ones, group g of thread ty at (g · WY + ty) · 4.
fn row_expr(t: &Tile, i: u32) -> String {
    let rg = t.tm.min(4);
    format!("(({}u * WY + ty) * {rg}u + {}u)", i / rg, i % rg)
}

/// First column (relative to n0) of a thread's h-th group of 4 columns: (h · WX + tx) · 4.
fn col_expr(h: u32) -> String {
    format!("(({h}u * WX + tx) * 4u)")
}

const XYZW: [&str; 4] = ["x", "y", "z", "w"];

fn declare_acc(t: &Tile, s: &mut String) {
    for i in 0..t.tm {
        for h in 0..t.tn / 4 {
            let _ = writeln!(s, "    var acc{i}_{h} = vec4<f32>(0.0);");
        }
    }
}

fn store_acc(t: &Tile, s: &mut String) {
    for i in 0..t.tm {
        let _ = writeln!(s, "    let r{i} = m0 + {};", row_expr(t, i));
        for h in 0..t.tn / 4 {
            let _ = writeln!(s, "    store4(c_base, r{i}, n0 + {}, acc{i}_{h});", col_expr(h));
        }
    }
}

/// Direct tiles: each thread reads its rows of op(A) and columns of op(B) from the buffers, with
/// indices clamped into the matrix (results of clamped rows and columns are never stored). K runs
/// in unrolled blocks of BK, then in quads of 4, then one by one. In a quad an aligned operand is
/// read as vec4s: A along k (or along m when TA), B along n (or along k when TB).
fn direct_body(v: &Variant) -> String {
    let t = &v.tile;
    let (tm, groups) = (t.tm, t.tn / 4);
    let mut s = String::new();
    declare_acc(t, &mut s);
    let _ = writeln!(s, "    let m_last = p.m - 1u;\n    let n_last = p.n - 1u;");
    // Pointers: pa{i} = start of row i (non-TA) or of its group of 4 rows (TA, va: clamped as a group).
    for i in 0..tm {
        let row = if v.ta && v.va {
            if !i.is_multiple_of(4) {
                continue;
            }
            format!("min(m0 + {}, p.m - 4u)", row_expr(t, i))
        } else {
            format!("min(m0 + {}, m_last)", row_expr(t, i))
        };
        let ptr = if v.ta { format!("a_base + {row}") } else { format!("a_base + {row} * p.lda") };
        let _ = writeln!(s, "    let pa{i} = {ptr};");
    }
    for h in 0..groups {
        if v.vb && !v.tb {
            let _ = writeln!(s, "    let pb{h} = b_base + min(n0 + {}, p.n - 4u);", col_expr(h));
            continue;
        }
        for q in 0..4 {
            let col = format!("min(n0 + {} + {q}u, n_last)", col_expr(h));
            let ptr = if v.tb { format!("b_base + {col} * p.ldb") } else { format!("b_base + {col}") };
            let _ = writeln!(s, "    let pb{h}_{q} = {ptr};");
        }
    }
    let fmas = |s: &mut String, ind: &str, a: &dyn Fn(u32) -> String, b: &dyn Fn(u32) -> String| {
        for i in 0..tm {
            let _ = writeln!(s, "{ind}let a{i} = vec4<f32>({});", a(i));
        }
        for h in 0..groups {
            let _ = writeln!(s, "{ind}let b{h} = {};", b(h));
        }
        for i in 0..tm {
            for h in 0..groups {
                let _ = writeln!(s, "{ind}acc{i}_{h} = fma(a{i}, b{h}, acc{i}_{h});");
            }
        }
    };
    // One k step with scalar loads.
    let step = |s: &mut String, kk: &str, ind: &str| {
        let ka = if v.ta { format!("{kk} * p.lda") } else { kk.to_string() };
        let kb = if v.tb { kk.to_string() } else { format!("{kk} * p.ldb") };
        let _ = writeln!(s, "{ind}{{\n{ind}    let ka = {ka};\n{ind}    let kb = {kb};");
        let ind2 = format!("{ind}    ");
        let a = |i: u32| {
            if v.ta && v.va {
                format!("a_at(pa{} + ka + {}u)", i / 4 * 4, i % 4)
            } else {
                format!("a_at(pa{i} + ka)")
            }
        };
        let b = |h: u32| {
            if v.vb && !v.tb {
                format!("vec4<f32>(b_at(pb{h} + kb), b_at(pb{h} + kb + 1u), b_at(pb{h} + kb + 2u), b_at(pb{h} + kb + 3u))")
            } else {
                format!("vec4<f32>(b_at(pb{h}_0 + kb), b_at(pb{h}_1 + kb), b_at(pb{h}_2 + kb), b_at(pb{h}_3 + kb))")
            }
        };
        fmas(s, &ind2, &a, &b);
        let _ = writeln!(s, "{ind}}}");
    };
    // Four k steps k0..k0+3 (k0 a multiple of 4), aligned operands read as vec4s.
    let quad = |s: &mut String, kk: &str, ind: &str| {
        if !(v.va || v.vb) {
            for u in 0..4 {
                step(s, &format!("({kk} + {u}u)"), ind);
            }
            return;
        }
        let _ = writeln!(s, "{ind}{{\n{ind}    let kq = {kk};");
        let ind2 = format!("{ind}    ");
        if v.va && !v.ta {
            for i in 0..tm {
                let _ = writeln!(s, "{ind2}let av{i} = a4_at((pa{i} + kq) >> 2u);");
            }
        }
        if v.vb && v.tb {
            for h in 0..groups {
                for q in 0..4 {
                    let _ = writeln!(s, "{ind2}let bv{h}_{q} = b4_at((pb{h}_{q} + kq) >> 2u);");
                }
            }
        }
        for u in 0..4u32 {
            let c = XYZW[u as usize];
            let _ = writeln!(s, "{ind2}{{\n{ind2}    let kk = kq + {u}u;");
            let ind3 = format!("{ind2}    ");
            if v.ta {
                let _ = writeln!(s, "{ind3}let ka = kk * p.lda;");
                if v.va {
                    for g in 0..tm / 4 {
                        let _ = writeln!(s, "{ind3}let ag{g} = a4_at((pa{} + ka) >> 2u);", 4 * g);
                    }
                }
            }
            if !v.tb {
                let _ = writeln!(s, "{ind3}let kb = kk * p.ldb;");
            }
            let a = |i: u32| match (v.va, v.ta) {
                (true, false) => format!("av{i}.{c}"),
                (true, true) => format!("ag{}.{}", i / 4, XYZW[(i % 4) as usize]),
                (false, false) => format!("a_at(pa{i} + kk)"),
                (false, true) => format!("a_at(pa{i} + ka)"),
            };
            let b = |h: u32| match (v.vb, v.tb) {
                (true, true) => format!("vec4<f32>(bv{h}_0.{c}, bv{h}_1.{c}, bv{h}_2.{c}, bv{h}_3.{c})"),
                (true, false) => format!("b4_at((pb{h} + kb) >> 2u)"),
                (false, true) => {
                    format!("vec4<f32>(b_at(pb{h}_0 + kk), b_at(pb{h}_1 + kk), b_at(pb{h}_2 + kk), b_at(pb{h}_3 + kk))")
                }
                (false, false) => {
                    format!("vec4<f32>(b_at(pb{h}_0 + kb), b_at(pb{h}_1 + kb), b_at(pb{h}_2 + kb), b_at(pb{h}_3 + kb))")
                }
            };
            fmas(s, &ind3, &a, &b);
            let _ = writeln!(s, "{ind2}}}");
        }
        let _ = writeln!(s, "{ind}}}");
    };
    let _ = writeln!(s, "    var k0 = 0u;\n    for (; k0 + BK <= p.k; k0 += BK) {{");
    for u in 0..t.bk / 4 {
        quad(&mut s, &format!("(k0 + {}u)", 4 * u), "        ");
    }
    let _ = writeln!(s, "    }}");
    if t.bk > 4 {
        let _ = writeln!(s, "    for (; k0 + 4u <= p.k; k0 += 4u) {{");
        quad(&mut s, "k0", "        ");
        let _ = writeln!(s, "    }}");
    }
    let _ = writeln!(s, "    for (; k0 < p.k; k0++) {{");
    step(&mut s, "k0", "        ");
    let _ = writeln!(s, "    }}");
    store_acc(t, &mut s);
    s
}

/// Staged tiles: per BK step the workgroup copies op(A)[m0.., k0..] and op(B)[k0.., n0..] into
/// As [BK][BM / 4] and Bs [BK][BN / 4] (vec4s along m and n), 0 outside the matrix; each
/// thread then reads a vec4 of 4 rows and one of 4 columns per group and does 16 fmas with them.
/// Aligned operands are copied with vec4 loads where the 4 elements lie inside the matrix.
fn staged_body(v: &Variant) -> (String, String) {
    let t = &v.tile;
    let (bm4, bn4, bk4) = (t.bm() / 4, t.bn() / 4, t.bk / 4);
    let threads = t.wx * t.wy;
    let shared = format!(
        "var<workgroup> As: array<vec4<f32>, {}>; // [BK][BM / 4]\nvar<workgroup> Bs: array<vec4<f32>, {}>; // [BK][BN / 4]",
        t.bk * bm4,
        t.bk * bn4
    );
    let mut s = String::new();
    declare_acc(t, &mut s);
    let _ = writeln!(s, "    for (var k0 = 0u; k0 < p.k; k0 += BK) {{");
    let copy = |s: &mut String, slots: u32, body: &str| {
        for r in 0..slots.div_ceil(threads) {
            let guard = (r + 1) * threads > slots;
            let _ = writeln!(s, "        {{\n            let slot = lid + {}u;", r * threads);
            if guard {
                let _ = writeln!(s, "            if (slot < {slots}u) {{");
            }
            s.push_str(body);
            if guard {
                let _ = writeln!(s, "            }}");
            }
            let _ = writeln!(s, "        }}");
        }
    };
    // A tile: BK · BM / 4 vec4 slots.
    let mut body = String::new();
    let ind = "            ";
    if v.ta {
        // stored [k, m]: 4 consecutive m of one k per slot
        let _ = writeln!(body, "{ind}let kk = k0 + slot / {bm4}u;\n{ind}let row = m0 + (slot % {bm4}u) * 4u;");
        let scalar = "vec4<f32>(load_a(a_base, row, kk), load_a(a_base, row + 1u, kk), load_a(a_base, row + 2u, kk), load_a(a_base, row + 3u, kk))";
        if v.va {
            let _ = writeln!(
                body,
                "{ind}if (row + 3u < p.m && kk < p.k) {{ As[slot] = a4_at((a_base + kk * p.lda + row) >> 2u); }} else {{ As[slot] = {scalar}; }}"
            );
        } else {
            let _ = writeln!(body, "{ind}As[slot] = {scalar};");
        }
    } else {
        // stored [m, k]: 4 consecutive k of one row per slot
        let _ = writeln!(
            body,
            "{ind}let row = slot / {bk4}u;\n{ind}let kq = (slot % {bk4}u) * 4u;\n{ind}let at = kq * {bm4}u + row / 4u;\n{ind}let q = row % 4u;"
        );
        let scalar = "vec4<f32>(load_a(a_base, m0 + row, k0 + kq), load_a(a_base, m0 + row, k0 + kq + 1u), load_a(a_base, m0 + row, k0 + kq + 2u), load_a(a_base, m0 + row, k0 + kq + 3u))";
        if v.va {
            let _ = writeln!(
                body,
                "{ind}var va = vec4<f32>(0.0);\n{ind}if (m0 + row < p.m && k0 + kq + 3u < p.k) {{ va = a4_at((a_base + (m0 + row) * p.lda + k0 + kq) >> 2u); }} else {{ va = {scalar}; }}"
            );
        } else {
            let _ = writeln!(body, "{ind}let va = {scalar};");
        }
        for u in 0..4 {
            let _ = writeln!(body, "{ind}As[at + {}u][q] = va.{};", u * bm4, XYZW[u as usize]);
        }
    }
    copy(&mut s, t.bk * bm4, &body);
    // B tile: BK · BN / 4 vec4 slots.
    let mut body = String::new();
    if v.tb {
        // stored [n, k]: 4 consecutive k of one column per slot
        let _ = writeln!(
            body,
            "{ind}let col = slot / {bk4}u;\n{ind}let kq = (slot % {bk4}u) * 4u;\n{ind}let at = kq * {bn4}u + col / 4u;\n{ind}let q = col % 4u;"
        );
        let scalar = "vec4<f32>(load_b(b_base, k0 + kq, n0 + col), load_b(b_base, k0 + kq + 1u, n0 + col), load_b(b_base, k0 + kq + 2u, n0 + col), load_b(b_base, k0 + kq + 3u, n0 + col))";
        if v.vb {
            let _ = writeln!(
                body,
                "{ind}var vb = vec4<f32>(0.0);\n{ind}if (n0 + col < p.n && k0 + kq + 3u < p.k) {{ vb = b4_at((b_base + (n0 + col) * p.ldb + k0 + kq) >> 2u); }} else {{ vb = {scalar}; }}"
            );
        } else {
            let _ = writeln!(body, "{ind}let vb = {scalar};");
        }
        for u in 0..4 {
            let _ = writeln!(body, "{ind}Bs[at + {}u][q] = vb.{};", u * bn4, XYZW[u as usize]);
        }
    } else {
        // stored [k, n]: 4 consecutive n of one k per slot
        let _ = writeln!(body, "{ind}let kk = k0 + slot / {bn4}u;\n{ind}let col = n0 + (slot % {bn4}u) * 4u;");
        let scalar = "vec4<f32>(load_b(b_base, kk, col), load_b(b_base, kk, col + 1u), load_b(b_base, kk, col + 2u), load_b(b_base, kk, col + 3u))";
        if v.vb {
            let _ = writeln!(
                body,
                "{ind}if (col + 3u < p.n && kk < p.k) {{ Bs[slot] = b4_at((b_base + kk * p.ldb + col) >> 2u); }} else {{ Bs[slot] = {scalar}; }}"
            );
        } else {
            let _ = writeln!(body, "{ind}Bs[slot] = {scalar};");
        }
    }
    copy(&mut s, t.bk * bn4, &body);
    let _ = writeln!(s, "        workgroupBarrier();");
    for kk in 0..t.bk {
        let _ = writeln!(s, "        {{");
        for g in 0..t.tm / 4 {
            let _ = writeln!(s, "            let a{g} = As[{}u + {g}u * WY + ty];", kk * bm4);
        }
        for h in 0..t.tn / 4 {
            let _ = writeln!(s, "            let b{h} = Bs[{}u + {h}u * WX + tx];", kk * bn4);
        }
        for i in 0..t.tm {
            for h in 0..t.tn / 4 {
                let _ = writeln!(
                    s,
                    "            acc{i}_{h} = fma(vec4<f32>(a{}.{}), b{h}, acc{i}_{h});",
                    i / 4,
                    XYZW[(i % 4) as usize]
                );
            }
        }
        let _ = writeln!(s, "        }}");
    }
    let _ = writeln!(s, "        workgroupBarrier();\n    }}");
    store_acc(t, &mut s);
    (shared, s)
}
