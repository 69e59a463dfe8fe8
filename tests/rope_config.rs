//! src/model/rope.rs against transformers (tests/fixtures/rope.json, tools/make_rope_fixtures.py):
//! inv_freq, attention scaling and the cos/sin table for Llama (default and llama3 scaling, hub
//! `rope_scaling` and transformers 5 `rope_parameters` spellings), Qwen2 and Qwen3 (head_dim ≠
//! hidden / heads) configs; transformers' apply_rotary_pos_emb against reference::llama's rotation
//! with this table; then the configs it must refuse, each error naming its field.
use webtune::model::rope::{cos_sin_table, Rope, RopeScaling};

fn fixture() -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rope.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// Distance in units in the last place (same sign assumed, as for these positive / cos values).
fn ulps(a: f32, b: f32) -> u32 {
    if a == b {
        return 0;
    }
    if a.signum() != b.signum() {
        return u32::MAX;
    }
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

#[test]
fn frequencies_and_tables_match_transformers() {
    let fx = fixture();
    let positions: Vec<usize> = fx["positions"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as usize).collect();
    let mut llama3 = 0;
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let rope = Rope::from_config(&case["config"], name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let hd = case["head_dim"].as_u64().unwrap() as usize;
        assert_eq!(rope.head_dim, hd, "{name}: head_dim");
        llama3 += matches!(rope.scaling, RopeScaling::Llama3 { .. }) as usize;

        // inv_freq: the same f32 operations as torch, whose vectorised pow may be 1 ulp off the
        // correctly rounded power used here; llama3's interpolation can double that.
        let want = floats(&case["inv_freq"]);
        let got = rope.inv_freq();
        assert_eq!(got.len(), hd / 2, "{name}: inv_freq length");
        let mut worst = 0;
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            let tol = if matches!(rope.scaling, RopeScaling::None) { 1 } else { 3 };
            assert!(ulps(*g, *w) <= tol, "{name}: inv_freq[{k}] = {g:e}, transformers {w:e}");
            worst = worst.max(ulps(*g, *w));
        }
        eprintln!("{name}: inv_freq within {worst} ulp");
        assert_eq!(rope.attention_factor(), case["attention_scaling"].as_f64().unwrap() as f32, "{name}");
        assert_eq!(rope.table(3).unwrap(), cos_sin_table(&got, rope.attention_factor(), 3).unwrap());

        // the table at transformers' positions, from transformers' inv_freq (a 1-ulp frequency
        // difference moves the angle at position 100000 by ~1e-3): cos/sin of the same f32 angles
        let max = *positions.iter().max().unwrap() + 1;
        let table = cos_sin_table(&want, rope.attention_factor(), max).unwrap();
        assert_eq!(table.len(), max * hd);
        for (i, &p) in positions.iter().enumerate() {
            let (cos, sin) = (floats(&case["cos"][i]), floats(&case["sin"][i]));
            for k in 0..hd / 2 {
                let (gc, gs) = (table[p * hd + k], table[p * hd + hd / 2 + k]);
                // torch's f32 cos/sin are within an ulp or so of the rounded f64 value
                assert!((gc - cos[k]).abs() <= 2.5e-7, "{name}: cos at position {p}, pair {k}: {gc} vs {}", cos[k]);
                assert!((gs - sin[k]).abs() <= 2.5e-7, "{name}: sin at position {p}, pair {k}: {gs} vs {}", sin[k]);
            }
        }
    }
    assert_eq!(llama3, 4, "the fixture's llama3 cases");
}

#[test]
fn rotation_matches_apply_rotary_pos_emb() {
    let fx = fixture();
    let a = &fx["apply_rotary"];
    let case = fx["cases"].as_array().unwrap().iter().find(|c| c["name"] == a["case"]).unwrap();
    let rope = Rope::from_config(&case["config"], "case").unwrap();
    let (heads, t) = (a["heads"].as_u64().unwrap() as usize, a["t"].as_u64().unwrap() as usize);
    let (q, want) = (floats(&a["q"]), floats(&a["q_embed"]));
    let got = webtune::reference::llama::rope_forward(&q, &rope.table(t).unwrap(), heads, rope.head_dim, t, 0);
    assert_eq!(got.len(), want.len());
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-6 + 1e-6 * w.abs(), "q_embed[{k}]: {g} vs transformers {w}");
    }
    assert!(got.iter().zip(&q).any(|(g, x)| (g - x).abs() > 0.1), "the rotation did nothing");
}

