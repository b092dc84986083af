//! QEMU launch profiles: the readable templates in `qemu/*.args` (format in
//! `qemu/README.md`).
//!
//! A profile is one QEMU argument per line, grouped in sections that the tool uses
//! when they apply:
//!
//! | section | used | its own placeholders |
//! |---|---|---|
//! | `[machine]` | always | — |
//! | `[model]` | always | — |
//! | `[gpus]` | once, when at least one `--gpu` is given | — |
//! | `[gpu]` | once per `--gpu` | `{GPU}` (the PCI address), `{N}` (1, 2, …) |
//! | `[broker-unix]` | `--broker unix:PATH` | `{PATH}` |
//! | `[broker-tcp]` | `--broker tcp:HOST:PORT` | `{HOST}`, `{PORT}` |
//! | `[broker-vsock]` | `--broker vsock:CID:PORT` | `{CID}`, `{PORT}` |
//!
//! Placeholders usable everywhere: `{KERNEL}`, `{INITRD}`, `{FIRMWARE}` (a profile
//! that uses it needs `--firmware`), `{ACCEL}`, `{DATA}`, `{HASH}`, `{DATA_SERIAL}`,
//! `{HASH_SERIAL}`, `{MODEL}` (`name@revision`), `{ROOT_HASH}`, and every name the
//! profile gives a default with `@default NAME VALUE` (changed with `--set NAME=VALUE`).
//! `@accel A [B]` lists the accelerators the profile accepts, the first being the
//! default. `{` not followed by `NAME}` (upper case, digits, `_`) is literal text, so
//! JSON `-object` arguments need no escaping. Lines are trimmed; blank lines and lines
//! starting with `#` are ignored.
//!
//! Values are checked where they are put: a placeholder that is a whole argument takes
//! any value without control characters; one inside a longer argument (a QEMU option
//! string such as `file=…,readonly=on` or a JSON object) refuses values with `,`, `"`
//! or `\`, which would change the option's meaning instead of quoting it.

use std::collections::BTreeMap;

use anyhow::{Context, bail};

/// Section names, in the order they are documented.
pub const SECTIONS: [&str; 7] = [
    "machine",
    "model",
    "gpus",
    "gpu",
    "broker-unix",
    "broker-tcp",
    "broker-vsock",
];

/// Placeholders every section may use.
pub const GLOBAL_NAMES: [&str; 10] = [
    "KERNEL",
    "INITRD",
    "FIRMWARE",
    "ACCEL",
    "DATA",
    "HASH",
    "DATA_SERIAL",
    "HASH_SERIAL",
    "MODEL",
    "ROOT_HASH",
];

/// The placeholders a section adds to the global ones.
pub fn section_names(section: &str) -> &'static [&'static str] {
    match section {
        "gpu" => &["GPU", "N"],
        "broker-unix" => &["PATH"],
        "broker-tcp" => &["HOST", "PORT"],
        "broker-vsock" => &["CID", "PORT"],
        _ => &[],
    }
}

/// A parsed profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Accepted accelerators, the default first.
    pub accels: Vec<String>,
    /// `@default` values, changeable with `--set`.
    pub defaults: BTreeMap<String, String>,
    /// Sections in file order: name and (line number, argument template).
    pub sections: Vec<(String, Vec<(usize, String)>)>,
}

impl Profile {
    /// Parses and checks a profile: known sections, each at most once, `[machine]`
    /// and `[model]` present, `@accel` given, every placeholder known where it is used.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut accels = Vec::new();
        let mut defaults = BTreeMap::new();
        let mut sections: Vec<(String, Vec<(usize, String)>)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix("@accel") {
                if !accels.is_empty() {
                    bail!("line {n}: a second @accel");
                }
                for a in rest.split_whitespace() {
                    if !matches!(a, "kvm" | "tcg") || accels.iter().any(|x| x == a) {
                        bail!("line {n}: @accel takes kvm and/or tcg, got {a:?}");
                    }
                    accels.push(a.to_owned());
                }
                if accels.is_empty() {
                    bail!("line {n}: @accel needs kvm and/or tcg");
                }
            } else if let Some(rest) = line.strip_prefix("@default ") {
                let rest = rest.trim_start();
                let (name, value) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                let value = value.trim();
                if !is_name(name) {
                    bail!("line {n}: @default needs an upper-case NAME, got {name:?}");
                }
                if GLOBAL_NAMES.contains(&name)
                    || SECTIONS.iter().any(|s| section_names(s).contains(&name))
                {
                    bail!("line {n}: {name} is set by pqcc launch, not by a default");
                }
                if value.is_empty() {
                    bail!("line {n}: @default {name} has no value");
                }
                if defaults.insert(name.to_owned(), value.to_owned()).is_some() {
                    bail!("line {n}: a second @default {name}");
                }
            } else if line.starts_with('@') {
                bail!("line {n}: unknown directive {line:?} (@accel, @default)");
            } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                if !SECTIONS.contains(&name) {
                    bail!(
                        "line {n}: unknown section [{name}] (known: {})",
                        SECTIONS.join(", ")
                    );
                }
                if sections.iter().any(|(s, _)| s == name) {
                    bail!("line {n}: a second [{name}]");
                }
                sections.push((name.to_owned(), Vec::new()));
            } else {
                let Some((section, lines)) = sections.last_mut() else {
                    bail!("line {n}: an argument before the first [section]");
                };
                for p in placeholders(line) {
                    let known = GLOBAL_NAMES.contains(&p)
                        || section_names(section).contains(&p)
                        || defaults.contains_key(p);
                    if !known {
                        bail!("line {n}: unknown placeholder {{{p}}} in [{section}]");
                    }
                }
                lines.push((n, line.to_owned()));
            }
        }
        if accels.is_empty() {
            bail!("no @accel line");
        }
        for required in ["machine", "model"] {
            if !sections.iter().any(|(s, _)| s == required) {
                bail!("no [{required}] section");
            }
        }
        Ok(Self {
            accels,
            defaults,
            sections,
        })
    }

    /// The lines of a section, if the profile has it.
    pub fn section(&self, name: &str) -> Option<&[(usize, String)]> {
        self.sections
            .iter()
            .find(|(s, _)| s == name)
            .map(|(_, l)| l.as_slice())
    }

    /// Whether any line anywhere uses `{name}`.
    pub fn uses(&self, name: &str) -> bool {
        self.sections
            .iter()
            .flat_map(|(_, l)| l)
            .any(|(_, t)| placeholders(t).any(|p| p == name))
    }
}

