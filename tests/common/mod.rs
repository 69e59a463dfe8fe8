//! Shared test helpers: one GPU per test, and closeness checks with stated tolerances.
#![allow(dead_code)]

use webtune::gpu::Gpu;

pub fn gpu() -> Gpu {
    match Gpu::new_blocking(None) {
        Ok(g) => g,
        Err(e) => panic!("tests need a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers): {e}"),
    }
}

/// Deterministic test data in [-1, 1).
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut r = webtune::rng::Rng::new(seed);
    (0..n).map(|_| r.uniform_in(-1.0, 1.0)).collect()
}

/// Asserts |a - b| <= atol + rtol * |b| elementwise, naming the first offender.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32, atol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs {}", got.len(), want.len());
    let mut worst = (0usize, 0.0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let tol = atol + rtol * w.abs();
        assert!(g.is_finite(), "{what}[{i}] = {g} is not finite (want {w})");
        if err - tol > worst.1 {
            worst = (i, err - tol);
        }
    }
    if worst.1 > 0.0 {
        let i = worst.0;
        panic!("{what}[{i}]: got {} want {} (|err| {} > atol {atol} + rtol {rtol} * |want|)", got[i], want[i], (got[i] - want[i]).abs());
    }
}
