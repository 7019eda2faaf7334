//! Reading a config file so that every problem is reported at once: unknown keys (with
//! the nearest valid name), values of the wrong type or an unknown choice, and values
//! out of range, each with its line. Only a TOML syntax error stops the reading early
//! (nothing after it can be trusted).
//!
//! How: each key the file sets is tried alone on top of the defaults, so one bad key
//! cannot hide another; the keys that pass together make the config that is then
//! range-checked by [`Config::validate`].

use std::path::Path;

use toml::{Table, Value};

use super::Config;
use crate::error::ConfigError;

/// One key the file sets: its section (empty at top level), name and value.
struct Setting {
    section: String,
    key: String,
    value: Value,
}

impl Setting {
    fn dotted(&self) -> String {
        if self.section.is_empty() {
            self.key.clone()
        } else {
            format!("{}.{}", self.section, self.key)
        }
    }
}

/// Reads, type-checks and validates `text` (the contents of `path`).
pub(super) fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let table: Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.into(),
            reason: e.to_string().trim_end().replace('\n', " "),
        })?;
    let defaults = Value::try_from(Config::default()).expect("the defaults serialise");
    let mut problems = Vec::new();
    let mut accepted = defaults.clone();
    let mut unknown_sections: Vec<String> = Vec::new();
    for s in settings(&table) {
        match try_setting(&defaults, &s) {
            Ok(()) => set(&mut accepted, &s),
            Err(Rejected::UnknownSection(reason)) => {
                if !unknown_sections.contains(&s.section) {
                    unknown_sections.push(s.section.clone());
                    let header = Setting {
                        section: String::new(),
                        key: s.section.clone(),
                        value: Value::Table(Table::new()),
                    };
                    problems.push(at_line(text, &header, &reason));
                }
            }
            Err(Rejected::Key(reason)) => problems.push(at_line(text, &s, &reason)),
        }
    }
    let cfg: Config = accepted
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.into(),
            reason: e.to_string(),
        })?;
    if let Err(ConfigError::Invalid(range)) = cfg.validate() {
        problems.extend(range.into_iter().map(|p| with_line_of_key(text, p)));
    }
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Every key the file sets; a whole section is one setting when it is not a table.
fn settings(table: &Table) -> Vec<Setting> {
    let mut out = Vec::new();
    for (section, v) in table {
        match v {
            Value::Table(t) => {
                // An empty section is still checked (an unknown section name).
                if t.is_empty() {
                    out.push(Setting {
                        section: String::new(),
                        key: section.clone(),
                        value: v.clone(),
                    });
                }
                for (key, value) in t {
                    out.push(Setting {
                        section: section.clone(),
                        key: key.clone(),
                        value: value.clone(),
                    });
                }
            }
            _ => out.push(Setting {
                section: String::new(),
                key: section.clone(),
                value: v.clone(),
            }),
        }
    }
    out
}

fn set(tree: &mut Value, s: &Setting) {
    let Value::Table(root) = tree else {
        return;
    };
    if s.section.is_empty() {
        root.insert(s.key.clone(), s.value.clone());
        return;
    }
    let section = root
        .entry(s.section.clone())
        .or_insert_with(|| Value::Table(Table::new()));
    if let Value::Table(t) = section {
        t.insert(s.key.clone(), s.value.clone());
    }
}

/// Why a setting was rejected.
enum Rejected {
    /// Its section does not exist (reported once per section).
    UnknownSection(String),
    /// The key is unknown, or its value has the wrong type or is not a valid choice.
    Key(String),
}

/// Whether this one setting, on top of the defaults, makes a config; why not.
fn try_setting(defaults: &Value, s: &Setting) -> Result<(), Rejected> {
    let mut candidate = defaults.clone();
    set(&mut candidate, s);
    match candidate.try_into::<Config>() {
        Ok(_) => Ok(()),
        Err(e) => Err(explain(e.message(), s)),
    }
}

/// A user-facing reason from serde's message: unknown keys get the nearest valid name.
fn explain(message: &str, s: &Setting) -> Rejected {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return Rejected::Key(format!("{} = {}: {message}", s.dotted(), s.value));
    };
    let mut words = rest.split('`');
    let field = words.next().unwrap_or("");
    let expected: Vec<&str> = words
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    let (what, hint) = if !s.section.is_empty() && field == s.section {
        (s.section.clone(), nearest(field, &expected))
    } else {
        (s.dotted(), nearest(field, &expected))
    };
    let reason = match hint {
        Some(n) => format!("unknown key `{what}`; did you mean `{n}`?"),
        None => format!("unknown key `{what}`; valid here: {}", expected.join(", ")),
    };
    if what == s.section {
        Rejected::UnknownSection(reason)
    } else {
        Rejected::Key(reason)
    }
}

/// The candidate closest to `name` by edit distance, if it is close enough to be a typo.
fn nearest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (distance(name, c), *c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min()
        .map(|(_, c)| c)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The line (1-based) where `section.key` is set in `text`, if found.
fn line_of(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            current = h.trim().to_string();
            if section.is_empty() && current == key {
                return Some(n + 1);
            }
            continue;
        }
        let name = t.split('=').next().unwrap_or("").trim().trim_matches('"');
        if current == section && name == key && t.contains('=') {
            return Some(n + 1);
        }
    }
    None
}

fn at_line(text: &str, s: &Setting, reason: &str) -> String {
    match line_of(text, &s.section, &s.key) {
        Some(n) => format!("line {n}: {reason}"),
        None => reason.to_string(),
    }
}

/// Prefixes a range problem ("section.key = ...") with the line of its key.
fn with_line_of_key(text: &str, problem: String) -> String {
    let dotted = problem.split([' ', '=']).next().unwrap_or("");
    let found = dotted
        .split_once('.')
        .and_then(|(section, key)| line_of(text, section, key));
    match found {
        Some(n) => format!("line {n}: {problem}"),
        None => problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_mistake_is_reported_in_one_pass() {
        let text = "\
[sinks]
ws_max_clients = 0
notice = false
[cascade]
deadline_ms = -5
lambda = 3.0
[segmant]
step_s = 1.0
";
        let ConfigError::Invalid(p) = parse(Path::new("x.toml"), text).unwrap_err() else {
            panic!("wrong error kind")
        };
        let all = p.join("\n");
        for expected in [
            "line 2: sinks.ws_max_clients = 0",
            "line 3: unknown key `sinks.notice`; did you mean `notices`?",
            "line 5: cascade.deadline_ms = -5: invalid value",
            "line 6: cascade.lambda = 3",
            "line 7: unknown key `segmant`; did you mean `segment`?",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
        assert_eq!(p.len(), 5, "one problem each, the section once: {all}");
    }

    #[test]
    fn a_good_file_reads_and_a_syntax_error_stops_with_its_place() {
        let cfg = parse(Path::new("ok.toml"), "[asr]\nlanguage = \"de\"\n").unwrap();
        assert_eq!(cfg.asr.language, "de");
        let e = parse(Path::new("bad.toml"), "[asr\nlanguage = 1\n").unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}
