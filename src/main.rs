//! The native CLI: argument definitions and dispatch. Each subcommand lives in
//! src/cli/<name>.rs with its own arguments; errors come back as one line.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "webtune", version, about = "Fine-tune GPT-2, Llama, Qwen2 and Qwen3 models on this device (wgpu: Vulkan, Metal, DX12)")]
struct Cli {
    /// Use the first GPU adapter whose name contains this (also WEBTUNE_ADAPTER)
    #[arg(long = "gpu", value_name = "NAME", global = true)]
    adapter: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a LoRA adapter (default) or the whole model (--full)
    Train(cli::train::TrainArgs),
    /// Show the GPU adapters, the chosen one's backend, limits and features (and a model's shape with --model)
    Info(cli::info::InfoArgs),
    /// Measure matmul GFLOP/s and training-step time on this device
    Bench(cli::bench::BenchArgs),
    /// Continue a prompt with the model (and optionally a LoRA adapter)
    Generate(cli::generate::GenerateArgs),
    /// Loss and perplexity on a dataset, base model and with an adapter
    Eval(cli::eval::EvalArgs),
    /// Fold a LoRA adapter into the base weights: a full HF checkpoint
    Merge(cli::merge::MergeArgs),
    /// Write a PEFT LoRA adapter as a GGUF file for llama.cpp (llama-cli -m base.gguf --lora FILE.gguf)
    ExportGguf(cli::export_gguf::ExportGgufArgs),
    /// Train a small GPT-2 from scratch (random init, every weight) on a text with a given tokenizer
    Pretrain(cli::pretrain::PretrainArgs),
    /// The bundled demo: samples, held-out loss, a short LoRA fine-tune on a second text, and again
    Demo(cli::demo::DemoArgs),
}

fn main() -> ExitCode {
    cli::runtime_dir::ensure();
    let cli = Cli::parse();
    let adapter = cli.adapter.as_deref();
    let result = match cli.command {
        Command::Train(args) => cli::train::run(adapter, args),
        Command::Info(args) => cli::info::run(adapter, args),
        Command::Bench(args) => cli::bench::run(adapter, args),
        Command::Generate(args) => cli::generate::run(adapter, args),
        Command::Eval(args) => cli::eval::run(adapter, args),
        Command::Merge(args) => cli::merge::run(args),
        Command::ExportGguf(args) => cli::export_gguf::run(args),
        Command::Pretrain(args) => cli::pretrain::run(adapter, args),
        Command::Demo(args) => cli::demo::run(adapter, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
