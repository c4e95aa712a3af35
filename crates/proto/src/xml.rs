//! A small namespace-resolved element tree over quick-xml's `NsReader`, with hard limits so a
//! hostile body cannot make us spend memory or stack: depth, element count and input size.
//! DOCTYPE is refused outright (no entity games).
use crate::ProtoError;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

pub const MAX_DEPTH: usize = 48;
pub const MAX_ELEMENTS: usize = 20_000;
pub const MAX_INPUT: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ns: Option<String>,
    pub local: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub ns: Option<String>,
    pub local: String,
    pub attrs: Vec<Attr>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.ns.as_deref() == Some(ns) && self.local == local
    }

    pub fn child(&self, ns: &str, local: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, local))
    }

    pub fn children_named<'a>(&'a self, ns: &'a str, local: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, local))
    }

    /// Follows a path of (ns, local) steps.
    pub fn path(&self, steps: &[(&str, &str)]) -> Option<&Element> {
        let mut cur = self;
        for (ns, local) in steps {
            cur = cur.child(ns, local)?;
        }
        Some(cur)
    }

    pub fn attr(&self, ns: Option<&str>, local: &str) -> Option<&str> {
        self.attrs.iter().find(|a| a.ns.as_deref() == ns && a.local == local).map(|a| a.value.as_str())
    }

    /// `xsi:nil="true"`.
    pub fn is_nil(&self) -> bool {
        matches!(self.attr(Some(crate::ns::XSI), "nil"), Some("true") | Some("1"))
    }

    /// Text content trimmed; `None` when nil or empty.
    pub fn value(&self) -> Option<&str> {
        let t = self.text.trim();
        if self.is_nil() || t.is_empty() {
            None
        } else {
            Some(t)
        }
    }
}

fn ns_of(r: ResolveResult<'_>) -> Result<Option<String>, ProtoError> {
    match r {
        ResolveResult::Bound(ns) => Ok(Some(ns.0.to_string())),
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Unknown(p) => Err(ProtoError::Xml(format!("unbound prefix {p}"))),
    }
}

fn xml_err(e: impl std::fmt::Display) -> ProtoError {
    ProtoError::Xml(e.to_string())
}

/// Parses a whole document into its root element.
pub fn parse(input: &[u8]) -> Result<Element, ProtoError> {
    if input.len() > MAX_INPUT {
        return Err(ProtoError::TooLarge);
    }
    let text = std::str::from_utf8(input).map_err(|_| ProtoError::Xml("not UTF-8".into()))?;
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut count = 0usize;
    let mut root: Option<Element> = None;
    loop {
        let (resolved, event) = reader.read_resolved_event().map_err(xml_err)?;
        let ns = ns_of(resolved)?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(ProtoError::TooManyElements);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(ProtoError::TooDeep);
                }
                if root.is_some() {
                    return Err(ProtoError::Xml("content after the root element".into()));
                }
                let mut el = Element { ns, local: e.local_name().into_inner().to_string(), ..Default::default() };
                for a in e.attributes() {
                    let a = a.map_err(xml_err)?;
                    let key = a.key.into_inner();
                    if key == "xmlns" || key.starts_with("xmlns:") {
                        continue;
                    }
                    let (ans, alocal) = reader.resolver().resolve_attribute(a.key);
                    let value = a.normalized_value(quick_xml::XmlVersion::Implicit1_0).map_err(xml_err)?;
                    el.attrs.push(Attr {
                        ns: ns_of(ans)?,
                        local: alocal.into_inner().to_string(),
                        value: value.into_owned(),
                    });
                }
                if matches!(event, Event::Empty(_)) {
                    attach(&mut stack, &mut root, el);
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let el = stack.pop().ok_or_else(|| ProtoError::Xml("unbalanced end tag".into()))?;
                attach(&mut stack, &mut root, el);
            }
            Event::Text(t) => {
                let s = t.xml10_content();
                push_text(&mut stack, &s)?;
            }
            Event::CData(c) => {
                let s = c.into_inner().into_owned();
                push_text(&mut stack, &s)?;
            }
            Event::GeneralRef(g) => {
                // Character and predefined entity references arrive as separate events.
                let s = match g.resolve_char_ref().map_err(xml_err)? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = g.xml10_content();
                        quick_xml::escape::unescape(&format!("&{name};")).map_err(xml_err)?.into_owned()
                    }
                };
                push_text(&mut stack, &s)?;
            }
            Event::DocType(_) => return Err(ProtoError::Xml("DOCTYPE is not allowed".into())),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(ProtoError::Xml("unexpected end of document".into()));
    }
    root.ok_or_else(|| ProtoError::Xml("empty document".into()))
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

