//! [`Value`]: a small, serializable, deterministic copy of any Yjs value, used for fields this
//! crate does not know (kept, never dropped).

use std::collections::BTreeMap;

use serde::Serialize;
use yrs::types::ToJson;
use yrs::{Any, Array, Map, Out, ReadTxn};

/// A JSON-like value. Maps are ordered by key so output is deterministic; shared types are
/// copied as JSON (`Y.Text` becomes a string, `Y.Map` a map, `Y.Array` an array).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// `null` or `undefined`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number. Non-finite numbers serialize as `null` (JSON has no NaN).
    Number(f64),
    /// A string.
    String(String),
    /// A binary buffer (`Uint8Array`), serialized as an array of bytes.
    Bytes(Vec<u8>),
    /// An array.
    Array(Vec<Value>),
    /// A map.
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// Copies a yrs [`Any`]. Arrays and maps nested past [`crate::guard::MAX_WALK_DEPTH`]
    /// are copied as `null` (a document that passed [`crate::guard`] has none).
    pub fn from_any(any: &Any) -> Self {
        Self::from_any_at(any, 0)
    }

    fn from_any_at(any: &Any, depth: u16) -> Self {
        let deeper = depth + 1;
        match any {
            Any::Null | Any::Undefined => Value::Null,
            Any::Bool(b) => Value::Bool(*b),
            Any::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            Any::String(s) => Value::String(s.to_string()),
            Any::Buffer(b) => Value::Bytes(b.to_vec()),
            Any::Array(_) | Any::Map(_) if depth >= crate::guard::MAX_WALK_DEPTH => Value::Null,
            Any::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| Value::from_any_at(v, deeper))
                    .collect(),
            ),
            Any::Map(entries) => Value::Map(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from_any_at(v, deeper)))
                    .collect(),
            ),
        }
    }

    /// Copies any value read from a document (shared types as JSON). Nesting past
    /// [`crate::guard::MAX_WALK_DEPTH`] is copied as `null`, as in [`Value::from_any`].
    pub fn from_out<T: ReadTxn>(txn: &T, out: &Out) -> Self {
        Self::from_out_at(txn, out, 0)
    }

    fn from_out_at<T: ReadTxn>(txn: &T, out: &Out, depth: u16) -> Self {
        let deeper = depth + 1;
        match out {
            Out::Any(any) => Value::from_any_at(any, depth),
            Out::YMap(_) | Out::YArray(_) if depth >= crate::guard::MAX_WALK_DEPTH => Value::Null,
            Out::YMap(map) => Value::Map(
                map.iter(txn)
                    .map(|(k, v)| (k.to_owned(), Value::from_out_at(txn, &v, deeper)))
                    .collect(),
            ),
            Out::YArray(array) => Value::Array(
                array
                    .iter(txn)
                    .map(|v| Value::from_out_at(txn, &v, deeper))
                    .collect(),
            ),
            other => Value::from_any_at(&other.to_json(txn), depth),
        }
    }
}

/// A short description of a value's type for issues, e.g. `string`, `array of 3`, `Y.Text`.
pub(crate) fn describe(out: &Out) -> String {
    match out {
        Out::Any(any) => describe_any(any),
        Out::YText(_) => "Y.Text".into(),
        Out::YArray(_) => "Y.Array".into(),
        Out::YMap(_) => "Y.Map".into(),
        Out::YXmlElement(_) => "Y.XmlElement".into(),
        Out::YXmlFragment(_) => "Y.XmlFragment".into(),
        Out::YXmlText(_) => "Y.XmlText".into(),
        Out::YDoc(_) => "Y.Doc".into(),
        Out::UndefinedRef(_) => "undefined shared type".into(),
    }
}

pub(crate) fn describe_any(any: &Any) -> String {
    match any {
        Any::Null => "null".into(),
        Any::Undefined => "undefined".into(),
        Any::Bool(_) => "boolean".into(),
        Any::Number(_) => "number".into(),
        Any::String(_) => "string".into(),
        Any::Buffer(_) => "binary".into(),
        Any::Array(items) => format!("array of {}", items.len()),
        Any::Map(_) => "map".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn any_to_value_is_deterministic_and_complete() {
        let mut m = HashMap::new();
        m.insert("b".to_string(), Any::from(2));
        m.insert(
            "a".to_string(),
            Any::Array(vec![Any::Null, Any::from(true)].into()),
        );
        let v = Value::from_any(&Any::from(m));
        let Value::Map(map) = &v else {
            panic!("expected a map, got {v:?}");
        };
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(map["b"], Value::Number(2.0));
        assert_eq!(map["a"], Value::Array(vec![Value::Null, Value::Bool(true)]));
        assert_eq!(Value::from_any(&Any::Undefined), Value::Null);
        assert_eq!(
            Value::from_any(&Any::Buffer(vec![1u8, 2].into())),
            Value::Bytes(vec![1, 2])
        );
    }

    #[test]
    fn describes_types() {
        assert_eq!(describe_any(&Any::from(vec![1.0, 2.0, 3.0])), "array of 3");
        assert_eq!(describe_any(&Any::from("x")), "string");
    }
}
