//! The official Elasticsearch API specification (`@elastic/request-converter` →
//! `dist/schema.json`), used by the fake server to check every request's method, path, query
//! parameters and body. A request the specification does not allow is answered with 400 and
//! recorded as a violation, which fails the test.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

/// S3 repository settings that Elasticsearch documents beyond the typed ones in the spec:
/// the client settings that 7.x accepted in repository settings (the reference's bodies).
pub const LEGACY_S3_SETTINGS: &[&str] = &[
    "endpoint",
    "protocol",
    "path_style_access",
    "region",
    "access_key",
    "secret_key",
    "session_token",
    "signer_override",
    "max_retries",
    "use_throttle_retries",
    "read_timeout",
    "disable_chunked_encoding",
];

/// The documented S3 repository settings (spec-typed ones plus [`LEGACY_S3_SETTINGS`]).
pub const DOCUMENTED_S3_SETTINGS: &[&str] = &[
    "bucket",
    "client",
    "base_path",
    "chunk_size",
    "compress",
    "server_side_encryption",
    "buffer_size",
    "canned_acl",
    "storage_class",
    "max_restore_bytes_per_sec",
    "max_snapshot_bytes_per_sec",
    "readonly",
    "delete_objects_max_size",
    "get_register_retry_delay",
    "max_multipart_parts",
    "max_multipart_upload_cleanup_size",
    "throttled_delete_retry.delay_increment",
    "throttled_delete_retry.maximum_delay",
    "throttled_delete_retry.maximum_number_of_retries",
];

pub struct Endpoint {
    pub name: String,
    methods: Vec<String>,
    segments: Vec<String>,
    request: (String, String),
}

pub struct Spec {
    endpoints: Vec<Endpoint>,
    types: HashMap<(String, String), Value>,
}

pub fn schema_path() -> PathBuf {
    if let Some(p) = std::env::var_os("ES_SCHEMA_JSON") {
        return PathBuf::from(p);
    }
    crate::workspace_root().join(".tools/npm/node_modules/@elastic/request-converter/dist/schema.json")
}

pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = schema_path();
        let text = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read the Elasticsearch spec {} ({e}): run tests/install-tools.sh",
                path.display()
            )
        });
        Spec::load(serde_json::from_slice(&text).expect("schema.json is JSON"))
    })
}

fn type_key(v: &Value) -> (String, String) {
    (
        v["namespace"].as_str().unwrap_or_default().to_string(),
        v["name"].as_str().unwrap_or_default().to_string(),
    )
}

impl Spec {
    fn load(mut root: Value) -> Spec {
        assert_eq!(
            root["_info"]["title"], "Elasticsearch Request & Response Specification",
            "unexpected schema.json"
        );
        let mut types = HashMap::new();
        for t in root["types"].as_array_mut().expect("types").drain(..) {
            types.insert(type_key(&t["name"]), t);
        }
        let mut endpoints = Vec::new();
        for e in root["endpoints"].as_array().expect("endpoints") {
            let request = type_key(&e["request"]);
            for url in e["urls"].as_array().into_iter().flatten() {
                endpoints.push(Endpoint {
                    name: e["name"].as_str().unwrap_or_default().to_string(),
                    methods: url["methods"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|m| m.as_str().map(str::to_string))
                        .collect(),
                    segments: url["path"]
                        .as_str()
                        .unwrap_or("/")
                        .split('/')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                    request: request.clone(),
                });
            }
        }
        assert!(endpoints.len() > 500, "the spec lists too few endpoints");
        Spec { endpoints, types }
    }

    /// The endpoint for a method and decoded path segments: the template with the most
    /// literal segments wins (`/_snapshot/{r}/_verify` over `/_snapshot/{r}/{snapshot}`).
    pub fn endpoint(&self, method: &str, segments: &[String]) -> Option<&Endpoint> {
        self.endpoints
            .iter()
            .filter(|e| e.methods.iter().any(|m| m == method) && e.segments.len() == segments.len())
            .filter(|e| {
                e.segments
                    .iter()
                    .zip(segments)
                    .all(|(t, s)| if t.starts_with('{') { !s.is_empty() } else { t == s })
            })
            .max_by_key(|e| e.segments.iter().filter(|t| !t.starts_with('{')).count())
    }

