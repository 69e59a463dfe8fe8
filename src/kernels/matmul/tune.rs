//! Which [`Tile`] runs a product. Products fall into shape classes (one row or a few, a narrow
//! C such as LoRA's rank-r products, small, large); each class has a few candidate tiles. On a
//! native GPU the first product of a (layout, class) times its candidates on scratch buffers of
//! its own shape and keeps the fastest ([`Gpu::remember_tuned`]: in memory and in the tuning
//! cache file); CPU adapters (lavapipe, where compiling a candidate costs seconds) and browsers
//! (where the CPU cannot wait for the GPU) use the table's first candidate, unless
//! `WEBTUNE_TUNE=measure` or [`Gpu::set_tuning`] asks to measure (a CPU adapter then measures
//! the GPU candidates too). The choice never changes results: every tile computes
//! bit-identical values (shaders/matmul.wgsl).
//!
//! `WEBTUNE_MATMUL_TILE=<name>` (a name from [`all_tiles`], e.g. d8x64k4t8x8) forces one tile for
//! every product, for benchmarks.

use super::{Matmul, Tile};
use crate::gpu::{Gpu, Tuning};

/// The shape class of a product, which picks its candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// m ≤ 4: one row (decoding) or a few.
    Rows,
    /// n ≤ 16: a narrow C, such as x · Aᵀ of a rank-r LoRA pair.
    Narrow,
    /// Under 2²² multiply-adds in all: few workgroups, so smaller tiles keep the device busy.
    Small,
    Large,
}

impl Class {
    pub fn of(s: &Matmul) -> Class {
        let work = (s.m as u128) * (s.n as u128) * (s.k.max(1) as u128) * (s.batch.max(1) as u128);
        if s.m <= 4 {
            Class::Rows
        } else if s.n <= 16 {
            Class::Narrow
        } else if work < 1 << 22 {
            Class::Small
        } else {
            Class::Large
        }
    }

    /// Candidates, the table's choice first. CPU adapters (lavapipe: measured in
    /// README.md's Benchmarks): each storage load costs a loop over the SIMD lanes there, so each
    /// thread reuses every value it loads many times (8 x 8 results, vec4 loads), with no
    /// workgroup memory and no barriers; the workgroup's x dimension (the lanes) runs along
    /// whichever of m and n has room for 8. GPUs: tiles staged in workgroup memory, except for
    /// one-row products.
    fn candidates(self, cpu: bool) -> &'static [Tile] {
        const CPU: [&[Tile]; 4] = [
            &[Tile::direct(16, 1, 1, 8, 4)],
            &[Tile::direct(2, 8, 8, 4, 4).lanes_m()],
            &[Tile::direct(8, 1, 8, 8, 4)],
            &[Tile::direct(8, 1, 8, 8, 4)],
        ];
        const GPU: [&[Tile]; 4] = [
            &[Tile::direct(64, 1, 1, 4, 4), Tile::direct(32, 1, 1, 8, 8)],
            &[Tile::staged(4, 16, 4, 4, 16), Tile::staged(2, 32, 4, 4, 16)],
            &[Tile::staged(8, 8, 4, 4, 16), Tile::staged(8, 8, 8, 8, 16)],
            &[Tile::staged(8, 8, 8, 8, 16), Tile::staged(16, 16, 8, 8, 8), Tile::staged(8, 16, 8, 8, 8)],
        ];
        (if cpu { CPU } else { GPU })[self as usize]
    }
}

/// Every tile any table or tuner may run (for the shader validation test and the bit-identity test).
pub fn all_tiles() -> Vec<Tile> {
    let mut v: Vec<Tile> = Vec::new();
    for class in [Class::Rows, Class::Narrow, Class::Small, Class::Large] {
        for cpu in [true, false] {
            for t in class.candidates(cpu) {
                if !v.contains(t) {
                    v.push(*t);
                }
            }
        }
    }
    v
}

