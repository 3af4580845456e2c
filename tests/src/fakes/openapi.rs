//! Checks requests against an OpenAPI 3.1 document: the path must match one of its
//! operations, the method must be one the path allows, every path and query parameter
//! must be known and satisfy its schema, required ones present, and a JSON body must
//! satisfy the operation's request-body schema (with `$ref`s resolved against the
//! document's `components`). Body objects are checked closed: a field the schema does not
//! name is a violation, so a typo or an invented field cannot pass unnoticed.
//!
//! Driven only by the document: nothing here names a platform's fields.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One request, as a fake received it.
pub(crate) struct Request<'a> {
    /// The HTTP method (`GET`, `POST`, …).
    pub(crate) method: &'a str,
    /// The path below the API's base (e.g. `/channels/1/messages`), percent-decoded.
    pub(crate) path: &'a str,
    /// The query parameters as received (not percent-decoded), in order.
    pub(crate) query: &'a [(String, String)],
    /// Present when the request carried a body.
    pub(crate) json_body: Option<&'a [u8]>,
}

/// A compiled-on-demand view of one OpenAPI document.
pub(crate) struct OpenApi {
    /// The document, with every object schema in `components` closed.
    components: Value,
    operations: Vec<Operation>,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

struct Operation {
    method: String,
    /// The path template, split at `/` (`{name}` segments are parameters).
    template: Vec<String>,
    /// Parameter name → (where: `path`/`query`, required, schema).
    parameters: Vec<(String, String, bool, Value)>,
    body: Option<(bool, Value)>,
}

impl OpenApi {
    /// Loads `document` (an OpenAPI 3.1 JSON document).
    pub(crate) fn new(document: &Value) -> OpenApi {
        let mut components = document["components"].clone();
        close_objects(&mut components);
        let mut operations = Vec::new();
        if let Some(paths) = document["paths"].as_object() {
            for (path, item) in paths {
                let shared = item["parameters"].as_array().cloned().unwrap_or_default();
                let Some(item) = item.as_object() else {
                    continue;
                };
                for (method, op) in item {
                    if !matches!(method.as_str(), "get" | "post" | "put" | "patch" | "delete") {
                        continue;
                    }
                    let mut parameters = Vec::new();
                    let own = op["parameters"].as_array().cloned().unwrap_or_default();
                    for p in shared.iter().chain(own.iter()) {
                        let p = resolve(document, p);
                        parameters.push((
                            p["name"].as_str().unwrap_or_default().to_owned(),
                            p["in"].as_str().unwrap_or_default().to_owned(),
                            p["required"].as_bool().unwrap_or(false),
                            p["schema"].clone(),
                        ));
                    }
                    let body = op.get("requestBody").map(|b| {
                        let b = resolve(document, b);
                        (
                            b["required"].as_bool().unwrap_or(false),
                            b["content"]["application/json"]["schema"].clone(),
                        )
                    });
                    operations.push(Operation {
                        method: method.to_uppercase(),
                        template: path.split('/').map(str::to_owned).collect(),
                        parameters,
                        body,
                    });
                }
            }
        }
        OpenApi {
            components,
            operations,
            validators: Mutex::new(HashMap::new()),
        }
    }

