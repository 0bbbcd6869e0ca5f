//! `api/openapi.yaml` against the live admin listener: every route the
//! router serves is in the spec and the other way round, every request
//! example is valid and accepted, and every status an operation declares is
//! produced, with a body of the declared shape.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::Value;

use crate::control::{token_and_geo, with_admin_token, ADMIN_TOKEN};
use crate::harness::{client, start_edge, start_origin, TestEdge};

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

pub(crate) fn spec() -> Value {
    serde_yaml::from_str(strata::admin::OPENAPI_YAML).expect("api/openapi.yaml is YAML")
}

/// `(path, method)` of every operation in the spec.
pub(crate) fn operations(spec: &Value) -> BTreeSet<(String, String)> {
    let paths = spec["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (path.clone(), m.to_string()))
        })
        .collect()
}

fn resolve<'a>(spec: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("local $ref");
            let target = spec
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling {reference}"));
            resolve(spec, target)
        }
        None => node,
    }
}

/// A validator for the JSON Schema subset the spec uses. Unknown keywords
/// fail, so the spec cannot lean on something this does not check;
/// `pattern` and `format` are read but not enforced (documentation only).
fn validate(spec: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(spec, schema);
    let object = schema
        .as_object()
        .ok_or(format!("{at}: schema is not an object"))?;
    for keyword in object.keys() {
        let known = [
            "type",
            "required",
            "properties",
            "additionalProperties",
            "items",
            "enum",
            "minItems",
            "minimum",
            "minLength",
            "oneOf",
            "pattern",
            "format",
            "description",
            "default",
        ];
        if !known.contains(&keyword.as_str()) {
            return Err(format!(
                "{at}: schema keyword {keyword:?} is not checked by this test"
            ));
        }
    }
    if let Some(kind) = schema.get("type").and_then(Value::as_str) {
        let ok = match kind {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_u64() || value.is_i64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            other => return Err(format!("{at}: unknown type {other}")),
        };
        if !ok {
            return Err(format!("{at}: {value} is not of type {kind}"));
        }
    }
    if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
        if !choices.contains(value) {
            return Err(format!("{at}: {value} is not one of {choices:?}"));
        }
    }
    if let (Some(min), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) {
        if n < min {
            return Err(format!("{at}: {n} < {min}"));
        }
    }
    if let (Some(min), Some(s)) = (
        schema.get("minLength").and_then(Value::as_u64),
        value.as_str(),
    ) {
        if (s.chars().count() as u64) < min {
            return Err(format!("{at}: shorter than {min}"));
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
            if (items.len() as u64) < min {
                return Err(format!("{at}: fewer than {min} items"));
            }
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate(spec, item_schema, item, &format!("{at}[{i}]"))?;
            }
        }
    }
    if let Some(fields) = value.as_object() {
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().expect("required names");
            if !fields.contains_key(name) {
                return Err(format!("{at}: missing required {name:?}"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, field) in fields {
            match properties.and_then(|p| p.get(name)) {
                Some(field_schema) => validate(spec, field_schema, field, &format!("{at}.{name}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{at}: undeclared property {name:?}"))
                }
                None => {}
            }
        }
    }
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let passing = options
            .iter()
            .filter(|option| validate(spec, option, value, at).is_ok())
            .count();
        if passing != 1 {
            return Err(format!("{at}: matches {passing} of oneOf, not exactly 1"));
        }
    }
    Ok(())
}

/// One request to the admin listener and what it must produce.
struct Case {
    path: String,
    method: String,
    /// The concrete URL path (templates filled in).
    url: String,
    /// `true`: send the admin token.
    auth: bool,
    body: Option<String>,
    want: u16,
    /// The operation whose responses declare `want`, when `method` is one the
    /// path does not take.
    counted_as: Option<String>,
}

impl Case {
    fn new(path: &str, method: &str, want: u16) -> Case {
        Case {
            path: path.into(),
            method: method.into(),
            url: path.replace("{id}", "2026-11"),
            auth: true,
            body: None,
            want,
            counted_as: None,
        }
    }

    fn declared_method(&self) -> &str {
        self.counted_as.as_deref().unwrap_or(&self.method)
    }
}