/// The tile for this product on this device (see the module doc).
pub fn tile_for(gpu: &Gpu, s: &Matmul) -> Tile {
    #[cfg(not(target_arch = "wasm32"))]
    if let Ok(name) = std::env::var("WEBTUNE_MATMUL_TILE") {
        if let Some(t) = all_tiles().into_iter().find(|t| t.name() == name) {
            return t;
        }
    }
    let class = Class::of(s);
    let cpu = gpu.report.device_type == "Cpu";
    if gpu.tuning() == Tuning::Table {
        return class.candidates(cpu)[0];
    }
    // Measuring: the device's own candidates, and on a CPU adapter the GPU ones as well.
    let mut all = class.candidates(cpu).to_vec();
    if cpu {
        all.extend(class.candidates(false).iter().filter(|t| !all.contains(t)).collect::<Vec<_>>());
    }
    let candidates: Vec<Tile> = all.iter().copied().filter(|t| t.fits(&gpu.limits)).collect();
    let candidates = if candidates.is_empty() { &all[..1] } else { &candidates[..] };
    if candidates.len() == 1 {
        return candidates[0];
    }
    let key = format!("matmul:{}:{class:?}", super::codegen::layout_name(s.ta, s.tb));
    if let Some(t) = gpu.tuned(&key).and_then(|name| candidates.iter().find(|t| t.name() == name)) {
        return *t;
    }
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(t) = measure(gpu, s, candidates) {
        gpu.remember_tuned(&key, &t.name());
        return t;
    }
    candidates[0]
}

/// Times each candidate on a product of `s`'s shape (sizes capped so one run stays short) and
/// returns the fastest; None if the device reports an error.
#[cfg(not(target_arch = "wasm32"))]
fn measure(gpu: &Gpu, s: &Matmul, candidates: &[Tile]) -> Option<Tile> {
    use super::{push_with, Epilogue};
    use crate::gpu::{Program, Tensor};
    use std::time::Instant;
    let (m, n, k) = (s.m.min(2048), s.n.min(2048), s.k.min(4096));
    let per_batch = m * n + m * k + k * n;
    let batch = s.batch.clamp(1, ((16 << 20) / per_batch.max(1)).max(1));
    let mut spec = if s.ta { Matmul::new(m, n, k).ta() } else { Matmul::new(m, n, k) };
    if s.tb {
        spec = spec.tb();
    }
    if batch > 1 {
        spec.batch = batch;
        spec.a_stride = (m * k, 0);
        spec.b_stride = (k * n, 0);
        spec.c_stride = (m * n, 0);
    }
    let scratch = |label: &str, elems: usize| Tensor {
        buffer: gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (4 * elems.max(4)).next_multiple_of(16) as u64,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        }),
        shape: vec![elems],
        label: label.to_string(),
        half: false,
    };
    let (a, b, c) = (scratch("tune a", batch * m * k), scratch("tune b", batch * k * n), scratch("tune c", batch * m * n));
    let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let mut best: Option<(f64, Tile)> = None;
    for &tile in candidates {
        let mut prog = Program::new();
        if push_with(gpu, &mut prog, &spec, &a, &b, &c, Epilogue::default(), tile).is_err() {
            continue;
        }
        let run = |reps: usize| {
            let t0 = Instant::now();
            let mut enc = gpu.encoder("matmul tune");
            for _ in 0..reps {
                prog.record(&mut enc);
            }
            gpu.submit(enc);
            gpu.poll_wait();
            t0.elapsed().as_secs_f64() / reps as f64
        };
        let first = run(1); // compiles the pipeline on some drivers
        let reps = (0.002 / first.max(1e-6)).ceil().clamp(1.0, 20.0) as usize;
        let t = run(reps).min(run(reps));
        if best.is_none_or(|(bt, _)| t < bt) {
            best = Some((t, tile));
        }
    }
    let failed = pollster::block_on(scope.pop()).is_some();
    if failed {
        return None;
    }
    best.map(|(_, t)| t)
}