#[test]
fn llama3_changes_long_wavelengths_only() {
    // Hand-derived: with factor 8, wavelengths above original/low (64) are divided by 8,
    // those below original/high (16) are kept.
    let cfg = |scaling: serde_json::Value| {
        serde_json::json!({"hidden_size": 72, "num_attention_heads": 3, "max_position_embeddings": 256,
                           "rope_theta": 10000.0, "rope_scaling": scaling})
    };
    let plain = Rope::from_config(&cfg(serde_json::Value::Null), "c").unwrap().inv_freq();
    let scaled = Rope::from_config(
        &cfg(serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
        "c",
    )
    .unwrap()
    .inv_freq();
    let (mut kept, mut divided, mut between) = (0, 0, 0);
    for (p, s) in plain.iter().zip(&scaled) {
        let wavelen = 2.0 * std::f32::consts::PI / p;
        if wavelen < 16.0 {
            assert_eq!(s, p);
            kept += 1;
        } else if wavelen > 64.0 {
            assert_eq!(*s, p / 8.0);
            divided += 1;
        } else {
            assert!(*s < *p && *s > p / 8.0, "interpolated {s} not between {p} and {}", p / 8.0);
            between += 1;
        }
    }
    assert!(kept > 0 && divided > 0 && between > 0, "{kept} {divided} {between}");
}

fn refused(cfg: serde_json::Value, needle: &str) {
    match Rope::from_config(&cfg, "model/config.json") {
        Ok(r) => panic!("{cfg} was accepted: {r:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("model/config.json") && msg.contains(needle), "{cfg}: error '{msg}' lacks '{needle}'");
        }
    }
}

#[test]
fn refuses_what_it_does_not_implement() {
    use serde_json::json;
    let base = |extra: serde_json::Value| {
        let mut c = json!({"hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 128});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c
    };
    for ty in ["yarn", "linear", "dynamic", "longrope", "made_up"] {
        refused(base(json!({"rope_scaling": {"rope_type": ty, "factor": 2.0}})), &format!("'{ty}'"));
        refused(base(json!({"rope_parameters": {"rope_type": ty, "rope_theta": 1e4}})), &format!("'{ty}'"));
    }
    refused(base(json!({"rope_scaling": {"type": "yarn", "factor": 2.0}})), "'yarn'");
    refused(base(json!({"partial_rotary_factor": 0.5})), "partial_rotary_factor");
    refused(base(json!({"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.25}})), "partial_rotary_factor");
    refused(
        base(json!({"rope_parameters": {"full_attention": {"rope_type": "default"}, "sliding_attention": {}}})),
        "per layer",
    );
    refused(base(json!({"rope_scaling": {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0}})), "factor");
    refused(
        base(json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 4.0}})),
        "high_freq_factor",
    );
    refused(base(json!({"rope_theta": -5.0})), "rope_theta");
    refused(base(json!({"rope_theta": "big"})), "rope_theta");
    refused(base(json!({"rope_scaling": 3})), "rope_scaling");
    refused(base(json!({"rope_scaling": {"rope_type": 7}})), "rope_type");
    refused(base(json!({"head_dim": 15})), "head_dim 15");
    refused(base(json!({"head_dim": 0})), "head_dim");
    refused(json!({"hidden_size": 64, "num_attention_heads": 5}), "num_attention_heads 5");
    refused(json!({"num_attention_heads": 4}), "hidden_size");
    refused(json!([1, 2]), "object");
}

#[test]
fn spellings_agree() {
    use serde_json::json;
    // hub rope_theta + rope_scaling, transformers 5 rope_parameters, and an empty rope_scaling that
    // falls through to rope_parameters (transformers: `rope_scaling or rope_parameters`)
    let s = json!({"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192});
    let hub = json!({"hidden_size": 2048, "num_attention_heads": 32, "rope_theta": 500000.0, "rope_scaling": s});
    let mut p = s.clone();
    p["rope_theta"] = json!(500000.0);
    let v5 = json!({"hidden_size": 2048, "num_attention_heads": 32, "rope_parameters": p});
    let empty = json!({"hidden_size": 2048, "num_attention_heads": 32, "rope_scaling": {}, "rope_parameters": p});
    let a = Rope::from_config(&hub, "a").unwrap();
    assert_eq!(a, Rope::from_config(&v5, "b").unwrap());
    assert_eq!(a, Rope::from_config(&empty, "c").unwrap());
    assert_eq!(a.theta, 500000.0);
    // a top-level original_max_position_embeddings wins over the dict's (transformers' Phi-3 rule)
    let mut top = hub.clone();
    top["original_max_position_embeddings"] = json!(4096);
    match Rope::from_config(&top, "d").unwrap().scaling {
        RopeScaling::Llama3 { original_max_position_embeddings, .. } => assert_eq!(original_max_position_embeddings, 4096.0),
        s => panic!("{s:?}"),
    }
}

#[test]
fn table_rows_rotate_by_position() {
    // hand check: row p holds cos/sin(p · inv_freq); position 0 is the identity
    let rope = Rope { head_dim: 8, theta: 10000.0, scaling: RopeScaling::None };
    let t = rope.table(3).unwrap();
    assert_eq!(&t[0..8], &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!(t[8], 1f64.cos() as f32);
    assert_eq!(t[8 + 4], 1f64.sin() as f32);
    assert_eq!(t[16 + 1], ((2.0 * 0.1f32) as f64).cos() as f32); // inv_freq[1] = 10000^(-1/4) = 0.1
    assert!(rope.table(usize::MAX / 4).is_err());
    assert!(rope.table(u32::MAX as usize / 8 + 1).is_err());
}
