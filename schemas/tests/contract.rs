//! Proves `json/` schemas, `fixtures/` and the Rust types agree: fixtures validate and round-trip byte-for-byte, invalid ones get their documented code, schema and decoder agree on mutations.
//!
//! `UPDATE_FIXTURES=1 cargo test -p threadline-schemas --test contract` rewrites every
//! `fixtures/*.msgpack` from its `.json` twin through the Rust type instead of comparing.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::fs;
use std::path::{Path, PathBuf};
use threadline_schemas::codec::Versioned;
use threadline_schemas::{
    decode, encode, BindingChanged, CompletionReported, ControlRequested, ConversationChanged,
    DecodeError, DeliveryCommand, Encoding, EventRejected, MessageReceived, MessageUnbound,
    PostDelivered, PostFailed, RejectCode, SendCompleted, SendRequested, SessionInput,
    SessionSpawned, SpawnRequested, Validate, DEFAULT_MAX_EVENT_BYTES,
};

// ------------------------------------------------------------------------------------------
// The event table: the single list of contract events. `every_event_type_has_contract_files`
// checks it against the Rust sources, so a new event cannot ship without schema and fixtures.
// ------------------------------------------------------------------------------------------

/// How Threadline reads an event type off the wire.
trait Contract: DeserializeOwned + Serialize + PartialEq + Debug {
    /// Inbound and deliver types: `decode` (size, version, validation). Outbound types have
    /// no `Versioned`/`Validate`; consumers read them with plain serde, and so does this.
    fn read(bytes: &[u8], encoding: Encoding) -> Result<Self, DecodeError>;
}

fn read_checked<T: DeserializeOwned + Validate + Versioned>(
    bytes: &[u8],
    encoding: Encoding,
) -> Result<T, DecodeError> {
    decode::<T>(bytes, encoding, DEFAULT_MAX_EVENT_BYTES)
}

fn read_plain<T: DeserializeOwned>(bytes: &[u8], encoding: Encoding) -> Result<T, DecodeError> {
    let result = match encoding {
        Encoding::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        Encoding::MessagePack => rmp_serde::from_slice(bytes).map_err(|e| e.to_string()),
    };
    result.map_err(|message| DecodeError {
        code: RejectCode::InvalidEvent,
        message,
        event_id: None,
    })
}

macro_rules! contract {
    ($reader:ident: $($t:ty),* $(,)?) => {$(
        impl Contract for $t {
            fn read(bytes: &[u8], encoding: Encoding) -> Result<Self, DecodeError> {
                $reader::<$t>(bytes, encoding)
            }
        }
    )*};
}
contract!(read_checked: SpawnRequested, CompletionReported, SendRequested, MessageReceived,
    ControlRequested, ConversationChanged, DeliveryCommand);
contract!(read_plain: SessionSpawned, EventRejected, PostDelivered, PostFailed, BindingChanged,
    MessageUnbound, SendCompleted, SessionInput);

/// One contract event: its schema/fixture name, its Rust type and how to exercise it.
struct Event {
    /// `json/<name>.schema.json`, `fixtures/<name>[.<case>].json`.
    name: &'static str,
    rust_type: &'static str,
    /// Decoded with version check and validation (inbound, deliver); rejections have codes.
    checked: bool,
    check_fixture: fn(&Path, bool) -> Result<(), String>,
    read: fn(&[u8], Encoding) -> Result<(), DecodeError>,
}

fn read_unit<T: Contract>(bytes: &[u8], encoding: Encoding) -> Result<(), DecodeError> {
    T::read(bytes, encoding).map(drop)
}

macro_rules! event {
    ($name:literal, $t:ty, $checked:literal) => {
        Event {
            name: $name,
            rust_type: stringify!($t),
            checked: $checked,
            check_fixture: check_fixture::<$t>,
            read: read_unit::<$t>,
        }
    };
}

fn events() -> Vec<Event> {
    vec![
        event!("spawn", SpawnRequested, true),
        event!("completion", CompletionReported, true),
        event!("send", SendRequested, true),
        event!("message", MessageReceived, true),
        event!("control", ControlRequested, true),
        event!("conversation", ConversationChanged, true),
        event!("deliver", DeliveryCommand, true),
        event!("spawned", SessionSpawned, false),
        event!("rejected", EventRejected, false),
        event!("delivered", PostDelivered, false),
        event!("failed", PostFailed, false),
        event!("binding", BindingChanged, false),
        event!("unbound", MessageUnbound, false),
        event!("sent", SendCompleted, false),
        event!("session_input", SessionInput, false),
    ]
}