    /// Why `request` is not allowed by the document (empty when it is).
    pub(crate) fn violations(&self, request: &Request<'_>) -> Vec<String> {
        let segments: Vec<&str> = request.path.split('/').collect();
        let fitting: Vec<&Operation> = self
            .operations
            .iter()
            .filter(|op| {
                op.template.len() == segments.len()
                    && op.template.iter().zip(&segments).all(|(t, s)| {
                        (t.starts_with('{') && t.ends_with('}') && !s.is_empty()) || t == s
                    })
            })
            .collect();
        if fitting.is_empty() {
            return vec![format!("no operation has the path {}", request.path)];
        }
        // The most literal template wins (`/users/@me` over `/users/{user_id}`).
        let literal = |op: &Operation| op.template.iter().filter(|t| !t.starts_with('{')).count();
        let best = fitting.iter().map(|op| literal(op)).max().unwrap_or(0);
        let fitting: Vec<&Operation> = fitting
            .into_iter()
            .filter(|op| literal(op) == best)
            .collect();
        let Some(op) = fitting.iter().find(|op| op.method == request.method) else {
            return vec![format!(
                "{} {}: the path allows only {}",
                request.method,
                request.path,
                fitting
                    .iter()
                    .map(|op| op.method.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )];
        };
        let mut out = Vec::new();
        let label = format!("{} {}", request.method, op.template.join("/"));
        for (t, s) in op.template.iter().zip(&segments) {
            if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                match op.parameters.iter().find(|p| p.0 == name && p.1 == "path") {
                    Some((_, _, _, schema)) => {
                        out.extend(self.check(
                            &label,
                            &format!("path {name}"),
                            schema,
                            &Value::String((*s).to_owned()),
                        ));
                    }
                    None => out.push(format!("{label}: path parameter {name} is not described")),
                }
            }
        }
        for (name, value) in request.query {
            match op
                .parameters
                .iter()
                .find(|p| p.0 == *name && p.1 == "query")
            {
                Some((_, _, _, schema)) => {
                    let typed = typed_query(&self.components, schema, value);
                    out.extend(self.check(&label, &format!("query {name}"), schema, &typed));
                }
                None => out.push(format!("{label}: unknown query parameter {name}")),
            }
        }
        for (name, _, required, _) in op.parameters.iter().filter(|p| p.1 == "query" && p.2) {
            if *required && !request.query.iter().any(|(n, _)| n == name) {
                out.push(format!("{label}: required query parameter {name} missing"));
            }
        }
        match (&op.body, request.json_body) {
            (Some((_, schema)), Some(body)) if !body.is_empty() => {
                match serde_json::from_slice::<Value>(body) {
                    Ok(instance) => out.extend(self.check(&label, "body", schema, &instance)),
                    Err(e) => out.push(format!("{label}: body is not JSON: {e}")),
                }
            }
            (Some((true, _)), Some(_) | None) => {
                out.push(format!("{label}: request body required"))
            }
            (None, Some(body)) if !body.is_empty() => out.push(format!("{label}: takes no body")),
            (Some((false, _)), _) | (None, _) => {}
        }
        out
    }

    /// Validates `instance` against `schema`, resolved against the document.
    fn check(&self, label: &str, what: &str, schema: &Value, instance: &Value) -> Vec<String> {
        let key = schema.to_string();
        let validator = {
            let mut cache = self.validators.lock().unwrap_or_else(|p| p.into_inner());
            match cache.get(&key) {
                Some(v) => Arc::clone(v),
                None => {
                    let mut root = match schema {
                        Value::Object(o) => o.clone(),
                        other @ (Value::Null
                        | Value::Bool(_)
                        | Value::Number(_)
                        | Value::String(_)
                        | Value::Array(_)) => Map::from_iter([(
                            "allOf".to_owned(),
                            Value::Array(vec![other.clone()]),
                        )]),
                    };
                    close_objects_in_map(&mut root);
                    root.insert("components".into(), self.components.clone());
                    let built = jsonschema::options()
                        .with_draft(jsonschema::Draft::Draft202012)
                        .offline()
                        .build(&Value::Object(root));
                    match built {
                        Ok(v) => {
                            let v = Arc::new(v);
                            cache.insert(key, Arc::clone(&v));
                            v
                        }
                        Err(e) => {
                            return vec![format!("{label}: {what}: schema does not compile: {e}")]
                        }
                    }
                }
            }
        };
        validator
            .iter_errors(instance)
            .map(|e| format!("{label}: {what}: {e} at {}", e.instance_path()))
            .collect()
    }
}

/// Follows a local `$ref` (`#/components/...`) once.
fn resolve<'a>(document: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
        Some(pointer) => document.pointer(pointer).unwrap_or(value),
        None => value,
    }
}

