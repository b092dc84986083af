//! A strict, small XML 1.0 + Namespaces parser and inclusive canonicalization
//! (Canonical XML 1.0 and 1.1 without comments) for exactly the subset NVIDIA's
//! signed SWID RIMs use.
//!
//! Accepted: an optional `<?xml version="1.0" encoding="UTF-8"?>` declaration,
//! one root element, elements with attributes and namespace declarations, character
//! data, the five predefined entities and character references. Refused, with an
//! error, rather than guessed at: DOCTYPE (and so any other entity), comments,
//! processing instructions, CDATA sections, `xml:*` attributes (whose inheritance
//! rules differ between C14N 1.0 and 1.1), non-ASCII names, undeclared prefixes,
//! duplicate attributes, documents over [`MAX_DOC_LEN`] bytes or [`MAX_DEPTH`] deep.

use std::collections::BTreeMap;

/// Largest document accepted.
pub const MAX_DOC_LEN: usize = 4 << 20;
/// Deepest element nesting accepted.
pub const MAX_DEPTH: usize = 32;
const MAX_ATTRS: usize = 64;

/// An attribute (not a namespace declaration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Prefix as written.
    pub prefix: Option<String>,
    /// Local name.
    pub local: String,
    /// Namespace URI (unprefixed attributes have none).
    pub ns: Option<String>,
    /// Normalized value.
    pub value: String,
}

/// An element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Prefix as written.
    pub prefix: Option<String>,
    /// Local name.
    pub local: String,
    /// Namespace URI.
    pub ns: Option<String>,
    /// Namespace declarations on this element: prefix (`None` = default) and URI.
    pub ns_decls: Vec<(Option<String>, String)>,
    /// Attributes other than namespace declarations.
    pub attrs: Vec<Attr>,
    /// Children in document order.
    pub children: Vec<Node>,
}

/// A child node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// An element.
    Element(Element),
    /// Character data (entities already expanded).
    Text(String),
}

/// In-scope namespaces: prefix (`""` = default) → URI.
pub type Scope = BTreeMap<String, String>;

impl Element {
    /// The qualified name as written.
    pub fn qname(&self) -> String {
        match &self.prefix {
            Some(p) => format!("{p}:{}", self.local),
            None => self.local.clone(),
        }
    }

    /// Whether this element is `{ns}local`.
    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.ns.as_deref() == Some(ns) && self.local == local
    }

    /// Child elements.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The value of the unqualified attribute `local`.
    pub fn attr(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.is_none() && a.local == local)
            .map(|a| a.value.as_str())
    }

    /// The value of the attribute `{ns}local`.
    pub fn attr_ns(&self, ns: &str, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.as_deref() == Some(ns) && a.local == local)
            .map(|a| a.value.as_str())
    }

    /// Concatenated text children; error if there are element children.
    pub fn text(&self) -> Result<String, String> {
        let mut s = String::new();
        for n in &self.children {
            match n {
                Node::Text(t) => s.push_str(t),
                Node::Element(e) => {
                    return Err(format!("{} may not contain <{}>", self.qname(), e.qname()));
                }
            }
        }
        Ok(s)
    }

    /// Scope inside this element given the scope of its parent.
    pub fn scope_inside(&self, parent: &Scope) -> Scope {
        let mut s = parent.clone();
        for (p, uri) in &self.ns_decls {
            let key = p.clone().unwrap_or_default();
            if uri.is_empty() {
                s.remove(&key);
            } else {
                s.insert(key, uri.clone());
            }
        }
        s
    }
}

