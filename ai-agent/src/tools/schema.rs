//! JSON schemas for OpenAI strict function calling, generated from the argument types.
//!
//! schemars produces draft 2020-12 schemas; strict mode wants a subset, so the generated
//! schema is rewritten: every object gets `additionalProperties: false` and lists *all* its
//! properties as `required`; `Option<T>` becomes a nullable type array (`["number", "null"]`,
//! with `null` added to an `enum`); `$schema`, `title` and `format` (e.g. `double`, `uint32`,
//! which strict mode rejects) are dropped; sub-schemas are inlined (no `$ref`).

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

/// The strict-mode parameters schema of `T`.
pub(crate) fn strict_schema<T: JsonSchema>() -> Value {
    let schema = SchemaSettings::draft2020_12()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator()
        .into_root_schema_for::<T>();
    let mut value = schema.to_value();
    make_strict(&mut value);
    // The tool's own description says it; the type's doc comment would repeat it.
    if let Some(map) = value.as_object_mut() {
        map.remove("description");
    }
    value
}

fn make_strict(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("$schema");
            map.remove("title");
            map.remove("format");
            map.remove("default");
            // Doc comments wrap lines; descriptions read better as one line.
            if let Some(Value::String(d)) = map.get_mut("description") {
                *d = d.split_whitespace().collect::<Vec<_>>().join(" ");
            }
            merge_nullable_any_of(map);
            consts_to_enum(map);
            if let Some(Value::Object(props)) = map.get("properties") {
                let required: Vec<Value> = props.keys().cloned().map(Value::String).collect();
                map.insert("required".into(), Value::Array(required));
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (k, v) in map.iter_mut() {
                match (k.as_str(), v) {
                    // A map of property names to schemas, not a schema: "title" may be a name.
                    ("properties", Value::Object(props)) => {
                        props.values_mut().for_each(make_strict);
                    }
                    (_, v) => make_strict(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(make_strict),
        _ => {}
    }
}

/// `oneOf: [{const: a, type: t}, ...]` (what a documented unit enum becomes) →
/// `{type: t, enum: [a, ...]}`.
fn consts_to_enum(map: &mut Map<String, Value>) {
    let Some(Value::Array(options)) = map.get("oneOf") else {
        return;
    };
    let mut values = Vec::new();
    let mut types = Vec::new();
    for o in options {
        let (Some(c), Some(t)) = (o.get("const"), o.get("type")) else {
            return;
        };
        values.push(c.clone());
        if !types.contains(t) {
            types.push(t.clone());
        }
    }
    let [t] = types.as_slice() else { return };
    let t = t.clone();
    map.remove("oneOf");
    map.insert("type".into(), t);
    map.insert("enum".into(), Value::Array(values));
}

/// `anyOf: [X, {type: null}]` → X with `type: [t, "null"]` (and `null` in its enum).
fn merge_nullable_any_of(map: &mut Map<String, Value>) {
    let Some(Value::Array(options)) = map.get("anyOf") else {
        return;
    };
    let is_null = |v: &Value| v.get("type") == Some(&Value::String("null".into()));
    if options.len() != 2 || options.iter().filter(|v| is_null(v)).count() != 1 {
        return;
    }
    let Some(Value::Object(mut inner)) = options.iter().find(|v| !is_null(v)).cloned() else {
        return;
    };
    consts_to_enum(&mut inner);
    let Some(Value::String(t)) = inner.get("type").cloned() else {
        return;
    };
    map.remove("anyOf");
    for (k, v) in inner {
        map.entry(k).or_insert(v);
    }
    map.insert("type".into(), serde_json::json!([t, "null"]));
    if let Some(Value::Array(values)) = map.get_mut("enum")
        && !values.contains(&Value::Null)
    {
        values.push(Value::Null);
    }
}

/// Problems that make `schema` unfit for strict mode (empty if it fits).
#[cfg(test)]
pub(crate) fn strict_problems(schema: &Value, path: &str, out: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            for banned in ["$ref", "$defs", "format", "title", "$schema", "oneOf"] {
                if map.contains_key(banned) {
                    out.push(format!("{path}: has {banned}"));
                }
            }
            if let Some(Value::Array(options)) = map.get("anyOf")
                && options
                    .iter()
                    .any(|o| o.get("type") == Some(&Value::String("null".into())))
            {
                out.push(format!("{path}: nullable anyOf"));
            }
            if let Some(Value::Object(props)) = map.get("properties") {
                if map.get("additionalProperties") != Some(&Value::Bool(false)) {
                    out.push(format!("{path}: additionalProperties not false"));
                }
                let mut required: Vec<&str> = map
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                required.sort_unstable();
                let mut keys: Vec<&str> = props.keys().map(String::as_str).collect();
                keys.sort_unstable();
                if required != keys {
                    out.push(format!("{path}: not every property is required"));
                }
            }
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("properties", Value::Object(props)) => {
                        for (name, p) in props {
                            strict_problems(p, &format!("{path}/{name}"), out);
                        }
                    }
                    (_, v) => strict_problems(v, &format!("{path}/{k}"), out),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                strict_problems(v, &format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}