async fn run(spec: &Value, edge: &TestEdge, case: &Case) -> Result<(), String> {
    let what = format!(
        "{} {} (want {})",
        case.method.to_uppercase(),
        case.url,
        case.want
    );
    let method = Method::from_bytes(case.method.to_uppercase().as_bytes()).expect("method");
    let mut request = client().request(method, format!("http://{}{}", edge.admin, case.url));
    if case.auth {
        request = request.bearer_auth(ADMIN_TOKEN);
    }
    if let Some(body) = &case.body {
        request = request
            .header("content-type", "application/json")
            .body(body.clone());
    }
    let response = request.send().await.map_err(|e| format!("{what}: {e}"))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.map_err(|e| format!("{what}: {e}"))?;
    if status != case.want {
        return Err(format!("{what}: got {status}: {text}"));
    }
    let operation = &spec["paths"][&case.path][case.declared_method()];
    let declared = operation["responses"]
        .get(status.to_string())
        .ok_or(format!("{what}: status {status} is not declared"))?;
    let declared = resolve(spec, declared);
    let Some(content) = declared.get("content").and_then(Value::as_object) else {
        return Ok(());
    };
    let media = content_type.split(';').next().unwrap_or("").trim();
    let schema = &content
        .get(media)
        .ok_or(format!("{what}: content type {media:?} not declared"))?["schema"];
    if media == "application/json" {
        let body: Value =
            serde_json::from_str(&text).map_err(|e| format!("{what}: not JSON: {e}"))?;
        validate(spec, schema, &body, "body").map_err(|e| format!("{what}: {e} in {body}"))?;
    }
    Ok(())
}