/// Parses a document and returns its root element.
pub fn parse(input: &[u8]) -> Result<Element, String> {
    if input.len() > MAX_DOC_LEN {
        return Err(format!(
            "document is {} bytes, over {MAX_DOC_LEN}",
            input.len()
        ));
    }
    let text = std::str::from_utf8(input).map_err(|_| "document is not UTF-8".to_string())?;
    // XML 1.0 §2.11: normalize line ends before parsing.
    let text: std::borrow::Cow<'_, str> = if text.contains('\r') {
        text.replace("\r\n", "\n").replace('\r', "\n").into()
    } else {
        text.into()
    };
    let mut p = Parser {
        s: text.as_bytes(),
        text: &text,
        pos: 0,
    };
    p.prolog()?;
    let root = p.element(&Scope::new(), 0)?;
    p.skip_ws();
    if p.pos != p.s.len() {
        return Err("content after the root element".into());
    }
    Ok(root)
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }
    fn starts(&self, lit: &str) -> bool {
        self.s
            .get(self.pos..)
            .is_some_and(|r| r.starts_with(lit.as_bytes()))
    }
    fn expect(&mut self, lit: &str) -> Result<(), String> {
        if self.starts(lit) {
            self.pos += lit.len();
            Ok(())
        } else {
            Err(format!("expected {lit:?} at byte {}", self.pos))
        }
    }
    fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n')) {
            self.pos += 1;
        }
        self.pos > start
    }

    fn prolog(&mut self) -> Result<(), String> {
        if self.starts("\u{feff}") {
            return Err("byte-order mark not accepted".into());
        }
        if self.starts("<?xml") {
            let end = self.text[self.pos..]
                .find("?>")
                .ok_or("unterminated XML declaration")?;
            let decl = &self.text[self.pos + 5..self.pos + end];
            let norm: String = decl.split_whitespace().collect::<Vec<_>>().join(" ");
            let ok = [
                "version=\"1.0\"",
                "version=\"1.0\" encoding=\"UTF-8\"",
                "version=\"1.0\" encoding=\"utf-8\"",
                "version='1.0' encoding='UTF-8'",
                "version='1.0' encoding='utf-8'",
                "version='1.0'",
            ];
            if !ok.contains(&norm.as_str()) {
                return Err(format!("XML declaration {norm:?} not accepted"));
            }
            self.pos += end + 2;
        }
        self.skip_ws();
        if self.starts("<!") || self.starts("<?") {
            return Err("DOCTYPE, comments and processing instructions are not accepted".into());
        }
        Ok(())
    }

    fn name(&mut self) -> Result<(Option<String>, String), String> {
        let start = self.pos;
        let first = self.peek().ok_or("document ends in a name")?;
        if !(first.is_ascii_alphabetic() || first == b'_') {
            return Err(format!("invalid name start at byte {start}"));
        }
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':'))
        {
            self.pos += 1;
        }
        let raw = &self.text[start..self.pos];
        let mut parts = raw.split(':');
        let (a, b, c) = (parts.next(), parts.next(), parts.next());
        match (a, b, c) {
            (Some(l), None, None) => Ok((None, l.to_string())),
            (Some(p), Some(l), None) if !p.is_empty() && !l.is_empty() => {
                let ok = |s: &str| {
                    s.bytes()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
                };
                if !ok(l) {
                    return Err(format!("invalid local name in {raw:?}"));
                }
                Ok((Some(p.to_string()), l.to_string()))
            }
            _ => Err(format!("invalid qualified name {raw:?}")),
        }
    }

    /// Character data or attribute value up to `stop`, with references expanded.
    fn chars(&mut self, stop: u8, attr: bool) -> Result<String, String> {
        let mut out = String::new();
        loop {
            // A run of ASCII that needs no attention is copied at once: not the stop
            // byte, no markup or reference, no ']' (may start "]]>"), no control
            // character, and in attribute values no whitespace to normalize.
            let start = self.pos;
            while let Some(&c) = self.s.get(self.pos) {
                let plain = c.is_ascii()
                    && c != stop
                    && !matches!(c, b'<' | b'&' | b']')
                    && (c >= 0x20 || (!attr && matches!(c, b'\t' | b'\n')));
                if !plain {
                    break;
                }
                self.pos += 1;
            }
            if self.pos > start {
                out.push_str(
                    self.text
                        .get(start..self.pos)
                        .ok_or("internal: run not on a character boundary")?,
                );
            }
            let rest = self
                .text
                .get(self.pos..)
                .ok_or("internal: position not on a character boundary")?;
            let Some(c) = rest.chars().next() else {
                if attr {
                    return Err("unterminated attribute value".into());
                }
                return Ok(out);
            };
            if c as u32 == u32::from(stop) {
                return Ok(out);
            }
            match c {
                '<' if attr => return Err("'<' in an attribute value".into()),
                '<' => return Ok(out),
                '&' => {
                    let end = rest.find(';').ok_or("unterminated reference")?;
                    let r = &rest[1..end];
                    let ch = match r {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        _ => {
                            let n = if let Some(h) = r.strip_prefix("#x") {
                                u32::from_str_radix(h, 16).ok()
                            } else if let Some(d) = r.strip_prefix('#') {
                                d.parse::<u32>().ok()
                            } else {
                                None
                            };
                            n.and_then(char::from_u32)
                                .filter(|c| is_xml_char(*c))
                                .ok_or_else(|| format!("reference &{r}; not accepted"))?
                        }
                    };
                    out.push(ch);
                    self.pos += end + 1;
                }
                _ => {
                    if !is_xml_char(c) {
                        return Err(format!("character U+{:04X} not allowed", c as u32));
                    }
                    if !attr && rest.starts_with("]]>") {
                        return Err("']]>' in character data".into());
                    }
                    // XML 1.0 §3.3.3: whitespace in attribute values becomes a space.
                    out.push(if attr && matches!(c, '\t' | '\n') {
                        ' '
                    } else {
                        c
                    });
                    self.pos += c.len_utf8();
                }
            }
        }
    }

    fn element(&mut self, parent: &Scope, depth: usize) -> Result<Element, String> {
        if depth >= MAX_DEPTH {
            return Err("elements nested too deep".into());
        }
        self.expect("<")?;
        let (prefix, local) = self.name()?;
        let mut ns_decls: Vec<(Option<String>, String)> = Vec::new();
        let mut raw_attrs: Vec<(Option<String>, String, String)> = Vec::new();
        let empty;
        loop {
            let had_ws = self.skip_ws();
            if self.starts("/>") {
                self.pos += 2;
                empty = true;
                break;
            }
            if self.starts(">") {
                self.pos += 1;
                empty = false;
                break;
            }
            if !had_ws {
                return Err(format!(
                    "expected whitespace before attribute at byte {}",
                    self.pos
                ));
            }
            let (ap, al) = self.name()?;
            self.skip_ws();
            self.expect("=")?;
            self.skip_ws();
            let q = self.peek().ok_or("document ends in an attribute")?;
            if q != b'"' && q != b'\'' {
                return Err("attribute value not quoted".into());
            }
            self.pos += 1;
            let value = self.chars(q, true)?;
            self.pos += 1;
            match (ap.as_deref(), al.as_str()) {
                (None, "xmlns") => {
                    if ns_decls.iter().any(|(p, _)| p.is_none()) {
                        return Err("default namespace declared twice".into());
                    }
                    ns_decls.push((None, value));
                }
                (Some("xmlns"), p) => {
                    if p == "xml" || p == "xmlns" || value.is_empty() {
                        return Err(format!("namespace declaration xmlns:{p} not accepted"));
                    }
                    if ns_decls.iter().any(|(q, _)| q.as_deref() == Some(p)) {
                        return Err(format!("prefix {p} declared twice"));
                    }
                    ns_decls.push((Some(p.to_string()), value));
                }
                (Some("xml"), _) => return Err(format!("attribute xml:{al} not accepted")),
                _ => {
                    if raw_attrs.len() >= MAX_ATTRS {
                        return Err("too many attributes".into());
                    }
                    raw_attrs.push((ap, al, value));
                }
            }
        }
        let mut el = Element {
            prefix,
            local,
            ns: None,
            ns_decls,
            attrs: Vec::new(),
            children: Vec::new(),
        };
        let owned;
        let scope: &Scope = if el.ns_decls.is_empty() {
            parent
        } else {
            owned = el.scope_inside(parent);
            &owned
        };
        el.ns = match &el.prefix {
            None => scope.get("").cloned(),
            Some(p) => Some(
                scope
                    .get(p)
                    .cloned()
                    .ok_or_else(|| format!("undeclared prefix {p}"))?,
            ),
        };
        for (ap, al, value) in raw_attrs {
            let ns = match &ap {
                None => None,
                Some(p) => Some(
                    scope
                        .get(p)
                        .cloned()
                        .ok_or_else(|| format!("undeclared prefix {p}"))?,
                ),
            };
            if el
                .attrs
                .iter()
                .any(|a| a.local == al && (a.ns == ns || a.prefix == ap))
            {
                return Err(format!("attribute {al} appears twice"));
            }
            el.attrs.push(Attr {
                prefix: ap,
                local: al,
                ns,
                value,
            });
        }
        if empty {
            return Ok(el);
        }
        loop {
            if self.starts("</") {
                self.pos += 2;
                let (p, l) = self.name()?;
                if p != el.prefix || l != el.local {
                    return Err(format!("</{}> closes <{}>", l, el.qname()));
                }
                self.skip_ws();
                self.expect(">")?;
                return Ok(el);
            }
            if self.starts("<!") || self.starts("<?") {
                return Err("comments, CDATA and processing instructions are not accepted".into());
            }
            if self.starts("<") {
                let child = self.element(scope, depth + 1)?;
                el.children.push(Node::Element(child));
                continue;
            }
            if self.pos >= self.s.len() {
                return Err(format!("unclosed element <{}>", el.qname()));
            }
            let t = self.chars(b'<', false)?;
            if !t.is_empty() {
                el.children.push(Node::Text(t));
            }
        }
    }
}

