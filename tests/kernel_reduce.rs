//! shaders/reduce.wgsl (column sums) against reference::ops::sum_rows, overwriting and
//! accumulating, on odd shapes; rows > 128 take the chunked two-pass path.
mod common;
use common::*;
use webtune::gpu::Program;
use webtune::kernels::reduce;
use webtune::reference::ops;

#[test]
fn sum_rows_matches_reference() {
    let gpu = gpu();
    for rows in [0usize, 1, 3, 33, 130, 300] {
        for cols in [1usize, 7, 48, 97, 770] {
            let x = rand_vec(rows * cols, (rows * 1000 + cols) as u64);
            let want = ops::sum_rows(&x, rows, cols);
            let out0 = rand_vec(cols, 3);
            let tx = gpu.upload("x", &[rows, cols], &x).unwrap();
            let out = gpu.upload("out", &[cols], &out0).unwrap();
            let acc = gpu.upload("acc", &[cols], &out0).unwrap();
            let mut prog = Program::new();
            reduce::sum_rows(&gpu, &mut prog, &tx, &out, rows, cols, false);
            reduce::sum_rows(&gpu, &mut prog, &tx, &acc, rows, cols, true);
            prog.run(&gpu);
            let what = format!("rows={rows} cols={cols}");
            assert_close(
                &format!("out {what}"),
                &gpu.read_blocking(&out).unwrap(),
                &want,
                1e-5,
                1e-5,
            );
            let want_acc: Vec<f32> = out0.iter().zip(&want).map(|(a, b)| a + b).collect();
            assert_close(
                &format!("acc {what}"),
                &gpu.read_blocking(&acc).unwrap(),
                &want_acc,
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn sum_rows_is_deterministic() {
    let gpu = gpu();
    let (rows, cols) = (700, 65);
    let x = rand_vec(rows * cols, 9);
    let tx = gpu.upload("x", &[rows, cols], &x).unwrap();
    let a = gpu.zeros("a", &[cols]).unwrap();
    let b = gpu.zeros("b", &[cols]).unwrap();
    let mut prog = Program::new();
    reduce::sum_rows(&gpu, &mut prog, &tx, &a, rows, cols, false);
    reduce::sum_rows(&gpu, &mut prog, &tx, &b, rows, cols, false);
    prog.run(&gpu);
    let (a, b) = (gpu.read_blocking(&a).unwrap(), gpu.read_blocking(&b).unwrap());
    assert_close("sum", &a, &ops::sum_rows(&x, rows, cols), 1e-5, 1e-5);
    assert_eq!(
        a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}
