//! Chat templates: a conversation (`[{"role", "content"}, ...]`) rendered to text by the Jinja
//! template of the model's tokenizer_config.json (`chat_template`) or chat_template.jinja, as
//! `transformers`' `apply_chat_template` renders it (jinja2 with `trim_blocks` and
//! `lstrip_blocks`, Python string methods, `raise_exception`, `strftime_now`, HF's `tojson`, the
//! tokenizer's special tokens as variables), and the spans of the rendered text a run trains on.
//!
//! Trained spans: a template with `{% generation %}` ... `{% endgeneration %}` blocks (the
//! markers `transformers`' `return_assistant_tokens_mask` reads) trains on what those blocks
//! render. A template without them (the real Llama 3 and Qwen3 ones) trains on each assistant
//! turn as rendering finds it: the turn starts where the conversation up to it, rendered with
//! `add_generation_prompt`, ends, and runs to the end of the first end-of-turn token after that
//! (see [`ChatTemplate::trained_spans`]).

use std::collections::BTreeMap;
use std::ops::Range;

use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::Value as Json;

use super::DataError;

/// Marks the start / end of a `{% generation %}` block in rendered text: private-use characters
/// that message content may not hold (such content is refused).
const GEN_START: char = '\u{F8F0}';
const GEN_END: char = '\u{F8F1}';

/// A compiled chat template and the variables it is rendered with.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Where the template comes from (a file, or tokenizer_config.json's field), for messages.
    pub name: String,
    /// The template has `{% generation %}` blocks.
    pub has_generation: bool,
    /// `bos_token`, `eos_token`, ... as tokenizer_config.json names them.
    vars: BTreeMap<String, Json>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("name", &self.name).field("has_generation", &self.has_generation).finish()
    }
}

impl Clone for ChatTemplate {
    fn clone(&self) -> Self {
        // the source is kept in the environment; recompiling it cannot fail the second time
        let src = self.env.get_template("chat").map(|t| t.source().to_string()).unwrap_or_default();
        let mut env = environment();
        let _ = env.add_template_owned("chat", src);
        ChatTemplate { env, name: self.name.clone(), has_generation: self.has_generation, vars: self.vars.clone() }
    }
}

/// The special-token variables tokenizer_config.json gives a template (a token is a string or
/// an AddedToken object `{"content": ...}`; `additional_special_tokens` a list of them).
pub fn special_vars(config: &Json) -> BTreeMap<String, Json> {
    let mut vars = BTreeMap::new();
    let as_str = |v: &Json| match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    };
    for key in ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"] {
        if let Some(s) = config.get(key).and_then(as_str) {
            vars.insert(key.to_string(), Json::String(s));
        }
    }
    if let Some(list) = config.get("additional_special_tokens").and_then(Json::as_array) {
        let list: Vec<Json> = list.iter().filter_map(as_str).map(Json::String).collect();
        vars.insert("additional_special_tokens".into(), Json::Array(list));
    }
    vars
}

/// The template source of tokenizer_config.json's `chat_template`: a string, or a list of
/// `{"name", "template"}` of which "default" is taken. None when there is none.
pub fn template_of_config(config: &Json, name: &str) -> Result<Option<String>, DataError> {
    match config.get("chat_template") {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(Json::Array(list)) => {
            let found = list.iter().find(|t| t.get("name").and_then(Json::as_str) == Some("default"));
            match found.and_then(|t| t.get("template")).and_then(Json::as_str) {
                Some(s) => Ok(Some(s.to_string())),
                None => Err(DataError::Invalid(format!(
                    "{name}: chat_template is a list of named templates without a \"default\" one"
                ))),
            }
        }
        Some(v) => Err(DataError::Invalid(format!(
            "{name}: chat_template must be a string or a list of named templates, found {}",
            crate::data::records::json_kind(v)
        ))),
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    minijinja_contrib::add_to_environment(&mut env);
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |fmt: String| -> Result<Value, Error> { Ok(Value::from(strftime_now(&fmt))) });
    env.add_filter("tojson", tojson);
    env
}

/// HF's `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent, sort_keys=sort_keys)`.
fn tojson(v: Value, kwargs: minijinja::value::Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let j = serde_json::to_value(&v).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    py_json(&j, indent, sort_keys.unwrap_or(false), 0, &mut out);
    Ok(Value::from_safe_string(out))
}

