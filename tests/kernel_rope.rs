//! shaders/rope.wgsl against reference::llama::{rope_forward, rope_backward} with tables from
//! model::rope: hd in {16, 24, 128}, N = B·T in {1 (1×1), 7 (1×7), 33 (3×11)}, 1 and 3 heads;
//! out of place and in place; q and k inside a packed qkv buffer (v and the padding must stay
//! untouched); a start offset; the first position read from a GPU buffer (decoding), re-run with
//! a new position without re-preparing; positions past the table.
mod common;
use common::*;
use webtune::gpu::{Gpu, Program, Tensor};
use webtune::kernels::rope::{self, Positions, Rope};
use webtune::kernels::View;
use webtune::model::rope::{Rope as RopeConfig, RopeScaling};
use webtune::reference::llama;

const SHAPES: [(usize, usize); 3] = [(1, 1), (1, 7), (3, 11)]; // (B, T)

fn table(hd: usize, positions: usize) -> Vec<f32> {
    let scaling = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 64.0,
    };
    RopeConfig { head_dim: hd, theta: 10000.0, scaling }.table(positions).unwrap()
}

fn up(gpu: &Gpu, name: &str, data: &[f32]) -> Tensor {
    gpu.upload(name, &[data.len()], data).unwrap()
}

/// Columns first..first+width of each row of a [n, ld] buffer.
fn cols(b: &[f32], ld: usize, first: usize, width: usize) -> Vec<f32> {
    b.chunks(ld).flat_map(|row| row[first..first + width].to_vec()).collect()
}

#[test]
fn forward_and_backward_out_of_place_and_in_place() {
    let gpu = gpu();
    for hd in [16, 24, 128] {
        for heads in [1, 3] {
            for (b, t) in SHAPES {
                for start in [0, 5] {
                    let (n, w) = (b * t, heads * hd);
                    let what = format!("hd={hd} heads={heads} B={b} T={t} start={start}");
                    let tab = table(hd, start + t);
                    let tt = up(&gpu, "table", &tab);
                    let x = rand_vec(n * w, (hd * 100 + heads * 10 + t) as u64);
                    let d = Rope { n, heads, head_dim: hd, t };
                    let want = llama::rope_forward(&x, &tab, heads, hd, t, start);
                    let want_back = llama::rope_backward(&x, &tab, heads, hd, t, start);
                    let pos = Positions::Start(start);

                    let tx = up(&gpu, "x", &x);
                    let out = up(&gpu, "out", &vec![9.0; n * w]);
                    let mut prog = Program::new();
                    rope::rope_forward(&gpu, &mut prog, &d, Some(View::rows(&tx, w)), View::rows(&out, w), &tt, pos);
                    prog.run(&gpu);
                    assert_close(&format!("forward {what}"), &gpu.read_blocking(&out).unwrap(), &want, 1e-6, 1e-6);
                    assert_eq!(gpu.read_blocking(&tx).unwrap(), x, "{what}: the input changed");

                    let mut prog = Program::new();
                    rope::rope_backward(&gpu, &mut prog, &d, Some(View::rows(&tx, w)), View::rows(&out, w), &tt, pos);
                    prog.run(&gpu);
                    assert_close(&format!("backward {what}"), &gpu.read_blocking(&out).unwrap(), &want_back, 1e-6, 1e-6);

                    let mut prog = Program::new();
                    rope::rope_forward(&gpu, &mut prog, &d, None, View::rows(&tx, w), &tt, pos);
                    prog.run(&gpu);
                    assert_close(&format!("forward in place {what}"), &gpu.read_blocking(&tx).unwrap(), &want, 1e-6, 1e-6);
                    let mut prog = Program::new();
                    rope::rope_backward(&gpu, &mut prog, &d, None, View::rows(&tx, w), &tt, pos);
                    prog.run(&gpu);
                    assert_close(&format!("round trip {what}"), &gpu.read_blocking(&tx).unwrap(), &x, 1e-5, 1e-6);
                }
            }
        }
    }
}

