//! `webtune demo`: the whole job on the bundled default (assets/). A small GPT-2 trained from
//! scratch on Moby Dick writes samples and is evaluated on held-out chapters and on held-out
//! State of the Union addresses; a LoRA adapter is fine-tuned on the other addresses for a
//! bounded number of steps or seconds; then the samples and both held-out losses again
//! (adaptation to the new text, forgetting of the old), and the adapter is saved in PEFT format.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use webtune::data::dataset::Format;
use webtune::data::records::{read_dataset, split_eval};
use webtune::data::{Batch, Dataset, Record, Tokenizer};
use webtune::flags::Style;
use webtune::generate::{Generator, SampleConfig};
use webtune::gpu::Gpu;
use webtune::model::ModelGpu;
use webtune::model::weights::write_atomic;
use webtune::model::Weights;
use webtune::train::checkpoint::{ModelInfo, RunOptions};
use webtune::train::run::{Control, RunData, RunInputs};
use webtune::train::schedule::Schedule;
use webtune::train::{Run, RunSpec};

use super::paths::{self, Inputs, OutRules};
use super::pretrain::{eos_id, eval_batches, evaluate};

/// The demo's result: a PEFT adapter.
const ADAPTER: [&str; 2] = ["adapter_config.json", "adapter_model.safetensors"];
use webtune::train::eval::EvalResult;

/// The base text: Moby Dick, one record per chapter.
const BASE_TEXT: &str = "moby-dick.jsonl";
/// The fine-tuning text: State of the Union addresses 1961-1980, one record per address.
const NEW_TEXT: &str = "sotu-1961-1980.jsonl";
/// The model folder inside assets/.
const MODEL: &str = "model";
/// Held-out fractions and split seed. Moby Dick's are the ones the bundled model was pretrained with
/// (`webtune pretrain --eval-fraction 0.05 --seed 0`), so its held-out chapters were never trained on.
const BASE_EVAL_FRACTION: f32 = 0.05;
const NEW_EVAL_FRACTION: f32 = 0.1;
const SPLIT_SEED: u64 = 0;
const PROMPTS: [&str; 3] = [
    "Call me Ishmael. Some years ago",
    "The whale",
    "Mr. Speaker, Mr. President, Members of the Congress",
];
/// Fine-tuning shape and default peak learning rate.
const BATCH: usize = 4;
const SEQ: usize = 128;
const LR: f32 = 2e-3;
const WARMUP: u32 = 10;
const PROGRESS_EVERY: usize = 10;

