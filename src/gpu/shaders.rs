//! WGSL checks with naga: validation (every shader variant is validated in a unit
//! test) and reflection of which bindings an entry point uses.

/// Parses and validates WGSL; the error names the shader and the problem.
pub fn validate(name: &str, source: &str) -> Result<naga::valid::ModuleInfo, String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| format!("{name}: {}", e.emit_to_string(source)))?;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .map_err(|e| format!("{name}: {}", e.emit_to_string(source)))
}

/// Parses and validates WGSL for reflection; None if naga rejects it.
pub fn parse(source: &str) -> Option<(naga::Module, naga::valid::ModuleInfo)> {
    let module = naga::front::wgsl::parse_str(source).ok()?;
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .ok()?;
    Some((module, info))
}

/// The group-0 binding numbers that `entry` of a parsed module reads or writes (empty if
/// there is no such entry point).
pub fn used_bindings((module, info): &(naga::Module, naga::valid::ModuleInfo), entry: &str) -> Vec<u32> {
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

/// The group-0 storage bindings of a parsed module that are declared writable (read_write).
pub fn writable_bindings((module, _): &(naga::Module, naga::valid::ModuleInfo)) -> Vec<u32> {
    let mut w: Vec<u32> = module
        .global_variables
        .iter()
        .filter_map(|(_, var)| match (var.binding.as_ref(), var.space) {
            (Some(b), naga::AddressSpace::Storage { access }) if b.group == 0 && access.contains(naga::StorageAccess::STORE) => {
                Some(b.binding)
            }
            _ => None,
        })
        .collect();
    w.sort_unstable();
    w
}

/// Columns per workgroup of the column-lane sums (`COLS` in shaders/lib/reduce.wgsl).
pub const COLS: usize = 64;

/// The workgroup reductions the kernels share (`wg_sum`, `wg_max`, `wg_sum2`,
/// `wg_logsumexp`, and the column-lane sums `lanes_sum` / `lanes_sum2`), for [`Template::lib`].
pub fn reduce_lib() -> String {
    Template::new("lib/reduce", include_str!("../../shaders/lib/reduce.wgsl")).set("COLS", COLS).render()
}

/// A shader made from a WGSL template: `{{NAME}}` placeholders filled from Rust (tile sizes,
/// layouts: the Rust side owns the value, the shader never restates it), and library snippets
/// such as [`reduce_lib`] put in front. Filling a placeholder the template lacks, or leaving one
/// unfilled, is a bug in webtune and panics; every variant is rendered by the naga test, so
/// such a bug fails the test suite rather than a user's run.
#[derive(Clone, Debug)]
pub struct Template {
    name: String,
    text: String,
}

impl Template {
    pub fn new(name: &str, source: &str) -> Template {
        Template { name: name.to_string(), text: source.to_string() }
    }

    /// Puts a library snippet (e.g. [`reduce_lib`]) in front of the shader.
    pub fn lib(mut self, snippet: &str) -> Template {
        self.text = format!("{snippet}\n{}", self.text);
        self
    }

    /// Replaces every `{{key}}` with `value`.
    pub fn set(mut self, key: &str, value: impl std::fmt::Display) -> Template {
        let hole = format!("{{{{{key}}}}}");
        assert!(self.text.contains(&hole), "shader template {}: no placeholder {hole}", self.name);
        self.text = self.text.replace(&hole, &value.to_string());
        self
    }

    /// The WGSL source.
    pub fn render(self) -> String {
        if let Some(at) = self.text.find("{{") {
            let hole: String = self.text[at..].chars().take_while(|&c| c != '\n').take(40).collect();
            panic!("shader template {}: placeholder {hole} left unfilled", self.name);
        }
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::Template;

    #[test]
    fn template_fills_placeholders() {
        let s = Template::new("t", "const A: u32 = {{A}}u; const B = {{A}} + {{B}};").set("A", 4).set("B", "1.0").render();
        assert_eq!(s, "const A: u32 = 4u; const B = 4 + 1.0;");
    }

    #[test]
    #[should_panic(expected = "no placeholder {{C}}")]
    fn template_refuses_a_missing_placeholder() {
        let _ = Template::new("t", "const A = {{A}};").set("C", 1);
    }

    #[test]
    #[should_panic(expected = "placeholder {{A}}")]
    fn template_refuses_an_unfilled_placeholder() {
        let _ = Template::new("t", "const A = {{A}};").render();
    }
}