/// A query string value in the type its schema names (query values arrive as text).
fn typed_query(components: &Value, schema: &Value, raw: &str) -> Value {
    let schema = match schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components"))
    {
        Some(pointer) => components.pointer(pointer).unwrap_or(schema),
        None => schema,
    };
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::Object(_) => Vec::new(),
    };
    if types.contains(&"integer") {
        if let Ok(n) = raw.parse::<i64>() {
            return Value::from(n);
        }
    }
    if types.contains(&"boolean") {
        match raw {
            "true" => return Value::Bool(true),
            "false" => return Value::Bool(false),
            _ => {}
        }
    }
    Value::String(raw.to_owned())
}

/// Makes every object schema with `properties` (and no `additionalProperties`) closed.
fn close_objects(value: &mut Value) {
    match value {
        Value::Object(map) => close_objects_in_map(map),
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

fn close_objects_in_map(map: &mut Map<String, Value>) {
    // `allOf` branches each see only some fields: closing them would refuse valid bodies.
    let under_all_of = map.contains_key("allOf");
    if map.get("properties").is_some_and(Value::is_object)
        && !map.contains_key("additionalProperties")
        && !under_all_of
    {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (key, child) in map.iter_mut() {
        if key == "allOf" {
            continue;
        }
        close_objects(child);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discord() -> OpenApi {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/specs/discord-openapi.json");
        let text = std::fs::read_to_string(path).expect("the vendored Discord document");
        OpenApi::new(&serde_json::from_str(&text).expect("JSON"))
    }

    fn check(
        api: &OpenApi,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Vec<String> {
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let body = body.map(|b| b.to_string().into_bytes());
        api.violations(&Request {
            method,
            path,
            query: &query,
            json_body: body.as_deref(),
        })
    }

    #[test]
    fn requests_are_held_to_the_document() {
        let api = discord();
        let ok = serde_json::json!({"content": "hi", "nonce": "k", "enforce_nonce": true, "allowed_mentions": {"parse": []}});
        assert_eq!(
            check(&api, "POST", "/channels/1/messages", &[], Some(ok)),
            Vec::<String>::new()
        );
        let long_nonce = serde_json::json!({"content": "hi", "nonce": "x".repeat(26)});
        assert!(!check(&api, "POST", "/channels/1/messages", &[], Some(long_nonce)).is_empty());
        let unknown_field = serde_json::json!({"content": "hi", "silent": true});
        assert!(!check(
            &api,
            "POST",
            "/channels/1/messages",
            &[],
            Some(unknown_field)
        )
        .is_empty());
        let wrong_type = serde_json::json!({"content": 5});
        assert!(!check(&api, "POST", "/channels/1/messages", &[], Some(wrong_type)).is_empty());
        assert!(!check(
            &api,
            "POST",
            "/channels/abc/messages",
            &[],
            Some(serde_json::json!({"content": "x"}))
        )
        .is_empty());
        assert!(!check(&api, "PUT", "/channels/1/messages", &[], None).is_empty());
        assert!(!check(&api, "GET", "/channels/1/nothing", &[], None).is_empty());
        assert_eq!(
            check(
                &api,
                "GET",
                "/channels/1/messages",
                &[("after", "5"), ("limit", "100")],
                None
            ),
            Vec::<String>::new()
        );
        assert!(!check(
            &api,
            "GET",
            "/channels/1/messages",
            &[("limit", "101")],
            None
        )
        .is_empty());
        assert!(!check(
            &api,
            "GET",
            "/channels/1/messages",
            &[("newest", "1")],
            None
        )
        .is_empty());
        assert_eq!(
            check(&api, "GET", "/users/@me", &[], None),
            Vec::<String>::new()
        );
        let no_name = serde_json::json!({"auto_archive_duration": 60});
        assert!(!check(
            &api,
            "POST",
            "/channels/1/messages/2/threads",
            &[],
            Some(no_name)
        )
        .is_empty());
        let long_name = serde_json::json!({"name": "n".repeat(101)});
        assert!(!check(
            &api,
            "POST",
            "/channels/1/messages/2/threads",
            &[],
            Some(long_name)
        )
        .is_empty());
    }
}