#[derive(Args)]
pub struct DemoArgs {
    /// Stop fine-tuning after this many optimizer steps (the lr schedule spans them) ...
    #[arg(long, default_value_t = 200)]
    steps: u32,
    /// ... or after this many seconds of fine-tuning, whichever comes first
    #[arg(long, default_value_t = 150.0, allow_negative_numbers = true)]
    seconds: f64,
    /// Peak learning rate of the fine-tune (AdamW; warmup, then cosine to a tenth of it)
    #[arg(long, default_value_t = LR, allow_negative_numbers = true)]
    lr: f32,
    /// Where the LoRA adapter goes (PEFT format: adapter_config.json + adapter_model.safetensors);
    /// a new or empty folder, or an earlier demo's adapter (replaced)
    #[arg(long, default_value = "webtune-demo-adapter")]
    out: PathBuf,
    /// Replace webtune's results in a --out that holds more than an earlier demo's adapter
    #[arg(long)]
    overwrite: bool,
    /// The assets folder (default: WEBTUNE_ASSETS, else the source tree's assets/, else ./assets)
    #[arg(long)]
    assets: Option<PathBuf>,
    /// Evaluate at most this many windows of 128 tokens of each held-out text
    #[arg(long, default_value_t = 64)]
    eval_windows: usize,
    /// New tokens per sample
    #[arg(long, default_value_t = 40)]
    sample_tokens: usize,
    /// Seed for LoRA init, shuffling and sampling
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// The assets folder: --assets, WEBTUNE_ASSETS, the source tree's assets/ (found at compile
/// time, so `cargo run` works from any folder), or ./assets.
fn assets_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("WEBTUNE_ASSETS") {
        return PathBuf::from(p);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    if built.join(MODEL).is_dir() {
        built
    } else {
        PathBuf::from("assets")
    }
}

/// Every file the demo reads, checked up front: an error names the first one missing.
fn check_assets(dir: &Path) -> Result<(), String> {
    let files = [
        dir.join(MODEL).join("config.json"),
        dir.join(MODEL).join("model.safetensors"),
        dir.join(MODEL).join("tokenizer.json"),
        dir.join(BASE_TEXT),
        dir.join(NEW_TEXT),
    ];
    match files.iter().find(|f| !f.is_file()) {
        Some(f) => Err(format!(
            "the demo's assets are incomplete: {} is missing (assets folder {}; give another with --assets DIR or WEBTUNE_ASSETS)",
            f.display(),
            dir.display()
        )),
        None => Ok(()),
    }
}

/// One text's (train, held-out) records.
fn load_text(path: &Path, tok: &Tokenizer, vocab: usize, fraction: f32) -> Result<(Vec<Record>, Vec<Record>), String> {
    let records = read_dataset(path, vocab, &|t| tok.encode(t)).map_err(|e| e.to_string())?;
    split_eval(records, fraction, SPLIT_SEED).map_err(|e| format!("{}: {e}", path.display()))
}

struct Demo<'a> {
    gpu: &'a Gpu,
    tok: &'a Tokenizer,
    sample: SampleConfig,
}

impl Demo<'_> {
    fn samples(&self, generator: &mut Generator, model: &ModelGpu) -> Result<(), String> {
        for prompt in PROMPTS {
            let ids = self.tok.encode(prompt);
            let new = pollster::block_on(generator.generate(self.gpu, model, &ids, &self.sample))
                .map_err(|e| e.to_string())?;
            let eos = model.config().eos_token_id;
            let text = self
                .tok
                .decode(&new.iter().copied().filter(|&t| t != eos).collect::<Vec<_>>());
            let end = if new.last() == Some(&eos) {
                " <end of text>"
            } else {
                " ..."
            };
            let one_line = format!("{prompt}\u{2588}{text}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            println!("  > {one_line}{end}");
        }
        Ok(())
    }
}