/// Python's `json.dumps` layout: ", " and ": " without indent; newlines and `indent` spaces with.
fn py_json(v: &Json, indent: Option<usize>, sort: bool, depth: usize, out: &mut String) {
    let nl = |out: &mut String, d: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * d));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match v {
        Json::Array(a) if !a.is_empty() => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                nl(out, depth + 1);
                py_json(x, indent, sort, depth + 1, out);
            }
            nl(out, depth);
            out.push(']');
        }
        Json::Object(o) if !o.is_empty() => {
            out.push('{');
            let mut keys: Vec<&String> = o.keys().collect();
            if sort {
                keys.sort();
            }
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                nl(out, depth + 1);
                out.push_str(&Json::String(k.clone()).to_string());
                out.push_str(": ");
                py_json(&o[k], indent, sort, depth + 1, out);
            }
            nl(out, depth);
            out.push('}');
        }
        Json::Array(_) => out.push_str("[]"),
        Json::Object(_) => out.push_str("{}"),
        other => out.push_str(&other.to_string()),
    }
}

/// Now (UTC) formatted with the strftime codes templates use (%Y %y %m %d %e %H %I %M %S %p %b
/// %B %a %A %j %%); others are kept as written.
fn strftime_now(fmt: &str) -> String {
    #[cfg(target_arch = "wasm32")]
    let secs = (js_sys::Date::now() / 1000.0) as i64;
    #[cfg(not(target_arch = "wasm32"))]
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    strftime(fmt, secs)
}

fn strftime(fmt: &str, secs: i64) -> String {
    const MONTHS: [&str; 12] =
        ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    let days = secs.div_euclid(86400);
    let tod = secs.rem_euclid(86400);
    // civil date from days since 1970-01-01 (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cum[(m - 1) as usize] + d + i64::from(leap && m > 2);
    let wday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let (h, min, s) = (tod / 3600, tod / 60 % 60, tod % 60);
    let mut out = String::new();
    let mut it = fmt.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y % 100)),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:2}")),
            Some('H') => out.push_str(&format!("{h:02}")),
            Some('I') => out.push_str(&format!("{:02}", if h % 12 == 0 { 12 } else { h % 12 })),
            Some('M') => out.push_str(&format!("{min:02}")),
            Some('S') => out.push_str(&format!("{s:02}")),
            Some('p') => out.push_str(if h < 12 { "AM" } else { "PM" }),
            Some('b') => out.push_str(&MONTHS[(m - 1) as usize][..3]),
            Some('B') => out.push_str(MONTHS[(m - 1) as usize]),
            Some('a') => out.push_str(&DAYS[wday][..3]),
            Some('A') => out.push_str(DAYS[wday]),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Rewrites `{% generation %}` / `{% endgeneration %}` (whitespace control kept) into blocks
/// that print the sentinel marks. Returns the source and whether there was any.
fn rewrite_generation(src: &str) -> (String, bool) {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    let mut any = false;
    while let Some(i) = rest.find("{%") {
        out.push_str(&rest[..i]);
        let tag = &rest[i..];
        let Some(close) = tag.find("%}") else {
            out.push_str(tag);
            rest = "";
            break;
        };
        let inner = &tag[2..close];
        let (lws, body) = match inner.strip_prefix(['-', '+']) {
            Some(b) => (&inner[..1], b),
            None => ("", inner),
        };
        let (body, rws) = match body.strip_suffix(['-', '+']) {
            Some(b) => (b, &body[body.len() - 1..]),
            None => (body, ""),
        };
        let mark = match body.trim() {
            "generation" => Some(GEN_START),
            "endgeneration" => Some(GEN_END),
            _ => None,
        };
        match mark {
            Some(c) => {
                any = true;
                out.push_str(&format!("{{%{lws} if true %}}{{{{ '{c}' }}}}{{% endif {rws}%}}"));
            }
            None => out.push_str(&tag[..close + 2]),
        }
        rest = &tag[close + 2..];
    }
    out.push_str(rest);
    (out, any)
}

/// Checks a conversation: a list of objects with a string "role" and a string "content" (other
/// fields are kept for the template). `what` names it in messages.
pub fn check_messages(v: &Json, what: &str) -> Result<Vec<Json>, String> {
    let list = v.as_array().ok_or_else(|| format!("{what} must be a list of messages"))?;
    for (i, m) in list.iter().enumerate() {
        let obj = m.as_object().ok_or_else(|| format!("{what}[{i}] must be an object {{\"role\", \"content\"}}"))?;
        match obj.get("role") {
            Some(Json::String(_)) => {}
            _ => return Err(format!("{what}[{i}] needs a string \"role\"")),
        }
        match obj.get("content") {
            Some(Json::String(c)) if c.contains([GEN_START, GEN_END]) => {
                return Err(format!(
                    "{what}[{i}].content holds U+F8F0 or U+F8F1, private characters webtune uses to mark trained text"
                ))
            }
            Some(Json::String(_)) => {}
            _ => return Err(format!("{what}[{i}] needs a string \"content\"")),
        }
    }
    Ok(list.clone())
}