/// Appends `s` with each ASCII byte that `esc` maps replaced; runs without one are
/// copied at once (the replaced bytes are ASCII, so the runs are whole characters).
fn escape_with(s: &str, out: &mut String, esc: impl Fn(u8) -> Option<&'static str>) {
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        if let Some(e) = esc(b) {
            out.push_str(s.get(run..i).unwrap_or_default());
            out.push_str(e);
            run = i + 1;
        }
    }
    out.push_str(s.get(run..).unwrap_or_default());
}

fn escape_text(s: &str, out: &mut String) {
    escape_with(s, out, |b| match b {
        b'&' => Some("&amp;"),
        b'<' => Some("&lt;"),
        b'>' => Some("&gt;"),
        b'\r' => Some("&#xD;"),
        _ => None,
    });
}

fn escape_attr(s: &str, out: &mut String) {
    escape_with(s, out, |b| match b {
        b'&' => Some("&amp;"),
        b'<' => Some("&lt;"),
        b'"' => Some("&quot;"),
        b'\t' => Some("&#x9;"),
        b'\n' => Some("&#xA;"),
        b'\r' => Some("&#xD;"),
        _ => None,
    });
}

fn push_qname(el: &Element, out: &mut String) {
    if let Some(p) = &el.prefix {
        out.push_str(p);
        out.push(':');
    }
    out.push_str(&el.local);
}