fn event(name: &str) -> Event {
    events()
        .into_iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no event named `{name}` in the contract table"))
}

// ------------------------------------------------------------------------------------------
// Files
// ------------------------------------------------------------------------------------------

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn schema_dir() -> PathBuf {
    crate_dir().join("json")
}

fn fixture_dir() -> PathBuf {
    crate_dir().join("fixtures")
}

fn files_in(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == extension))
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .expect("UTF-8 file name")
}

/// `spawn.placement_child.json` → `spawn`; `rejected.json` → `rejected`.
fn event_of(path: &Path) -> &str {
    file_name(path).split('.').next().unwrap_or_default()
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// Valid fixtures of one event, `.json` twins only.
fn fixtures_of(name: &str) -> Vec<PathBuf> {
    files_in(&fixture_dir(), "json")
        .into_iter()
        .filter(|p| event_of(p) == name)
        .collect()
}

fn updating() -> bool {
    std::env::var("UPDATE_FIXTURES").is_ok_and(|v| v == "1")
}

// ------------------------------------------------------------------------------------------
// Schemas
// ------------------------------------------------------------------------------------------

/// Every schema compiled against a registry holding all of `json/` under their `$id`s, with
/// retrieval disabled: a `$ref` that does not resolve locally fails to compile.
struct Schemas {
    validators: BTreeMap<String, jsonschema::Validator>,
}

impl Schemas {
    fn load() -> Schemas {
        let documents: Vec<(String, Value)> = files_in(&schema_dir(), "json")
            .iter()
            .map(|p| {
                let name = file_name(p)
                    .strip_suffix(".schema.json")
                    .unwrap_or_else(|| panic!("{}: not named <event>.schema.json", p.display()))
                    .to_owned();
                (name, read_json(p))
            })
            .collect();
        let mut builder = jsonschema::Registry::new();
        for (name, schema) in &documents {
            let id = schema["$id"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}.schema.json has no `$id`"));
            builder = builder
                .add(id, schema.clone())
                .unwrap_or_else(|e| panic!("{name}.schema.json cannot be registered: {e}"));
        }
        let registry = builder.prepare().expect("schema registry prepares");
        let validators = documents
            .iter()
            .filter(|(name, _)| name != "common")
            .map(|(name, schema)| {
                let validator = jsonschema::options()
                    .offline()
                    .with_registry(&registry)
                    .build(schema)
                    .unwrap_or_else(|e| panic!("{name}.schema.json does not compile: {e}"));
                (name.clone(), validator)
            })
            .collect();
        Schemas { validators }
    }

    fn validator(&self, event: &str) -> &jsonschema::Validator {
        self.validators
            .get(event)
            .unwrap_or_else(|| panic!("no json/{event}.schema.json"))
    }

    fn errors(&self, event: &str, instance: &Value) -> Vec<String> {
        self.validator(event)
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }
}

// ------------------------------------------------------------------------------------------
// Valid fixtures
// ------------------------------------------------------------------------------------------

/// Checks one valid fixture against the Rust type `T`, or rewrites its `.msgpack` twin when
/// `update` is set.
fn check_fixture<T: Contract>(json_path: &Path, update: bool) -> Result<(), String> {
    let json_bytes = fs::read(json_path).map_err(|e| e.to_string())?;
    let json: Value = serde_json::from_slice(&json_bytes).map_err(|e| e.to_string())?;
    let from_json =
        T::read(&json_bytes, Encoding::Json).map_err(|e| format!("JSON does not decode: {e}"))?;
    // Canonical: the JSON is exactly what Threadline would write (defaults spelled out,
    // absent options left out), so another language can compare plain maps with it.
    let written = serde_json::to_value(&from_json).map_err(|e| e.to_string())?;
    if written != json {
        return Err(format!(
            "the JSON is not in canonical form; Threadline writes it as\n{}",
            serde_json::to_string_pretty(&written).unwrap_or_default()
        ));
    }
    let ours = encode(&from_json);
    let msgpack_path = json_path.with_extension("msgpack");
    if update {
        return fs::write(&msgpack_path, &ours).map_err(|e| e.to_string());
    }
    let theirs = fs::read(&msgpack_path).map_err(|e| {
        format!(
            "{}: {e} (regenerate with UPDATE_FIXTURES=1)",
            msgpack_path.display()
        )
    })?;
    let from_msgpack = T::read(&theirs, Encoding::MessagePack)
        .map_err(|e| format!("MessagePack twin does not decode: {e}"))?;
    if from_msgpack != from_json {
        return Err(format!(
            "MessagePack twin decodes to\n{from_msgpack:#?}\nbut the JSON to\n{from_json:#?}"
        ));
    }
    if encode(&from_msgpack) != theirs || ours != theirs {
        return Err(
            "re-encoding does not reproduce the MessagePack twin byte for byte \
             (regenerate with UPDATE_FIXTURES=1 if the JSON changed on purpose)"
                .into(),
        );
    }
    // What a publisher in another language sees: a map with string keys equal to the JSON.
    if !matches!(theirs.first(), Some(0x80..=0x8f | 0xde | 0xdf)) {
        return Err("the MessagePack twin is not a map".into());
    }
    let generic: Value = rmp_serde::from_slice(&theirs).map_err(|e| e.to_string())?;
    if generic != json {
        return Err(format!(
            "the MessagePack twin read as a plain map differs from the JSON: {generic}"
        ));
    }
    Ok(())
}

#[test]
fn every_valid_fixture_matches_its_schema_and_round_trips_through_the_rust_type() {
    let schemas = Schemas::load();
    let update = updating();
    let mut failures = Vec::new();
    let mut checked = 0;
    for event in events() {
        for path in fixtures_of(event.name) {
            let errors = schemas.errors(event.name, &read_json(&path));
            if !errors.is_empty() {
                failures.push(format!(
                    "{}: rejected by json/{}.schema.json: {errors:?}",
                    file_name(&path),
                    event.name
                ));
            }
            if let Err(problem) = (event.check_fixture)(&path, update) {
                failures.push(format!(
                    "{} ({}): {problem}",
                    file_name(&path),
                    event.rust_type
                ));
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(checked >= events().len(), "only {checked} fixtures checked");
}

#[test]
fn every_msgpack_fixture_has_a_json_twin() {
    for path in files_in(&fixture_dir(), "msgpack") {
        assert!(
            path.with_extension("json").is_file(),
            "{} has no .json twin; the JSON is the source, the MessagePack is generated",
            file_name(&path)
        );
    }
}

// ------------------------------------------------------------------------------------------
// Invalid fixtures
// ------------------------------------------------------------------------------------------

#[derive(Debug, serde::Deserialize)]
struct InvalidCase {
    file: String,
    event: String,
    code: String,
    /// The `event_id` the rejection carries (`null`: unreadable, so no `tl.out.rejected`).
    event_id: Option<String>,
    /// Whether the JSON Schema rejects it too; `null` for bytes that are not JSON.
    schema_rejects: Option<bool>,
    #[allow(dead_code)]
    why: String,
}

fn manifest() -> Vec<InvalidCase> {
    let path = fixture_dir().join("invalid").join("manifest.json");
    serde_json::from_value(read_json(&path))
        .expect("invalid/manifest.json: [{file, event, code, event_id, schema_rejects, why}]")
}

#[test]
fn every_invalid_fixture_is_rejected_with_its_documented_code() {
    let schemas = Schemas::load();
    let dir = fixture_dir().join("invalid");
    let cases = manifest();
    let mut failures = Vec::new();
    for case in &cases {
        let event = event(&case.event);
        assert!(
            event.checked,
            "{}: `{}` is an outbound event; Threadline rejects nothing of it",
            case.file, case.event
        );
        let path = dir.join(&case.file);
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut attempts = Vec::new();
        if case.file.ends_with(".json") {
            let json: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", case.file));
            // The same event published as MessagePack must be refused the same way.
            let transcoded = rmp_serde::to_vec_named(&json).expect("JSON transcodes");
            attempts.push(("JSON", (event.read)(&bytes, Encoding::Json)));
            attempts.push((
                "MessagePack",
                (event.read)(&transcoded, Encoding::MessagePack),
            ));
            let schema_rejects = !schemas.validator(&case.event).is_valid(&json);
            if Some(schema_rejects) != case.schema_rejects {
                failures.push(format!(
                    "{}: the schema {} it, the manifest says schema_rejects: {:?}",
                    case.file,
                    if schema_rejects { "rejects" } else { "accepts" },
                    case.schema_rejects
                ));
            }
        } else {
            assert_eq!(
                case.schema_rejects, None,
                "{}: not JSON, so schema_rejects must be null",
                case.file
            );
            attempts.push(("MessagePack", (event.read)(&bytes, Encoding::MessagePack)));
        }
        for (encoding, result) in attempts {
            match result {
                Ok(()) => failures.push(format!("{} ({encoding}): accepted", case.file)),
                Err(e) if e.code.as_str() != case.code || e.event_id != case.event_id => failures
                    .push(format!(
                        "{} ({encoding}): rejected as {} with event_id {:?}, expected {} with {:?} ({})",
                        case.file, e.code, e.event_id, case.code, case.event_id, e.message
                    )),
                Err(_) => {}
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let listed: BTreeSet<&str> = cases.iter().map(|c| c.file.as_str()).collect();
    let mut on_disk: Vec<PathBuf> = files_in(&dir, "json");
    on_disk.extend(files_in(&dir, "msgpack"));
    for path in on_disk {
        let name = file_name(&path);
        assert!(
            name == "manifest.json" || listed.contains(name),
            "invalid/{name} is not in invalid/manifest.json"
        );
    }
    for code in ["malformed", "invalid_event", "unsupported_version"] {
        assert!(
            cases.iter().any(|c| c.code == code),
            "no invalid fixture for `{code}`"
        );
    }
}

// ------------------------------------------------------------------------------------------
// Schema and decoder agree on mutations of every fixture
// ------------------------------------------------------------------------------------------

/// A JSON path: object keys and array indexes.
type JsonPath = Vec<Step>;

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn paths(value: &Value, prefix: &JsonPath, out: &mut Vec<JsonPath>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let mut path = prefix.clone();
                path.push(Step::Key(key.clone()));
                out.push(path.clone());
                paths(child, &path, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let mut path = prefix.clone();
                path.push(Step::Index(i));
                out.push(path.clone());
                paths(child, &path, out);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

fn at<'v>(value: &'v mut Value, path: &[Step]) -> Option<&'v mut Value> {
    path.iter().try_fold(value, |v, step| match step {
        Step::Key(k) => v.get_mut(k.as_str()),
        Step::Index(i) => v.get_mut(*i),
    })
}

fn render(path: &[Step]) -> String {
    path.iter()
        .map(|s| match s {
            Step::Key(k) => format!(".{k}"),
            Step::Index(i) => format!("[{i}]"),
        })
        .collect()
}

/// A change to one place of a valid fixture.
#[derive(Debug, Clone)]
enum Mutation {
    Remove,
    Replace(Value),
    /// Appends to a string value (the characters the id rules forbid).
    Append(&'static str),
}

fn mutations(current: &Value, checked: bool) -> Vec<(String, Mutation)> {
    let mut all = vec![
        ("remove".to_owned(), Mutation::Remove),
        ("null".to_owned(), Mutation::Replace(Value::Null)),
        ("12345".to_owned(), Mutation::Replace(12345.into())),
        ("-1".to_owned(), Mutation::Replace((-1).into())),
        ("true".to_owned(), Mutation::Replace(true.into())),
        ("{}".to_owned(), Mutation::Replace(serde_json::json!({}))),
        ("[]".to_owned(), Mutation::Replace(serde_json::json!([]))),
    ];
    // Outbound types are not validated on decode (Threadline validated what it emits), so
    // only type-level mutations are compared for them.
    if checked {
        all.push(("\"\"".to_owned(), Mutation::Replace("".into())));
        let long = |n: usize| Value::String("a".repeat(n));
        all.push(("300 chars".to_owned(), Mutation::Replace(long(300))));
        all.push(("600 chars".to_owned(), Mutation::Replace(long(600))));
        if current.is_string() {
            for suffix in [".", " ", "*", "\u{7}", "\u{2028}"] {
                all.push((format!("append {suffix:?}"), Mutation::Append(suffix)));
            }
        }
    }
    all
}

fn apply(fixture: &Value, path: &[Step], mutation: &Mutation) -> Option<Value> {
    let mut value = fixture.clone();
    let (last, parent_path) = path.split_last()?;
    match mutation {
        Mutation::Remove => {
            // Removing from an array is a different array, not a missing field.
            let Step::Key(key) = last else { return None };
            at(&mut value, parent_path)?.as_object_mut()?.remove(key);
        }
        Mutation::Replace(new) => *at(&mut value, path)? = new.clone(),
        Mutation::Append(suffix) => {
            let Value::String(s) = at(&mut value, path)? else {
                return None;
            };
            s.push_str(suffix);
        }
    }
    Some(value)
}

/// Differences the schema cannot express, on purpose. Keep this list short and explained.
fn known_gap(event: &Event, path: &[Step]) -> bool {
    // Outbound `v`: the schema documents v1 (`const: 1`); the Rust types accept any u32 and
    // leave the version check to the consumer.
    !event.checked && matches!(path, [Step::Key(k)] if k == "v")
}

#[test]
fn schema_and_decoder_agree_on_every_mutation_of_every_fixture() {
    let schemas = Schemas::load();
    let mut disagreements = Vec::new();
    let mut compared = 0usize;
    for event in events() {
        for fixture_path in fixtures_of(event.name) {
            let fixture = read_json(&fixture_path);
            let mut all_paths = Vec::new();
            paths(&fixture, &Vec::new(), &mut all_paths);
            for path in all_paths {
                if known_gap(&event, &path) {
                    continue;
                }
                let current = {
                    let mut copy = fixture.clone();
                    at(&mut copy, &path).cloned().unwrap_or(Value::Null)
                };
                for (label, mutation) in mutations(&current, event.checked) {
                    let Some(mutated) = apply(&fixture, &path, &mutation) else {
                        continue;
                    };
                    let json = serde_json::to_vec(&mutated).expect("serialises");
                    let by_json = (event.read)(&json, Encoding::Json);
                    let schema_ok = schemas.validator(event.name).is_valid(&mutated);
                    compared += 1;
                    if schema_ok != by_json.is_ok() {
                        disagreements.push(format!(
                            "{} {} ({label}): schema {}, Rust {}",
                            file_name(&fixture_path),
                            render(&path),
                            if schema_ok { "accepts" } else { "rejects" },
                            match &by_json {
                                Ok(()) => "accepts".to_owned(),
                                Err(e) => format!("rejects ({e})"),
                            }
                        ));
                    }
                    // The encoding must not change the verdict or the rejection code.
                    let msgpack = rmp_serde::to_vec_named(&mutated).expect("transcodes");
                    let by_msgpack = (event.read)(&msgpack, Encoding::MessagePack);
                    let code = |r: &Result<(), DecodeError>| r.as_ref().err().map(|e| e.code);
                    if code(&by_json) != code(&by_msgpack) {
                        disagreements.push(format!(
                            "{} {} ({label}): JSON gives {:?}, MessagePack {:?}",
                            file_name(&fixture_path),
                            render(&path),
                            by_json,
                            by_msgpack
                        ));
                    }
                }
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    assert!(compared > 1000, "only {compared} mutations compared");
}

// ------------------------------------------------------------------------------------------
// Completeness: every event has a schema and fixtures; every schema is a valid schema
// ------------------------------------------------------------------------------------------

/// Event types, read from the sources: every struct with a `pub v: u32` field is an event.
fn event_types_in_sources() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for path in files_in(&crate_dir().join("src"), "rs") {
        let source = fs::read_to_string(&path).expect("source readable");
        let mut current: Option<String> = None;
        for line in source.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("pub struct ") {
                current = rest.split([' ', '{', '<', '(']).next().map(str::to_owned);
            } else if line == "}" {
                current = None;
            } else if line == "pub v: u32," {
                if let Some(name) = &current {
                    found.insert(name.clone());
                }
            }
        }
    }
    found
}

#[test]
fn every_event_type_has_a_schema_and_fixtures() {
    let in_sources = event_types_in_sources();
    let in_table: BTreeSet<String> = events().iter().map(|e| e.rust_type.to_owned()).collect();
    assert_eq!(
        in_sources, in_table,
        "event types in src/ (structs with `pub v: u32`) differ from the contract table in \
         tests/contract.rs; a new event needs a row there, json/<name>.schema.json and fixtures"
    );

    let names: BTreeSet<&str> = events().iter().map(|e| e.name).collect();
    for event in events() {
        assert!(
            schema_dir()
                .join(format!("{}.schema.json", event.name))
                .is_file(),
            "{} has no json/{}.schema.json",
            event.rust_type,
            event.name
        );
        assert!(
            !fixtures_of(event.name).is_empty(),
            "{} has no fixtures/{}[.<case>].json",
            event.rust_type,
            event.name
        );
    }
    for path in files_in(&schema_dir(), "json") {
        let name = file_name(&path).trim_end_matches(".schema.json");
        assert!(
            name == "common" || names.contains(name),
            "json/{} belongs to no event in the contract table",
            file_name(&path)
        );
    }
    for path in files_in(&fixture_dir(), "json") {
        assert!(
            names.contains(event_of(&path)),
            "fixtures/{} belongs to no event (name it <event>[.<case>].json)",
            file_name(&path)
        );
    }
}

#[test]
fn every_schema_is_a_valid_draft_2020_12_schema_that_ignores_unknown_fields() {
    for path in files_in(&schema_dir(), "json") {
        let name = file_name(&path);
        let schema = read_json(&path);
        if let Err(e) = jsonschema::meta::validate(&schema) {
            panic!("json/{name} is not a valid JSON Schema: {e}");
        }
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "json/{name}: `$schema` must be draft 2020-12"
        );
        let id = schema["$id"].as_str().unwrap_or_default();
        assert!(
            id.ends_with(&format!("/{name}")),
            "json/{name}: `$id` {id:?} must end with the file name so relative `$ref`s resolve"
        );
        assert!(
            schema["description"].is_string(),
            "json/{name}: needs a description"
        );
        if name != "common.schema.json" {
            assert_eq!(
                schema["additionalProperties"], true,
                "json/{name}: unknown fields are ignored by contract"
            );
        }
        forbid_closed_objects(name, &schema);
    }
}

/// Unknown fields are ignored everywhere, nested objects included.
fn forbid_closed_objects(file: &str, schema: &Value) {
    match schema {
        Value::Object(map) => {
            for key in ["additionalProperties", "unevaluatedProperties"] {
                assert!(
                    map.get(key) != Some(&Value::Bool(false)),
                    "json/{file}: `{key}: false` contradicts the contract"
                );
            }
            map.values().for_each(|v| forbid_closed_objects(file, v));
        }
        Value::Array(items) => items.iter().for_each(|v| forbid_closed_objects(file, v)),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

/// Every property a schema declares occurs in some fixture, so the mutation test above
/// exercises it (a misspelt property name in a schema would otherwise pass unnoticed).
#[test]
fn every_declared_property_is_exercised_by_a_fixture() {
    fn declared(schema: &Value, out: &mut BTreeSet<String>) {
        match schema {
            Value::Object(map) => {
                if let Some(Value::Object(props)) = map.get("properties") {
                    out.extend(props.keys().cloned());
                }
                map.values().for_each(|v| declared(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| declared(v, out)),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
        }
    }
    fn used(value: &Value, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    out.insert(key.clone());
                    // Metadata contents are the publisher's, not the contract's.
                    if key != "metadata" {
                        used(child, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| used(v, out)),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
        }
    }
    let mut everywhere = BTreeSet::new();
    for event in events() {
        let mut in_fixtures = BTreeSet::new();
        for path in fixtures_of(event.name) {
            used(&read_json(&path), &mut in_fixtures);
        }
        let mut in_schema = BTreeSet::new();
        declared(
            &read_json(&schema_dir().join(format!("{}.schema.json", event.name))),
            &mut in_schema,
        );
        let missing: Vec<_> = in_schema.difference(&in_fixtures).collect();
        assert!(
            missing.is_empty(),
            "json/{}.schema.json declares {missing:?}, which no fixtures/{}*.json uses",
            event.name,
            event.name
        );
        everywhere.extend(in_fixtures);
    }
    let mut in_common = BTreeSet::new();
    declared(
        &read_json(&schema_dir().join("common.schema.json")),
        &mut in_common,
    );
    let missing: Vec<_> = in_common.difference(&everywhere).collect();
    assert!(
        missing.is_empty(),
        "json/common.schema.json declares {missing:?}, which no fixture uses"
    );
}