impl ChatTemplate {
    /// Compiles a template's source; `name` (its file, or "FILE: chat_template") names it in
    /// every error. `vars` are the special-token variables ([`special_vars`]).
    pub fn new(source: &str, name: &str, vars: BTreeMap<String, Json>) -> Result<ChatTemplate, DataError> {
        if source.contains([GEN_START, GEN_END]) {
            return Err(DataError::Invalid(format!("{name}: the chat template holds U+F8F0 or U+F8F1, which webtune reserves")));
        }
        let (src, has_generation) = rewrite_generation(source);
        let mut env = environment();
        env.add_template_owned("chat", src)
            .map_err(|e| DataError::Invalid(format!("{name}: the chat template does not compile: {e}")))?;
        Ok(ChatTemplate { env, name: name.to_string(), has_generation, vars })
    }

    /// The template's raw output for `messages` (generation marks included).
    fn render_raw(&self, messages: &[Json], add_generation_prompt: bool) -> Result<String, DataError> {
        let t = self.env.get_template("chat").map_err(|e| DataError::Invalid(format!("{}: {e}", self.name)))?;
        let mut ctx: BTreeMap<String, Value> = self.vars.iter().map(|(k, v)| (k.clone(), Value::from_serialize(v))).collect();
        ctx.insert("messages".into(), Value::from_serialize(messages));
        ctx.insert("add_generation_prompt".into(), Value::from(add_generation_prompt));
        ctx.insert("tools".into(), Value::from(()));
        ctx.insert("documents".into(), Value::from(()));
        t.render(ctx).map_err(|e| DataError::Invalid(format!("{}: rendering the chat template: {e}", self.name)))
    }

    /// The text of a conversation, as `apply_chat_template(messages, tokenize=False,
    /// add_generation_prompt=...)` gives it.
    pub fn render(&self, messages: &[Json], add_generation_prompt: bool) -> Result<String, DataError> {
        Ok(self.render_raw(messages, add_generation_prompt)?.replace([GEN_START, GEN_END], ""))
    }

    /// The rendered conversation and the byte spans of it that are trained on: with generation
    /// blocks, what they render (as transformers' assistant mask); without, each assistant
    /// message's turn (see the module doc), `end_of_turn` being the token string a turn ends
    /// with. Only spans of messages at index >= `first_trained` (the completion of a
    /// prompt/completion record; 0 for a whole conversation) count.
    pub fn trained_spans(
        &self,
        messages: &[Json],
        first_trained: usize,
        end_of_turn: Option<&str>,
    ) -> Result<(String, Vec<Range<usize>>), DataError> {
        let prompt_end = if first_trained > 0 { Some(self.render(&messages[..first_trained], true)?.len()) } else { None };
        let mut spans = Vec::new();
        let text;
        if self.has_generation {
            let raw = self.render_raw(messages, false)?;
            let mut clean = String::with_capacity(raw.len());
            let mut open: Option<usize> = None;
            for c in raw.chars() {
                match c {
                    GEN_START => {
                        open.get_or_insert(clean.len());
                    }
                    GEN_END => {
                        if let Some(s) = open.take() {
                            spans.push(s..clean.len());
                        }
                    }
                    c => clean.push(c),
                }
            }
            if let Some(s) = open {
                spans.push(s..clean.len());
            }
            text = clean;
        } else {
            text = self.render(messages, false)?;
            for (i, m) in messages.iter().enumerate().skip(first_trained) {
                if m.get("role").and_then(Json::as_str) != Some("assistant") {
                    continue;
                }
                let before = self.render(&messages[..i], true)?;
                if !text.starts_with(&before) {
                    return Err(DataError::Invalid(format!(
                        "{}: the conversation up to message {i}, rendered with add_generation_prompt, is not the start of the \
                         whole conversation's text, so the assistant turn cannot be found; add {{% generation %}} markers \
                         to the template (--chat-template)",
                        self.name
                    )));
                }
                let start = before.len();
                let next = self.render(&messages[..=i], false)?;
                // where the whole text and the conversation up to this turn part
                let common = text.bytes().zip(next.bytes()).take_while(|(a, b)| a == b).count();
                let mut end = common.max(start);
                if let Some(eot) = end_of_turn.filter(|e| !e.is_empty()) {
                    if let Some(k) = text[start..].find(eot) {
                        end = start + k + eot.len();
                    }
                }
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                if end > start {
                    spans.push(start..end);
                }
            }
        }
        if let Some(p) = prompt_end {
            spans.retain_mut(|s| {
                s.start = s.start.max(p);
                s.end > s.start
            });
        }
        Ok((text, spans))
    }