fn push_text(stack: &mut [Element], s: &str) -> Result<(), ProtoError> {
    match stack.last_mut() {
        Some(el) => {
            el.text.push_str(s);
            Ok(())
        }
        None if s.trim().is_empty() => Ok(()),
        None => Err(ProtoError::Xml("text outside the root element".into())),
    }
}

/// A minimal writer for responses: prefixed names are literal, values are escaped here.
#[derive(Debug, Clone)]
pub struct W {
    name: String,
    attrs: Vec<(String, String)>,
    body: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    El(W),
    Text(String),
}

impl W {
    pub fn new(name: &str) -> W {
        W { name: name.to_string(), attrs: Vec::new(), body: Vec::new() }
    }
    pub fn attr(mut self, k: &str, v: impl Into<String>) -> W {
        self.attrs.push((k.to_string(), v.into()));
        self
    }
    pub fn child(mut self, c: W) -> W {
        self.body.push(Node::El(c));
        self
    }
    pub fn children(mut self, cs: impl IntoIterator<Item = W>) -> W {
        self.body.extend(cs.into_iter().map(Node::El));
        self
    }
    pub fn text(mut self, t: impl Into<String>) -> W {
        self.body.push(Node::Text(t.into()));
        self
    }
    /// An element with text content.
    pub fn leaf(name: &str, t: impl Into<String>) -> W {
        W::new(name).text(t)
    }
    /// `<name xsi:nil="true"/>`; the document root must declare the xsi prefix.
    pub fn nil(name: &str) -> W {
        W::new(name).attr("xsi:nil", "true")
    }
    pub fn write(&self, out: &mut String) {
        out.push('<');
        out.push_str(&self.name);
        for (k, v) in &self.attrs {
            out.push(' ');
            out.push_str(k);
            out.push_str("=\"");
            out.push_str(&quick_xml::escape::escape(v.as_str()));
            out.push('"');
        }
        if self.body.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for n in &self.body {
            match n {
                Node::El(w) => w.write(out),
                Node::Text(t) => out.push_str(&quick_xml::escape::escape(t.as_str())),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }
    pub fn to_document(&self) -> String {
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>");
        self.write(&mut s);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_do_not_matter() {
        let a = parse(br#"<s:E xmlns:s="urn:x"><s:B>1</s:B></s:E>"#).unwrap();
        let b = parse(br#"<E xmlns="urn:x"><q:B xmlns:q="urn:x">1</q:B></E>"#).unwrap();
        assert_eq!(a.child("urn:x", "B").unwrap().text, "1");
        assert_eq!(b.child("urn:x", "B").unwrap().text, "1");
    }

    #[test]
    fn refs_are_stitched_into_text() {
        let a = parse(b"<a>x&#xD;\ny&amp;z</a>").unwrap();
        assert_eq!(a.text, "x\r\ny&z");
    }

    #[test]
    fn hostile_input_is_refused() {
        let deep = "<a>".repeat(1000) + &"</a>".repeat(1000);
        assert_eq!(parse(deep.as_bytes()), Err(ProtoError::TooDeep));
        assert!(matches!(parse(b"<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>"), Err(ProtoError::Xml(_))));
        assert!(matches!(parse(b"<a><b></a>"), Err(ProtoError::Xml(_))));
        assert!(matches!(parse(b"<p:a/>"), Err(ProtoError::Xml(_))));
        assert!(matches!(parse(b""), Err(ProtoError::Xml(_))));
        assert!(matches!(parse(&[0xff, 0xfe]), Err(ProtoError::Xml(_))));
    }

    #[test]
    fn writer_escapes() {
        let mut s = String::new();
        W::new("a").attr("k", "\"<").text("a&b").write(&mut s);
        assert_eq!(s, "<a k=\"&quot;&lt;\">a&amp;b</a>");
    }
}
