//! How a setting is spelled in a message: the command line's `--weight-decay` or the JS API's
//! `weightDecay`. The library names settings in kebab case (as the CLI flags, without the
//! dashes) and messages go through [`Style::name`], so the CLI and the browser show the same
//! checks in their own words.

/// The caller whose names messages use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// `webtune` flags: `--lora-rank`.
    Cli,
    /// The npm package's option names: `rank`.
    Js,
}

/// Settings whose JS name is not the camelCase of the flag.
const JS_NAMES: [(&str, &str); 7] = [
    ("lora-rank", "rank"),
    ("lora-alpha", "alpha"),
    ("lora-targets", "targets"),
    ("full", "mode"),
    ("save-every", "checkpointEvery"),
    ("stop-after", "pauseAfter"),
    ("data", "dataset"),
];

impl Style {
    /// How this caller spells setting `key` (kebab case, e.g. `weight-decay`).
    pub fn name(self, key: &str) -> String {
        match self {
            Style::Cli => format!("--{key}"),
            Style::Js => match JS_NAMES.iter().find(|(k, _)| *k == key) {
                Some((_, js)) => js.to_string(),
                None => camel(key),
            },
        }
    }
}

/// `weight-decay` -> `weightDecay`.
fn camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Style;

    #[test]
    fn names_in_each_style() {
        assert_eq!(Style::Cli.name("weight-decay"), "--weight-decay");
        assert_eq!(Style::Js.name("weight-decay"), "weightDecay");
        assert_eq!(Style::Js.name("max-new-tokens"), "maxNewTokens");
        assert_eq!(Style::Js.name("lora-rank"), "rank");
        assert_eq!(Style::Js.name("save-every"), "checkpointEvery");
        assert_eq!(Style::Js.name("lr"), "lr");
    }
}