    /// What the template renders right after an assistant message's content (the first part
    /// of the text that follows the content), for finding the end-of-turn token.
    pub fn after_assistant(&self) -> Option<String> {
        let probe = "\u{F8F2}";
        let msgs = serde_json::json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": probe},
        ]);
        let list = msgs.as_array()?;
        let text = self.render(list, false).ok()?;
        let at = text.rfind(probe)?;
        Some(text[at + probe.len()..].to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_strftime_matches_known_dates() {
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S %a %b %j", 0), "1970-01-01 00:00:00 Thu Jan 001");
        // 2024-02-29 13:05:09 UTC = 1709211909
        assert_eq!(strftime("%d %B %Y, %A %I%p %%", 1_709_211_909), "29 February 2024, Thursday 01PM %");
    }

    #[test]
    fn chat_tojson_is_pythons() {
        let env = environment();
        let out = env
            .render_str("{{ x | tojson }}|{{ x | tojson(indent=2) }}", minijinja::context! { x => serde_json::json!({"a": [1, "é"], "b": {}}) })
            .unwrap();
        assert_eq!(out, "{\"a\": [1, \"é\"], \"b\": {}}|{\n  \"a\": [\n    1,\n    \"é\"\n  ],\n  \"b\": {}\n}");
    }

    #[test]
    fn chat_generation_tags_are_rewritten_with_whitespace_control() {
        let (s, any) = rewrite_generation("a {%- generation -%} b {% endgeneration %}{% if x %}{% endif %}");
        assert!(any);
        assert_eq!(s, "a {%- if true %}{{ '\u{F8F0}' }}{% endif -%} b {% if true %}{{ '\u{F8F1}' }}{% endif %}{% if x %}{% endif %}");
    }

    #[test]
    fn chat_spans_with_and_without_markers() {
        let plain = "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}</s>\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";
        let marked = "{% for m in messages %}<{{ m.role }}>{% if m.role == 'assistant' %}{% generation %}{{ m.content }}</s>{% endgeneration %}{% else %}{{ m.content }}</s>{% endif %}\n{% endfor %}";
        let msgs = serde_json::json!([
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": " yo "},
            {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]);
        let msgs = msgs.as_array().unwrap();
        let t = ChatTemplate::new(plain, "plain", BTreeMap::new()).unwrap();
        assert!(!t.has_generation);
        let (text, spans) = t.trained_spans(msgs, 0, Some("</s>")).unwrap();
        assert_eq!(text, "<user>hi</s>\n<assistant>yo</s>\n<user>q</s>\n<assistant>a</s>\n");
        let got: Vec<&str> = spans.iter().map(|s| &text[s.clone()]).collect();
        assert_eq!(got, ["yo</s>", "a</s>"]);
        let (_, spans) = t.trained_spans(msgs, 2, Some("</s>")).unwrap();
        assert_eq!(spans.iter().map(|s| &text[s.clone()]).collect::<Vec<_>>(), ["a</s>"]);
        let m = ChatTemplate::new(marked, "marked", BTreeMap::new()).unwrap();
        assert!(m.has_generation);
        let (text, spans) = m.trained_spans(msgs, 0, None).unwrap();
        assert_eq!(spans.iter().map(|s| &text[s.clone()]).collect::<Vec<_>>(), [" yo </s>", "a</s>"]);
        // trim_blocks drops the newline after {% endif %}, as jinja2 does for transformers
        assert_eq!(m.after_assistant().as_deref(), Some("</s>"));
    }

    #[test]
    fn chat_template_errors_name_the_file() {
        let e = ChatTemplate::new("{% for %}", "x/tokenizer_config.json: chat_template", BTreeMap::new()).unwrap_err();
        assert!(e.to_string().starts_with("x/tokenizer_config.json: chat_template: the chat template does not compile"), "{e}");
        let t = ChatTemplate::new("{{ raise_exception('only user and assistant roles') }}", "t.jinja", BTreeMap::new()).unwrap();
        let e = t.render(&[], false).unwrap_err().to_string();
        assert!(e.starts_with("t.jinja: rendering the chat template") && e.contains("only user and assistant roles"), "{e}");
        let bad = serde_json::json!([{"role": "user", "content": "a\u{F8F0}"}]);
        assert!(check_messages(&bad, "messages").unwrap_err().contains("messages[0].content"));
        assert!(check_messages(&serde_json::json!([{"role": "user"}]), "messages").unwrap_err().contains("\"content\""));
    }
}
