//! `webtune info`: the GPU adapters this machine offers and the one webtune would use.

use webtune::gpu::Gpu;

pub fn run(adapter: Option<&str>) -> Result<(), String> {
    println!("GPU adapters:");
    for a in Gpu::list_adapters() {
        println!("  {a}");
    }
    let gpu = Gpu::new_blocking(adapter).map_err(|e| e.to_string())?;
    println!("chosen: {}", gpu.report);
    Ok(())
}
