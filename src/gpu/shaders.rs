//! WGSL checks with naga: validation (every shader variant is validated in a unit
//! test) and reflection of which bindings an entry point uses.

/// Parses and validates WGSL; the error names the shader and the problem.
pub fn validate(name: &str, source: &str) -> Result<naga::valid::ModuleInfo, String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| format!("{name}: {}", e.emit_to_string(source)))?;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .map_err(|e| format!("{name}: {}", e.emit_to_string(source)))
}

/// The group-0 binding numbers that `entry` reads or writes. Empty if the source
/// does not parse (pipeline creation then reports the error through wgpu).
pub fn used_bindings(source: &str, entry: &str) -> Vec<u32> {
    let Ok(module) = naga::front::wgsl::parse_str(source) else { return Vec::new() };
    let Ok(info) =
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all()).validate(&module)
    else {
        return Vec::new();
    };
    let Some(index) = module.entry_points.iter().position(|e| e.name == entry) else { return Vec::new() };
    let ep = info.get_entry_point(index);
    let mut used: Vec<u32> = module
        .global_variables
        .iter()
        .filter_map(|(h, var)| {
            let b = var.binding.as_ref()?;
            (b.group == 0 && !ep[h].is_empty()).then_some(b.binding)
        })
        .collect();
    used.sort_unstable();
    used
}