fn is_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_uppercase() || c == b'_')
        && b.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
}

/// Finds `{NAME}` at the start of `s` (which begins with `{`): the name and the
/// length of the whole placeholder.
fn placeholder_at(s: &str) -> Option<(&str, usize)> {
    let end = s.find('}')?;
    let name = s.get(1..end)?;
    is_name(name).then_some((name, end + 1))
}

/// The placeholder names in a template line, in order.
pub fn placeholders(line: &str) -> impl Iterator<Item = &str> {
    let mut rest = line;
    std::iter::from_fn(move || {
        loop {
            let i = rest.find('{')?;
            let tail = &rest[i..];
            if let Some((name, len)) = placeholder_at(tail) {
                rest = &tail[len..];
                return Some(name);
            }
            rest = &tail[1..];
        }
    })
}

/// Fills a template line. `lookup` gives a placeholder's value (None: not available
/// here, an error naming it).
pub fn fill(line: &str, lookup: &dyn Fn(&str) -> anyhow::Result<String>) -> anyhow::Result<String> {
    let whole = placeholder_at(line).is_some_and(|(_, len)| len == line.len());
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        match placeholder_at(tail) {
            Some((name, len)) => {
                let v = lookup(name)?;
                check_value(name, &v, whole)?;
                out.push_str(&v);
                rest = &tail[len..];
            }
            None => {
                out.push('{');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Refuses values that would not survive as one argument line, or that would
/// change the meaning of the option string they are put into.
fn check_value(name: &str, v: &str, whole: bool) -> anyhow::Result<()> {
    if v.chars().any(char::is_control) {
        bail!("{{{name}}}: {v:?} contains a control character");
    }
    if !whole && let Some(c) = v.chars().find(|c| matches!(c, ',' | '"' | '\\')) {
        bail!(
            "{{{name}}}: {v:?} contains {c:?}, which QEMU would read as part of the option \
             string; rename the file or choose another value"
        );
    }
    Ok(())
}

/// Parses `NAME=VALUE` of `--set`.
pub fn parse_set(s: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .with_context(|| format!("--set {s:?}: expected NAME=VALUE"))?;
    if !is_name(k) {
        bail!("--set {s:?}: NAME must be upper case letters, digits and _");
    }
    Ok((k.to_owned(), v.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "@accel tcg kvm\n@default MEM 1G\n[machine]\n-m\n{MEM}\n\
                     -object\n{\"a\":\"{MEM}\"}\n[model]\nfile={DATA},ro\n";

    #[test]
    fn parses_and_fills() {
        let p = Profile::parse(P).unwrap();
        assert_eq!(p.accels, ["tcg", "kvm"]);
        assert_eq!(p.defaults["MEM"], "1G");
        assert!(p.uses("DATA") && !p.uses("FIRMWARE"));
        let names: Vec<_> = placeholders("{\"a\":\"{MEM}\"}").collect();
        assert_eq!(names, ["MEM"]);
        let look = |n: &str| -> anyhow::Result<String> {
            Ok(match n {
                "MEM" => "2G".into(),
                "DATA" => "a,b".into(),
                _ => bail!("no {n}"),
            })
        };
        assert_eq!(fill("{\"a\":\"{MEM}\"}", &look).unwrap(), "{\"a\":\"2G\"}");
        assert_eq!(fill("{DATA}", &look).unwrap(), "a,b");
        let e = fill("file={DATA},ro", &look).unwrap_err().to_string();
        assert!(e.contains("contains ','"), "{e}");
        assert!(fill("{X}", &look).is_err());
        assert_eq!(fill("{lower} {", &look).unwrap(), "{lower} {");
    }

    #[test]
    fn refuses_bad_profiles() {
        for (bad, want) in [
            ("[machine]\n[model]\n", "no @accel"),
            ("@accel tcg\n[machine]\n", "no [model]"),
            ("@accel tcg\n-m\n", "before the first"),
            (
                "@accel tcg\n[machine]\n{NOPE}\n[model]\n",
                "unknown placeholder {NOPE}",
            ),
            (
                "@accel tcg\n[machine]\n{GPU}\n[model]\n",
                "unknown placeholder {GPU}",
            ),
            ("@accel tcg\n[machine]\n[machine]\n", "second [machine]"),
            ("@accel tcg\n[disks]\n", "unknown section"),
            ("@accel xen\n", "kvm and/or tcg"),
            ("@accel tcg\n@default KERNEL x\n", "set by pqcc launch"),
            ("@accel tcg\n@what\n", "unknown directive"),
        ] {
            let e = Profile::parse(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
    }

    #[test]
    fn set_syntax() {
        assert_eq!(
            parse_set("APPEND=a=b c").unwrap(),
            ("APPEND".into(), "a=b c".into())
        );
        assert!(parse_set("lower=1").is_err());
        assert!(parse_set("NOEQ").is_err());
    }
}
