//! Rust side of each WGSL shader: shapes, uniform params, bind groups, grid sizes.
//!
//! Conventions every kernel file follows:
//! - Its shader is `shaders/<name>.wgsl`, included with `include_str!`; forward and
//!   backward entry points live side by side in it. Variants come from `override`
//!   constants or a small text substitution in the owner file, never a copied shader.
//! - Binding 0 is the uniform params (a `#[repr(C)]` Pod struct), storage buffers
//!   follow at 1, 2, ... Tensors are bound whole; offsets into them travel in params.
//! - A kernel call (`pub fn name(gpu, prog, tensors.., dims..)`) prepares its
//!   dispatches once and pushes them onto a [`Program`](crate::gpu::Program); the
//!   training step replays the program, so nothing is created per step.
//! - `variants()` returns every (name, WGSL source) the file can produce, so the naga
//!   test validates all of them.
//! - Grids above 65535 workgroups use [`grid`](crate::gpu::grid) (2D); shaders rebuild
//!   the linear id as `wid.x + wid.y * nwg.x`.
//! - A kernel that reads or writes a matrix inside a bigger buffer (q inside a packed qkv,
//!   gate and up side by side) takes a [`View`]: the tensor, the element offset of row 0
//!   and the row stride. WebGPU forbids binding one buffer both read-only and read-write
//!   in one dispatch, so an output view must lie in another buffer than the inputs
//!   (unless the kernel says it works in place).
//! - A matrix larger than one storage binding (a big vocabulary's embedding or LM head, its
//!   gradient) is a list of [`RowChunk`]s, each its own buffer holding a run of whole rows;
//!   the kernels that meet such a matrix take the list and dispatch once per chunk.

pub mod attention;
pub mod cross_entropy;
pub mod embedding;
pub mod gelu;
pub mod layernorm;
pub mod matmul;
pub mod optimizer;
pub mod reduce;
pub mod residual;
pub mod rmsnorm;
pub mod rope;
pub mod swiglu;

use crate::gpu::Tensor;

/// Rows `row0 .. row0 + rows` of a row-major matrix stored as several buffers (row chunks),
/// packed in `t` ([rows, cols]). A matrix in one buffer is one chunk ([`RowChunk::whole`]).
#[derive(Clone, Copy)]
pub struct RowChunk<'a> {
    pub t: &'a Tensor,
    pub row0: usize,
    pub rows: usize,
}

impl<'a> RowChunk<'a> {
    /// A whole [rows, cols] matrix in one buffer, as a list of one chunk.
    pub fn whole(t: &'a Tensor, cols: usize) -> [RowChunk<'a>; 1] {
        [RowChunk { t, row0: 0, rows: t.len() / cols.max(1) }]
    }

    /// Consecutive chunks (the tensors' rows, `cols` wide) starting at row 0.
    pub fn list(tensors: &[&'a Tensor], cols: usize) -> Vec<RowChunk<'a>> {
        let mut row0 = 0;
        tensors
            .iter()
            .map(|&t| {
                let rows = t.len() / cols.max(1);
                let chunk = RowChunk { t, row0, rows };
                row0 += rows;
                chunk
            })
            .collect()
    }
}

/// A row-major matrix inside a tensor: row i starts at element `offset + i * ld`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub t: &'a Tensor,
    pub offset: usize,
    pub ld: usize,
}

impl<'a> View<'a> {
    /// The whole tensor as rows of `width` values.
    pub fn rows(t: &'a Tensor, width: usize) -> View<'a> {
        View { t, offset: 0, ld: width }
    }
    /// Columns `first..` of a tensor whose rows hold `ld` values.
    pub fn cols(t: &'a Tensor, first: usize, ld: usize) -> View<'a> {
        View { t, offset: first, ld }
    }
    /// Whether `rows` rows of `width` values fit inside the tensor.
    pub(crate) fn fits(&self, rows: usize, width: usize) -> bool {
        rows == 0 || width == 0 || self.offset + (rows - 1) * self.ld + width <= self.t.len()
    }
}

/// Every shader variant of every kernel, for validation.
pub fn all_variants() -> Vec<(String, String)> {
    let mut v = Vec::new();
    v.extend(attention::variants());
    v.extend(cross_entropy::variants());
    v.extend(embedding::variants());
    v.extend(gelu::variants());
    v.extend(layernorm::variants());
    v.extend(matmul::variants());
    v.extend(optimizer::variants());
    v.extend(reduce::variants());
    v.extend(residual::variants());
    v.extend(rmsnorm::variants());
    v.extend(rope::variants());
    v.extend(swiglu::variants());
    v
}

/// `T` as the bytes of a uniform block.
pub(crate) fn bytes_of<T: bytemuck::Pod>(t: &T) -> &[u8] {
    bytemuck::bytes_of(t)
}

#[cfg(test)]
mod tests {
    /// Browsers' WGSL compilers (Tint) reject a float literal whose exact value lies
    /// beyond f32's range (e.g. -3.4028235e38), where naga rounds it; check every variant.
    #[test]
    fn float_literals_fit_f32_for_browsers() {
        for (name, src) in super::all_variants() {
            for (i, line) in src.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for word in code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '+' || c == '-')) {
                    let lit = word.trim_start_matches(['-', '+']).trim_end_matches('f');
                    if lit.contains(['e', '.']) && lit.starts_with(|c: char| c.is_ascii_digit()) {
                        if let Ok(v) = lit.parse::<f64>() {
                            assert!(v <= f32::MAX as f64, "{name}:{}: literal {word} exceeds f32::MAX", i + 1);
                        }
                    }
                }
            }
        }
    }

    /// WebGPU guarantees 16 KiB of workgroup memory (wgpu's downlevel default: 16352 bytes);
    /// every variant's workgroup variables together stay within it.
    #[test]
    fn workgroup_memory_fits_webgpu_defaults() {
        for (name, src) in super::all_variants() {
            let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{name}: {e}"));
            let bytes: u32 = module
                .global_variables
                .iter()
                .filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup)
                .map(|(_, g)| module.types[g.ty].inner.size(module.to_ctx()))
                .sum();
            assert!(bytes <= 16352, "{name}: {bytes} bytes of workgroup memory");
        }
    }

    #[test]
    fn every_shader_variant_validates_with_naga() {
        let variants = super::all_variants();
        assert!(!variants.is_empty());
        for (name, src) in variants {
            if let Err(e) = crate::gpu::shaders::validate(&name, &src) {
                panic!("{e}");
            }
        }
    }
}
