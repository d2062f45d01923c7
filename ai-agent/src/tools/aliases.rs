//! Per-run aliases: the short names (`n1`, `s2`, `f1`, `c3`, ...) the model uses for objects.
//!
//! Real object ids never reach the model and model-supplied names never reach the document:
//! every id argument is looked up here, and an unknown alias is an error.

use std::collections::HashMap;

use crdt_schema::Kind;

/// The table of one run.
#[derive(Debug, Default)]
pub(crate) struct Aliases {
    by_alias: HashMap<String, String>,
    by_id: HashMap<String, String>,
    next: HashMap<char, u32>,
}

fn prefix(kind: &Kind) -> char {
    match kind {
        Kind::Sticky => 'n',
        Kind::Rect | Kind::Ellipse => 's',
        Kind::Text => 't',
        Kind::Frame => 'f',
        Kind::Connector => 'c',
        Kind::Other(_) => 'o',
    }
}

impl Aliases {
    /// The alias of `id`, assigning the next free one for its kind if it has none.
    pub(crate) fn alias_for(&mut self, id: &str, kind: &Kind) -> String {
        if let Some(a) = self.by_id.get(id) {
            return a.clone();
        }
        let p = prefix(kind);
        let n = self.next.entry(p).or_insert(0);
        *n += 1;
        let alias = format!("{p}{n}");
        self.by_alias.insert(alias.clone(), id.to_string());
        self.by_id.insert(id.to_string(), alias.clone());
        alias
    }

    /// The alias of `id`, if it has one.
    pub(crate) fn alias_of(&self, id: &str) -> Option<&str> {
        self.by_id.get(id).map(String::as_str)
    }

    /// The object id behind `alias` (surrounding whitespace ignored).
    pub(crate) fn resolve(&self, alias: &str) -> Option<&str> {
        self.by_alias.get(alias.trim()).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_stable_and_per_kind() {
        let mut a = Aliases::default();
        assert_eq!(a.alias_for("x", &Kind::Sticky), "n1");
        assert_eq!(a.alias_for("y", &Kind::Sticky), "n2");
        assert_eq!(a.alias_for("z", &Kind::Frame), "f1");
        assert_eq!(a.alias_for("x", &Kind::Sticky), "n1");
        assert_eq!(a.resolve("n2"), Some("y"));
        assert_eq!(a.resolve(" f1 "), Some("z"));
        assert_eq!(a.resolve("n3"), None);
        assert_eq!(a.alias_of("z"), Some("f1"));
    }
}
