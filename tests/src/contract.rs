//! The published JSON Schemas (`schemas/json/`), loaded for checking what Threadline
//! itself emits against the contract other teams code against.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Validators by event name (`spawned`, `delivered`, …).
pub struct Schemas {
    validators: BTreeMap<String, jsonschema::Validator>,
}

impl Schemas {
    /// Loads every `<event>.schema.json`, resolving their `$ref`s offline.
    pub fn load() -> Schemas {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/json");
        let mut documents = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("schemas/json exists") {
            let path = entry.expect("dir entry").path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".schema.json"))
                .map(str::to_owned)
            else {
                continue;
            };
            let text = std::fs::read_to_string(&path).expect("read schema");
            let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
            documents.push((name, schema));
        }
        let mut registry = jsonschema::Registry::new();
        for (name, schema) in &documents {
            let id = schema["$id"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} has no $id"));
            registry = registry.add(id, schema.clone()).expect("register schema");
        }
        let registry = registry.prepare().expect("schema registry");
        let validators = documents
            .iter()
            .filter(|(name, _)| name != "common")
            .map(|(name, schema)| {
                let validator = jsonschema::options()
                    .offline()
                    .with_registry(&registry)
                    .build(schema)
                    .unwrap_or_else(|e| panic!("{name}.schema.json: {e}"));
                (name.clone(), validator)
            })
            .collect();
        Schemas { validators }
    }

    /// Why `instance` does not satisfy the schema of `event` (empty when it does).
    pub fn errors(&self, event: &str, instance: &Value) -> Vec<String> {
        self.validators
            .get(event)
            .unwrap_or_else(|| panic!("no schema for {event}"))
            .iter_errors(instance)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect()
    }
}