#[test]
fn every_served_route_is_in_the_spec_and_every_operation_is_served() {
    let spec = spec();
    assert_eq!(spec["openapi"], "3.1.0");
    let served: BTreeSet<(String, String)> = strata::admin::served_routes()
        .into_iter()
        .map(|(path, method)| (path.to_owned(), method.as_str().to_ascii_lowercase()))
        .collect();
    let declared = operations(&spec);
    let undocumented: Vec<_> = served.difference(&declared).collect();
    let unserved: Vec<_> = declared.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in api/openapi.yaml: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "in api/openapi.yaml but not served: {unserved:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_admin_listener_answers_as_the_spec_says() {
    let spec = spec();
    let origin = start_origin().await;
    let guarded = start_edge(&[origin.url()], "openapi-edge", token_and_geo).await;
    // No [geo], no [token]: the routes that change them have nothing to change.
    let bare = start_edge(&[origin.url()], "openapi-bare-edge", with_admin_token).await;
    // No admin token: read-only.
    let read_only = start_edge(&[origin.url()], "openapi-ro-edge", |_| {}).await;

    let served = client()
        .get(format!("http://{}/api/openapi.yaml", guarded.admin))
        .send()
        .await
        .expect("spec")
        .text()
        .await
        .expect("spec text");
    assert_eq!(
        served,
        strata::admin::OPENAPI_YAML,
        "the listener serves the spec in the repo"
    );

    let mut cases = Vec::new();
    let mut read_only_cases = Vec::new();
    let mut bare_cases = Vec::new();
    for (path, method) in operations(&spec) {
        let operation = &spec["paths"][&path][&method];
        let declares = |status: u16| operation["responses"].get(status.to_string()).is_some();
        let success = operation["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .find(|s| s.starts_with('2'))
            .expect("a success status")
            .parse()
            .expect("numeric");
        let example = operation
            .pointer("/requestBody/content/application~1json")
            .map(|content| {
                let example = &content["example"];
                validate(&spec, &content["schema"], example, "example").unwrap_or_else(|e| {
                    panic!("{method} {path}: the spec's example is invalid: {e}")
                });
                example.to_string()
            });
        let mut ok = Case::new(&path, &method, success);
        ok.body = example.clone();
        cases.push(ok);
        if declares(401) {
            let mut case = Case::new(&path, &method, 401);
            case.auth = false;
            cases.push(case);
        }
        if declares(403) {
            let mut case = Case::new(&path, &method, 403);
            case.body = example.clone();
            read_only_cases.push(case);
        }
        if declares(405) {
            cases.push(Case::new(&path, "patch", 405).counted_as(&method));
        }
        if declares(400) {
            let mut case = Case::new(&path, &method, 400);
            case.body = Some("{\"unexpected\": true}".into());
            cases.push(case);
        }
        if declares(413) {
            let mut case = Case::new(&path, &method, 413);
            case.body = Some(format!("{{\"pad\": \"{}\"}}", "x".repeat(70 * 1024)));
            cases.push(case);
        }
    }
    // Statuses that need a particular state or value.
    let mut with_body = |path: &str, method: &str, body: &str, want: u16| {
        let mut case = Case::new(path, method, want);
        case.body = Some(body.into());
        cases.push(case);
    };
    with_body("/api/purge", "post", r#"{"prefix": "live/"}"#, 422);
    with_body(
        "/api/geo/rules",
        "put",
        r#"{"rules": [{"prefix": "/", "deny": ["GBR"]}]}"#,
        422,
    );
    with_body(
        "/api/token/keys",
        "post",
        r#"{"id": "2026-12", "secret": "fedcba9876543210fedcba9876543210"}"#,
        409,
    );
    with_body(
        "/api/token/keys",
        "post",
        r#"{"id": "2027-01", "secret": "abc"}"#,
        422,
    );
    with_body(
        "/api/cache/ttl-overrides",
        "put",
        r#"{"overrides": [{"prefix": "x", "ttl": "1s"}]}"#,
        422,
    );
    let mut missing = Case::new("/api/token/keys/{id}", "delete", 404);
    missing.url = "/api/token/keys/no-such-key".into();
    cases.push(missing);
    // By now 2026-11 is retired (the success case) and 2026-12 is the only key.
    let mut last = Case::new("/api/token/keys/{id}", "delete", 409);
    last.url = "/api/token/keys/2026-12".into();
    cases.push(last);
    for (path, method) in [
        ("/api/geo/rules", "get"),
        ("/api/geo/rules", "put"),
        ("/api/token/keys", "get"),
    ] {
        let mut case = Case::new(path, method, 409);
        if method == "put" {
            case.body = Some(r#"{"rules": []}"#.into());
        }
        bare_cases.push(case);
    }

    let mut seen: BTreeMap<(String, String), BTreeSet<u16>> = BTreeMap::new();
    let mut failures = Vec::new();
    // Ordered so the key rotation works: add 2026-12 before retiring 2026-11.
    cases.sort_by_key(|c| {
        (
            c.path.contains("{id}"),
            c.want == 409 && c.method == "delete",
        )
    });
    for (edge, cases) in [
        (&guarded, &cases),
        (&bare, &bare_cases),
        (&read_only, &read_only_cases),
    ] {
        for case in cases.iter() {
            match run(&spec, edge, case).await {
                Ok(()) => {
                    seen.entry((case.path.clone(), case.declared_method().to_owned()))
                        .or_default()
                        .insert(case.want);
                }
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Every declared status was produced, except those needing a dying edge
    // or an unreachable fleet engine (fleet::edges_serve_through_a_nats_outage_… gets that 503).
    let exempt = [
        ("/readyz", "get", 503),
        ("/api/purge", "post", 503),
        ("/api/geo/rules", "put", 503),
        ("/api/token/keys", "post", 503),
        ("/api/token/keys/{id}", "delete", 503),
        ("/api/cache/ttl-overrides", "put", 503),
    ];
    for (path, method) in operations(&spec) {
        let declared = spec["paths"][&path][&method]["responses"]
            .as_object()
            .expect("responses");
        for status in declared.keys() {
            let status: u16 = status.parse().expect("numeric status");
            let produced = seen
                .get(&(path.clone(), method.clone()))
                .is_some_and(|s| s.contains(&status));
            let exempted = exempt.contains(&(path.as_str(), method.as_str(), status));
            assert!(
                produced || exempted,
                "{method} {path}: declared {status} never produced"
            );
        }
    }
}

impl Case {
    /// This request (with a method the path does not take) checked against
    /// the responses of the path's operation `method`.
    fn counted_as(mut self, method: &str) -> Case {
        self.counted_as = Some(method.into());
        self
    }
}