    /// Checks one request; `Err` says what the spec does not allow.
    pub fn check(
        &self,
        method: &str,
        segments: &[String],
        query: &[String],
        body: Option<&Value>,
    ) -> Result<String, String> {
        let path = format!("/{}", segments.join("/"));
        let endpoint = self
            .endpoint(method, segments)
            .ok_or_else(|| format!("{method} {path}: no such endpoint in the Elasticsearch spec"))?;
        let request = self
            .types
            .get(&endpoint.request)
            .ok_or_else(|| format!("{}: request type missing from the spec", endpoint.name))?;
        let mut allowed: HashSet<String> = request["query"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|q| q["name"].as_str().map(str::to_string))
            .collect();
        for behavior in request["attachedBehaviors"].as_array().into_iter().flatten() {
            if let Some(t) = self
                .types
                .get(&("_spec_utils".to_string(), behavior.as_str().unwrap_or("").to_string()))
            {
                allowed.extend(
                    t["properties"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p["name"].as_str().map(str::to_string)),
                );
            }
        }
        for q in query {
            if !allowed.contains(q) {
                return Err(format!(
                    "{method} {path} ({}): query parameter {q:?} is not in the spec",
                    endpoint.name
                ));
            }
        }
        let mut errors = Vec::new();
        match (request["body"]["kind"].as_str(), body) {
            (_, None) => {
                // A required body that is missing.
                if request.get("body").is_some_and(|b| b["kind"] != "no_body") && self.body_required(&endpoint.name) {
                    errors.push("the request body is required".to_string());
                }
            }
            (Some("no_body") | None, Some(_)) => errors.push("this endpoint takes no body".into()),
            (Some("properties"), Some(b)) => self.check_properties(
                b,
                request["body"]["properties"].as_array().unwrap(),
                &[],
                "",
                &mut errors,
            ),
            (Some("value"), Some(b)) => self.check_type(b, &request["body"]["value"], "", &mut errors),
            (Some(other), Some(_)) => errors.push(format!("unknown body kind {other}")),
        }
        if errors.is_empty() {
            Ok(endpoint.name.clone())
        } else {
            Err(format!("{method} {path} ({}): {}", endpoint.name, errors.join("; ")))
        }
    }

    fn body_required(&self, name: &str) -> bool {
        matches!(name, "snapshot.create_repository" | "slm.put_lifecycle")
    }

    fn check_properties(&self, v: &Value, props: &[Value], extra: &[&str], at: &str, errors: &mut Vec<String>) {
        let Some(obj) = v.as_object() else {
            errors.push(format!("{}: expected an object, got {v}", show(at)));
            return;
        };
        for (k, val) in obj {
            let here = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
            match props.iter().find(|p| p["name"] == k.as_str()) {
                Some(p) => self.check_type(val, &p["type"], &here, errors),
                None if extra.contains(&k.as_str()) => {
                    if !(val.is_string() || val.is_boolean() || val.is_number()) {
                        errors.push(format!("{here}: expected a scalar"));
                    }
                }
                None => errors.push(format!("{here}: unknown field [{k}]")),
            }
        }
        for p in props {
            if p["required"] == true && !obj.contains_key(p["name"].as_str().unwrap_or("")) {
                errors.push(format!(
                    "{}: required field [{}] is missing",
                    show(at),
                    p["name"].as_str().unwrap_or("")
                ));
            }
        }
    }

    /// All properties of an interface, inherited ones included; `None` when it accepts any key.
    fn interface_properties(&self, t: &Value) -> Option<Vec<Value>> {
        for b in t["behaviors"].as_array().into_iter().flatten() {
            if matches!(
                b["type"]["name"].as_str(),
                Some("AdditionalProperties" | "AdditionalProperty")
            ) {
                return None;
            }
        }
        let mut props: Vec<Value> = t["properties"].as_array().cloned().unwrap_or_default();
        if let Some(parent) = t.get("inherits") {
            if let Some(pt) = self.types.get(&type_key(&parent["type"])) {
                props.extend(self.interface_properties(pt)?);
            }
        }
        Some(props)
    }