/// Inclusive canonical form (C14N 1.0 / 1.1, no comments) of the subtree at `el`.
///
/// `ancestors_scope` are the namespaces in scope at `el`'s parent in the document;
/// `rendered` those already rendered by the nearest output ancestor (empty for the
/// apex of a document subset, equal to `ancestors_scope` when the parent is output).
/// `exclude` is an element left out with its subtree (the enveloped signature).
pub fn canonicalize(
    el: &Element,
    ancestors_scope: &Scope,
    rendered: &Scope,
    exclude: Option<&Element>,
    out: &mut String,
) {
    let owned;
    let scope: &Scope = if el.ns_decls.is_empty() {
        ancestors_scope
    } else {
        owned = el.scope_inside(ancestors_scope);
        &owned
    };
    out.push('<');
    push_qname(el, out);
    // Namespace nodes, sorted by prefix (default first), those not rendered alike
    // by the output parent. xmlns="" only when the output parent had a default.
    if !scope.contains_key("") && rendered.contains_key("") {
        out.push_str(" xmlns=\"\"");
    }
    for (p, uri) in scope {
        if rendered.get(p) == Some(uri) {
            continue;
        }
        if p.is_empty() {
            out.push_str(" xmlns=\"");
        } else {
            out.push_str(" xmlns:");
            out.push_str(p);
            out.push_str("=\"");
        }
        escape_attr(uri, out);
        out.push('"');
    }
    // Attributes sorted by (namespace URI, local name); no namespace sorts first.
    // (The parser refuses duplicates, so the order is total and an unstable sort
    // gives the same result.) An element has few distinct namespace URIs, often long
    // and shared by many attributes: rank them once, then sort by (rank, local name).
    let mut distinct: Vec<&str> = Vec::new();
    let mut keyed: Vec<(usize, &Attr)> = Vec::with_capacity(el.attrs.len());
    for a in &el.attrs {
        let ns = a.ns.as_deref().unwrap_or("");
        let i = match distinct.iter().position(|d| *d == ns) {
            Some(i) => i,
            None => {
                distinct.push(ns);
                distinct.len() - 1
            }
        };
        keyed.push((i, a));
    }
    if distinct.len() > 1 {
        let mut by_uri: Vec<usize> = (0..distinct.len()).collect();
        by_uri.sort_unstable_by(|x, y| distinct.get(*x).cmp(&distinct.get(*y)));
        let mut rank = vec![0; distinct.len()];
        for (r, i) in by_uri.into_iter().enumerate() {
            if let Some(slot) = rank.get_mut(i) {
                *slot = r;
            }
        }
        for k in &mut keyed {
            k.0 = rank.get(k.0).copied().unwrap_or(usize::MAX);
        }
    }
    if keyed.len() > 1 {
        keyed.sort_unstable_by(|(ra, a), (rb, b)| {
            (ra, a.local.as_str()).cmp(&(rb, b.local.as_str()))
        });
    }
    for (_, a) in keyed {
        out.push(' ');
        if let Some(p) = &a.prefix {
            out.push_str(p);
            out.push(':');
        }
        out.push_str(&a.local);
        out.push_str("=\"");
        escape_attr(&a.value, out);
        out.push('"');
    }
    out.push('>');
    for child in &el.children {
        match child {
            Node::Text(t) => escape_text(t, out),
            Node::Element(c) => {
                if exclude.is_some_and(|x| std::ptr::eq(x, c)) {
                    continue;
                }
                canonicalize(c, scope, scope, exclude, out);
            }
        }
    }
    out.push_str("</");
    push_qname(el, out);
    out.push('>');
}