#[test]
fn q_and_k_inside_packed_qkv() {
    // qkv [N, (nh + 2·nkv)·hd + 1]: q (nh = 3 heads) at column 0, k (nkv = 1) at 3·hd, v after
    // it, one padding column; q and k rotated in place, v and the padding untouched. Then the
    // same rotation out of place from the packed buffer into a contiguous q [N, nh·hd].
    let gpu = gpu();
    let (nh, nkv) = (3, 1);
    for hd in [16, 24, 128] {
        for (b, t) in SHAPES {
            let n = b * t;
            let ld = (nh + 2 * nkv) * hd + 1;
            let what = format!("hd={hd} B={b} T={t}");
            let tab = table(hd, t);
            let tt = up(&gpu, "table", &tab);
            let qkv = rand_vec(n * ld, hd as u64 + t as u64);
            let tq = up(&gpu, "qkv", &qkv);
            let pos = Positions::Start(0);
            let mut prog = Program::new();
            let dq = Rope { n, heads: nh, head_dim: hd, t };
            let dk = Rope { heads: nkv, ..dq };
            rope::rope_forward(&gpu, &mut prog, &dq, None, View::cols(&tq, 0, ld), &tt, pos);
            rope::rope_forward(&gpu, &mut prog, &dk, None, View::cols(&tq, nh * hd, ld), &tt, pos);
            prog.run(&gpu);
            let got = gpu.read_blocking(&tq).unwrap();
            let want_q = llama::rope_forward(&cols(&qkv, ld, 0, nh * hd), &tab, nh, hd, t, 0);
            let want_k = llama::rope_forward(&cols(&qkv, ld, nh * hd, nkv * hd), &tab, nkv, hd, t, 0);
            assert_close(&format!("q {what}"), &cols(&got, ld, 0, nh * hd), &want_q, 1e-6, 1e-6);
            assert_close(&format!("k {what}"), &cols(&got, ld, nh * hd, nkv * hd), &want_k, 1e-6, 1e-6);
            let rest = (nh + nkv) * hd;
            assert_eq!(cols(&got, ld, rest, ld - rest), cols(&qkv, ld, rest, ld - rest), "{what}: v or padding changed");

            // out of place: q into a contiguous tensor, k into columns 1.. of a [N, nkv·hd + 2] one
            let tq = up(&gpu, "qkv", &qkv);
            let out = up(&gpu, "q", &vec![9.0; n * nh * hd]);
            let kld = nkv * hd + 2;
            let kout = up(&gpu, "k", &vec![9.0; n * kld]);
            let mut prog = Program::new();
            rope::rope_forward(&gpu, &mut prog, &dq, Some(View::cols(&tq, 0, ld)), View::rows(&out, nh * hd), &tt, pos);
            let (ksrc, kdst) = (View::cols(&tq, nh * hd, ld), View::cols(&kout, 1, kld));
            rope::rope_forward(&gpu, &mut prog, &dk, Some(ksrc), kdst, &tt, pos);
            prog.run(&gpu);
            assert_close(&format!("q copied {what}"), &gpu.read_blocking(&out).unwrap(), &want_q, 1e-6, 1e-6);
            let kb = gpu.read_blocking(&kout).unwrap();
            assert_close(&format!("k copied {what}"), &cols(&kb, kld, 1, nkv * hd), &want_k, 1e-6, 1e-6);
            assert!(kb.chunks(kld).all(|r| r[0] == 9.0 && r[kld - 1] == 9.0), "{what}: k written outside its view");
        }
    }
}

#[test]
fn decoding_reads_the_position_from_the_gpu() {
    // one token (n = 1), then a prompt of 3 tokens at consecutive positions (t = n = 3); the same
    // prepared program re-run after the position buffer changes
    let gpu = gpu();
    let (heads, hd) = (2, 24);
    let tab = table(hd, 40);
    let tt = up(&gpu, "table", &tab);
    for n in [1, 3] {
        let w = heads * hd;
        let x = rand_vec(n * w, 77 + n as u64);
        let tx = up(&gpu, "x", &x);
        let out = gpu.zeros("out", &[n * w]).unwrap();
        let pos = gpu.upload_u32("pos", &[1], &[4]).unwrap();
        let d = Rope { n, heads, head_dim: hd, t: n };
        let mut prog = Program::new();
        rope::rope_forward(&gpu, &mut prog, &d, Some(View::rows(&tx, w)), View::rows(&out, w), &tt, Positions::At(&pos));
        for p in [4, 0, 36] {
            gpu.write_u32(&pos, &[p as u32]);
            prog.run(&gpu);
            let want = llama::rope_forward(&x, &tab, heads, hd, n, p);
            assert_close(&format!("n={n} at position {p}"), &gpu.read_blocking(&out).unwrap(), &want, 1e-6, 1e-6);
        }
        // in place, backward
        let mut prog = Program::new();
        rope::rope_backward(&gpu, &mut prog, &d, None, View::rows(&tx, w), &tt, Positions::At(&pos));
        prog.run(&gpu);
        let want = llama::rope_backward(&x, &tab, heads, hd, n, 36);
        assert_close(&format!("n={n} backward at 36"), &gpu.read_blocking(&tx).unwrap(), &want, 1e-6, 1e-6);
    }
}

#[test]
fn positions_past_the_table_give_zeros() {
    let gpu = gpu();
    let (hd, t) = (16, 7);
    let tab = table(hd, 5); // positions 0..5 only
    let tt = up(&gpu, "table", &tab);
    let x = rand_vec(t * hd, 3);
    let tx = up(&gpu, "x", &x);
    let out = up(&gpu, "out", &vec![9.0; t * hd]);
    let mut prog = Program::new();
    let d = Rope { n: t, heads: 1, head_dim: hd, t };
    rope::rope_forward(&gpu, &mut prog, &d, Some(View::rows(&tx, hd)), View::rows(&out, hd), &tt, Positions::Start(0));
    prog.run(&gpu);
    let got = gpu.read_blocking(&out).unwrap();
    let want = llama::rope_forward(&x[..5 * hd], &tab, 1, hd, 5, 0);
    assert_close("rows inside the table", &got[..5 * hd], &want, 1e-6, 1e-6);
    assert_eq!(&got[5 * hd..], &vec![0.0; 2 * hd][..]);
}