    fn check_type(&self, v: &Value, ty: &Value, at: &str, errors: &mut Vec<String>) {
        match ty["kind"].as_str() {
            Some("instance_of") => {
                if ty["generics"].as_array().is_some_and(|g| !g.is_empty()) {
                    return;
                }
                let key = type_key(&ty["type"]);
                if key.0 == "_builtins" {
                    let ok = match key.1.as_str() {
                        "string" => v.is_string(),
                        "boolean" => v.is_boolean(),
                        "number" => v.is_number(),
                        "null" => v.is_null(),
                        _ => true,
                    };
                    if !ok {
                        errors.push(format!("{}: expected {}, got {v}", show(at), key.1));
                    }
                    return;
                }
                let Some(def) = self.types.get(&key) else { return };
                match def["kind"].as_str() {
                    Some("type_alias") => self.check_type(v, &def["type"], at, errors),
                    Some("enum") => {
                        let text = match v {
                            Value::String(s) => s.clone(),
                            Value::Bool(b) => b.to_string(),
                            _ => {
                                errors.push(format!("{}: expected one of enum {}", show(at), key.1));
                                return;
                            }
                        };
                        let ok = def["members"].as_array().into_iter().flatten().any(|m| {
                            m["name"] == text.as_str()
                                || m["aliases"]
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .any(|a| a == text.as_str())
                        });
                        if !ok {
                            errors.push(format!("{}: {text:?} is not a value of {}", show(at), key.1));
                        }
                    }
                    Some("interface") => {
                        if def["generics"].as_array().is_some_and(|g| !g.is_empty()) {
                            return;
                        }
                        let Some(props) = self.interface_properties(def) else {
                            if !v.is_object() {
                                errors.push(format!("{}: expected an object", show(at)));
                            }
                            return;
                        };
                        let extra: &[&str] = if key == ("snapshot._types".into(), "S3RepositorySettings".into()) {
                            if let Some(obj) = v.as_object() {
                                for k in obj.keys() {
                                    if !DOCUMENTED_S3_SETTINGS.contains(&k.as_str())
                                        && !LEGACY_S3_SETTINGS.contains(&k.as_str())
                                    {
                                        errors.push(format!("{at}.{k}: not a documented s3 repository setting"));
                                    }
                                }
                            }
                            LEGACY_S3_SETTINGS
                        } else {
                            &[]
                        };
                        self.check_properties(v, &props, extra, at, errors);
                    }
                    _ => {}
                }
            }
            Some("array_of") => match v.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.check_type(item, &ty["value"], &format!("{at}[{i}]"), errors);
                    }
                }
                None => errors.push(format!("{}: expected an array, got {v}", show(at))),
            },
            Some("union_of") => {
                let mut best: Option<Vec<String>> = None;
                for item in ty["items"].as_array().into_iter().flatten() {
                    let mut errs = Vec::new();
                    self.check_type(v, item, at, &mut errs);
                    if errs.is_empty() {
                        return;
                    }
                    if best.as_ref().is_none_or(|b| errs.len() < b.len()) {
                        best = Some(errs);
                    }
                }
                errors.extend(best.unwrap_or_default());
            }
            Some("dictionary_of") => match v.as_object() {
                Some(m) => {
                    for (k, item) in m {
                        self.check_type(item, &ty["value"], &format!("{at}.{k}"), errors);
                    }
                }
                None => errors.push(format!("{}: expected an object", show(at))),
            },
            Some("literal_value") if v != &ty["value"] => {
                errors.push(format!("{}: expected {}, got {v}", show(at), ty["value"]));
            }
            _ => {}
        }
    }
}

fn show(at: &str) -> &str {
    if at.is_empty() {
        "body"
    } else {
        at
    }
}