/// `webtune demo`.
pub fn run(adapter_filter: Option<&str>, a: DemoArgs) -> Result<(), String> {
    if a.steps == 0 {
        return Err("--steps must be at least 1".into());
    }
    if !(a.seconds.is_finite() && a.seconds > 0.0) {
        return Err(format!("--seconds {} is invalid: it must be > 0", a.seconds));
    }
    if !(a.lr.is_finite() && a.lr > 0.0) {
        return Err(format!("--lr {} is invalid: it must be > 0", a.lr));
    }
    if a.eval_windows == 0 {
        return Err("--eval-windows must be at least 1".into());
    }
    let dir = assets_dir(a.assets.as_deref());
    check_assets(&dir)?;
    // --out holds the demo's adapter: new, empty, or an earlier demo's adapter (replaced)
    let mut inputs = Inputs::default();
    inputs.add("--assets folder", &dir);
    paths::check_out_dir("--out", &a.out, &inputs, &ADAPTER)?;
    let earlier_demo = std::fs::read_dir(&a.out).is_ok_and(|entries| {
        entries.flatten().all(|e| ADAPTER.contains(&e.file_name().to_string_lossy().as_ref()))
    });
    let rules = OutRules { flag: "--out", results: &ADAPTER, own: earlier_demo, overwrite: a.overwrite };
    let doomed = paths::plan_out(&a.out, &rules, &inputs)?;
    let model_dir = dir.join(MODEL);
    let weights = Weights::load_dir(&model_dir).map_err(|e| e.to_string())?;
    let cfg = weights.config.clone();
    let tok = Tokenizer::load_dir(&model_dir).map_err(|e| e.to_string())?;
    let eos = eos_id(&tok, &model_dir)?;
    if tok.vocab_size() != cfg.vocab_size || eos != cfg.eos_token_id {
        return Err(format!(
            "{}: the tokenizer (vocab {}, {} = {eos}) does not belong to the model (vocab_size {}, eos_token_id {})",
            model_dir.display(),
            tok.vocab_size(),
            super::pretrain::EOS,
            cfg.vocab_size,
            cfg.eos_token_id
        ));
    }
    if SEQ > cfg.n_positions {
        return Err(format!(
            "{}: the demo needs n_positions >= {SEQ}, the model has {}",
            model_dir.display(),
            cfg.n_positions
        ));
    }
    let (_, base_held) = load_text(&dir.join(BASE_TEXT), &tok, cfg.vocab_size, BASE_EVAL_FRACTION)?;
    let (new_train, new_held) = load_text(&dir.join(NEW_TEXT), &tok, cfg.vocab_size, NEW_EVAL_FRACTION)?;
    let new_train_records = new_train.len();
    let eval_sets: [(&str, Vec<Batch>); 2] = [
        (
            "Moby Dick (held-out chapters)",
            eval_batches(&base_held, eos, 8, SEQ, a.eval_windows)?,
        ),
        (
            "State of the Union (held-out addresses)",
            eval_batches(&new_held, eos, 8, SEQ, a.eval_windows)?,
        ),
    ];
    let spec = RunSpec {
        lora_rank: 8,
        lora_alpha: 16.0,
        lora_targets: Some(["c_attn", "c_proj", "c_fc"].map(String::from).to_vec()),
        steps: a.steps,
        batch: BATCH,
        seq: SEQ,
        lr: a.lr,
        schedule: Schedule::Cosine,
        warmup: WARMUP.min(a.steps / 2),
        min_lr: a.lr / 10.0,
        seed: a.seed,
        ..RunSpec::default()
    };
    // the addresses' training records (the held-out ones, split with a fixed seed, removed)
    let new_path = dir.join(NEW_TEXT).display().to_string();
    let train = Dataset {
        name: new_path.clone(),
        path: new_path,
        bytes: 0,
        fnv1a64: String::new(),
        format: Format::Text,
        records: new_train,
        tokenizer: None,
        first_chat: None,
    };
    let data = RunData::new(&train, None, &spec, eos, Style::Cli).map_err(|e| e.to_string())?;

    let gpu = Gpu::new_blocking(adapter_filter).map_err(|e| e.to_string())?;
    let n_params: usize = weights.tensors.values().map(|t| t.data.len()).sum();
    println!("webtune demo on {}", gpu.report.name);
    println!(
        "model: {} ({} layers, {} wide, {} heads, vocab {}, {:.2} M parameters), trained from scratch on Moby Dick",
        model_dir.display(),
        cfg.n_layer,
        cfg.n_embd,
        cfg.n_head,
        cfg.vocab_size,
        n_params as f64 / 1e6
    );
    // LoRA B starts at zero, so before training this model is exactly the base model.
    let input = RunInputs {
        weights: &weights,
        model: ModelInfo::of(&cfg, &model_dir.display().to_string(), &model_dir.display().to_string(), 0, None),
        init_adapter: None,
        data,
        spec,
        options: RunOptions::default(),
        readback_every: PROGRESS_EVERY,
        style: Style::Cli,
    };
    let mut run = Run::new(&gpu, input, None, false).map_err(|e| e.to_string())?;
    let lora_params: usize = run.trainer.model.trained().iter().map(|p| p.value.len()).sum();
    let mut generator = Generator::new(&gpu, &run.trainer.model, cfg.n_positions).map_err(|e| e.to_string())?;
    let demo = Demo {
        gpu: &gpu,
        tok: &tok,
        sample: SampleConfig {
            max_new_tokens: a.sample_tokens,
            temperature: 0.8,
            top_k: 40,
            top_p: 1.0,
            seed: a.seed,
            stop_at_eos: true,
        },
    };

    println!(
        "\nSamples before fine-tuning (temperature 0.8, top-k 40, seed {}; the prompt ends at \u{2588}):",
        a.seed
    );
    demo.samples(&mut generator, &run.trainer.model)?;
    let before = eval_all(&gpu, &run.trainer.model, &eval_sets)?;
    println!("\nHeld-out loss before fine-tuning:");
    for ((name, _), e) in eval_sets.iter().zip(&before) {
        println!(
            "  {name:<42} {:.3}  (perplexity {:.1}, {} tokens)",
            e.loss, e.perplexity, e.tokens
        );
    }

    let sched = run.schedule;
    println!(
        "\nFine-tuning a LoRA adapter (r 8, alpha 16 on c_attn, c_proj, c_fc: {lora_params} parameters) on {} State of the Union addresses,",
        new_train_records
    );
    println!(
        "  batch {BATCH} x {SEQ} tokens, AdamW lr {:.0e} (warmup {}, cosine to {:.0e}), at most {} steps or {} s:",
        a.lr, sched.warmup, sched.min_lr, a.steps, a.seconds
    );
    let start = Instant::now();
    // out of time: stop after this step (no checkpoint; the adapter is saved below)
    let control = || if start.elapsed().as_secs_f64() >= a.seconds { Control::Stop } else { Control::Run };
    let mut last_loss = f32::NAN;
    loop {
        let ev = pollster::block_on(run.step(&gpu, &control)).map_err(|e| e.to_string())?;
        if let Some(l) = ev.logs.last() {
            let secs = start.elapsed().as_secs_f64();
            let tok_s = (l.step as usize * BATCH * SEQ) as f64 / secs.max(1e-9);
            println!(
                "  step {:>4}/{}  loss {:.3}  lr {:.2e}  {:>5.0} tok/s  {:>4.0} s",
                l.step, a.steps, l.loss, l.lr, tok_s, secs
            );
            last_loss = l.loss;
        }
        if ev.stop {
            break;
        }
    }
    let done = run.steps_done();
    let secs = start.elapsed().as_secs_f64();
    if done < a.steps {
        println!(
            "  stopped after {done} steps: the {} s limit was reached ({secs:.0} s)",
            a.seconds
        );
    }
    gpu.check().map_err(|e| e.to_string())?;

    println!("\nSamples after fine-tuning (same prompts and seed):");
    demo.samples(&mut generator, &run.trainer.model)?;
    let after = eval_all(&gpu, &run.trainer.model, &eval_sets)?;
    println!("\nHeld-out loss (mean cross-entropy per token; lower is better):");
    println!("  {:<42} {:>8} {:>8} {:>8}", "", "before", "after", "change");
    for (((name, _), b), e) in eval_sets.iter().zip(&before).zip(&after) {
        println!("  {name:<42} {:>8.3} {:>8.3} {:>+8.3}", b.loss, e.loss, e.loss - b.loss);
    }
    println!("  (the addresses' loss falling is adaptation to the new text; Moby Dick's rising is forgetting)");
    println!("  fine-tuned {done} steps in {secs:.0} s; last training loss {last_loss:.3}");

    let files = pollster::block_on(run.output_files(&gpu)).map_err(|e| e.to_string())?;
    paths::clear(&doomed)?;
    std::fs::create_dir_all(&a.out).map_err(|e| format!("--out {}: {e}", a.out.display()))?;
    for (name, bytes) in &files {
        write_atomic(&a.out.join(name), bytes).map_err(|e| e.to_string())?;
    }
    println!(
        "\nSaved the LoRA adapter (PEFT format: adapter_config.json, adapter_model.safetensors) to {}",
        a.out.display()
    );
    Ok(())
}

fn eval_all(gpu: &Gpu, model: &ModelGpu, sets: &[(&str, Vec<Batch>)]) -> Result<Vec<EvalResult>, String> {
    sets.iter()
        .map(|(_, batches)| evaluate(gpu, model, batches, SEQ))
        .collect()
}
