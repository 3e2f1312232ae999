//! The API over real TLS with a real HTTP client: authentication, the OpenAPI document
//! against the router and the response bodies, errors, events.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::lifecycle::Backoff;
use crate::runtime::{Engine, EngineConfig};
use crate::sim::SimConfig;

struct Server {
    base: String,
    client: reqwest::Client,
    token: String,
    _engine: Engine,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.power_poll_interval = Duration::from_millis(5);
    config.power_sync_interval = Duration::ZERO;
    config.policy.backoff = Backoff {
        base: Duration::from_millis(50),
        max: Duration::from_millis(100),
    };
    let lab = SimLab::new(SimConfig {
        bmc_latency_ms: 0,
        boot_latency_ms: 2,
        agent_latency_ms: 1,
        ..SimConfig::default()
    })
    .unwrap();
    let engine = Engine::open(config, lab.drivers()).await.unwrap();
    let token = "test-token-0123456789".to_owned();
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls =
        TlsMaterial::issue(&dir.path().join("tls"), &tls::certificate_names(addr, &[])).unwrap();
    let state = AppState {
        engine: engine.handle(),
        sim: Some(lab),
    };
    let task = tokio::spawn(serve(
        listener,
        tls.server.clone(),
        router(state, ApiToken::new(&token)),
    ));
    let ca = reqwest::Certificate::from_pem(tls.trust_pem.as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    Server {
        base: format!("https://127.0.0.1:{}", addr.port()),
        client,
        token,
        _engine: engine,
        task,
        _dir: dir,
    }
}

impl Server {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn wait_state(&self, name: &str, state: &str) -> Value {
        for _ in 0..2000 {
            let (_, host) = self.get(&format!("/v1/hosts/{name}")).await;
            if host["status"]["state"] == state && host["status"]["activity"]["kind"] == "idle" {
                return host;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{name} never became {state}");
    }
}

fn enroll_body(name: &str, n: u8) -> Value {
    json!({
        "name": name,
        "bmc": {"address": format!("sim://{name}"), "username": "admin", "password": "pw-secret"},
        "bootMACAddress": format!("52:54:00:00:02:{n:02x}"),
    })
}

#[tokio::test]
async fn everything_but_health_and_the_document_needs_the_token() {
    let server = start().await;
    let plain = |path: &str| server.client.get(format!("{}{path}", server.base));
    assert_eq!(plain("/healthz").send().await.unwrap().status(), 200);
    assert_eq!(plain("/openapi.json").send().await.unwrap().status(), 200);
    for path in ["/v1/hosts", "/metrics", "/v1/summary", "/v1/events"] {
        let response = plain(path).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert!(response.headers().contains_key("www-authenticate"));
        let wrong = plain(path)
            .bearer_auth("test-token-0123456788")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
    }
    let body: Value = plain("/v1/hosts")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn a_host_goes_through_the_api_from_enrolment_to_deletion() {
    let server = start().await;
    let (status, host) = server.post("/v1/hosts", enroll_body("web-1", 1)).await;
    assert_eq!(status, 201, "{host}");
    assert_eq!(host["status"]["state"], "registering");
    assert_eq!(host["bmcUsername"], "admin");
    assert!(
        !host.to_string().contains("pw-secret"),
        "the password came back"
    );
    let host = server.wait_state("web-1", "available").await;
    assert_eq!(host["status"]["hasHardware"], true);
    let (status, hardware) = server.get("/v1/hosts/web-1/hardware").await;
    assert_eq!(status, 200);
    assert_eq!(hardware["cpu"]["arch"], "x86_64");
    let (status, _) = server
        .post(
            "/v1/hosts/web-1/actions/provision",
            json!({"image": {"url": "http://images.invalid/os.qcow2", "checksum": "00", "checksumType": "auto"}, "userData": "#cloud-config", "metaData": "{\"role\": \"web\"}"}),
        )
        .await;
    assert_eq!(status, 202);
    server.wait_state("web-1", "provisioned").await;
    let (_, timeline) = server.get("/v1/hosts/web-1/timeline").await;
    let entries = timeline["entries"].as_array().unwrap();
    assert!(entries.iter().any(|e| e["type"] == "stepSucceeded"
        && e["step"] == "deploy"
        && e["durationMs"].is_u64()));
    // Reading after a sequence number gives what follows it (more may have been committed
    // since the first read).
    let after = entries[entries.len() - 3]["seq"].as_u64().unwrap();
    let (_, later) = server
        .get(&format!("/v1/hosts/web-1/timeline?after={after}"))
        .await;
    let later = later["entries"].as_array().unwrap();
    assert_eq!(later[..2], entries[entries.len() - 2..]);
    let (status, _) = server
        .post("/v1/hosts/web-1/actions/reboot", json!({"mode": "hard"}))
        .await;
    assert_eq!(status, 202);
    let (status, _) = server
        .call(reqwest::Method::DELETE, "/v1/hosts/web-1", None)
        .await;
    assert_eq!(status, 202);
    for _ in 0..2000 {
        if server.get("/v1/hosts/web-1").await.0 == 404 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the host was never deleted");
}

#[tokio::test]
async fn errors_are_json_with_the_right_status() {
    let server = start().await;
    assert_eq!(
        server.post("/v1/hosts", enroll_body("db-1", 1)).await.0,
        201
    );
    let (status, body) = server.post("/v1/hosts", enroll_body("db-1", 2)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("exists"))
    );
    let (status, body) = server.post("/v1/hosts", json!({"name": "x", "bmc": {"address": "sim://x", "username": "u", "password": "p"}, "bootMACAddress": "52:54:00:00:02:09", "color": "red"})).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("color"),
        "{body}"
    );
    let (status, body) = server
        .post(
            "/v1/hosts",
            json!({"name": "x", "bootMACAddress": "not-a-mac"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let response = server
        .client
        .post(format!("{}/v1/hosts", server.base))
        .bearer_auth(&server.token)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let (status, body) = server.get("/v1/hosts/nobody").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not-found"))
    );
    let (status, body) = server
        .post("/v1/hosts/db-1/actions/reboot", json!({}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("rejected")),
        "{body}"
    );
    let (status, _) = server
        .post("/v1/hosts/db-1/actions/levitate", json!({}))
        .await;
    assert_eq!(status, 404);
    let (status, body) = server
        .post(
            "/v1/hosts/db-1/actions/provision",
            json!({"image": {"url": "http://i/x"}, "metaData": "[1]"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server
        .call(
            reqwest::Method::PATCH,
            "/v1/hosts/db-1",
            Some(json!({"bmc": {"username": "only"}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = server.get("/v1/no/such/path").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn credentials_can_be_changed_and_are_never_shown() {
    let server = start().await;
    assert_eq!(
        server
            .put_faults("bad-1", json!({"bmcPassword": "right"}))
            .await,
        204
    );
    assert_eq!(
        server.post("/v1/hosts", enroll_body("bad-1", 3)).await.0,
        201
    );
    let mut host = Value::Null;
    for _ in 0..1000 {
        host = server.get("/v1/hosts/bad-1").await.1;
        if host["status"]["error"]["type"] == "registration error" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(host["status"]["operationalStatus"], "error");
    assert!(
        host["status"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rejected the credentials")
    );
    let (status, body) = server
        .call(
            reqwest::Method::PATCH,
            "/v1/hosts/bad-1",
            Some(json!({"bmc": {"username": "admin", "password": "right"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.to_string().contains("right"));
    server.wait_state("bad-1", "available").await;
}

impl Server {
    async fn put_faults(&self, machine: &str, faults: Value) -> u16 {
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/sim/machines/{machine}/faults"),
            Some(faults),
        )
        .await
        .0
    }
}

#[tokio::test]
async fn events_stream_the_timeline() {
    let server = start().await;
    let response = server
        .client
        .get(format!("{}/v1/events?host=ev-1", server.base))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(
        server.post("/v1/hosts", enroll_body("ev-1", 4)).await.0,
        201
    );
    assert_eq!(
        server.post("/v1/hosts", enroll_body("ev-2", 5)).await.0,
        201
    );
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    use futures::StreamExt;
    while !text.contains("\"to\":\"available\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: timeline"));
    assert!(text.contains("\"type\":\"enrolled\""));
    assert!(
        !text.contains("ev-2"),
        "events of another host leaked into the filter"
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let server = start().await;
    assert_eq!(server.post("/v1/hosts", enroll_body("m-1", 6)).await.0, 201);
    server.wait_state("m-1", "available").await;
    let (status, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let text = text.as_str().unwrap().to_owned();
    assert!(
        text.contains("rivet_hosts{state=\"available\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("rivet_step_duration_seconds_count{step=\"inspect-in-band\"} 1"),
        "{text}"
    );
    assert!(text.contains("rivet_commits_total"));
}

// ---------------------------------------------------------------- the OpenAPI document

/// A small JSON Schema checker for the subset the document uses.
fn check(doc: &Value, schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.trim_start_matches("#/components/schemas/");
        let target = &doc["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("{path}: dangling $ref {reference}"));
        }
        return check(doc, target, value, path);
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let fits = |kind: &str| match kind {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_u64() || value.is_i64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        };
        if !types.iter().any(|kind| fits(kind)) {
            return Err(format!("{path}: {value} is not {types:?}"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!("{path}: {value} is not one of {allowed:?}"));
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = required.as_str().unwrap_or_default();
            if !object.contains_key(key) {
                return Err(format!("{path}: required `{key}` missing"));
            }
        }
        for (key, item) in object {
            let item_path = format!("{path}.{key}");
            match properties.and_then(|p| p.get(key)) {
                Some(property) => check(doc, property, item, &item_path)?,
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return Err(format!("{item_path}: not in the schema"));
                    }
                    Some(extra @ Value::Object(_)) => check(doc, extra, item, &item_path)?,
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (index, item) in array.iter().enumerate() {
            check(doc, items, item, &format!("{path}[{index}]"))?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn every_documented_operation_is_served_and_answers_as_documented() {
    let server = start().await;
    let doc = openapi::document();
    assert_eq!(server.get("/openapi.json").await.1, doc);
    assert_eq!(
        server.post("/v1/hosts", enroll_body("doc-1", 7)).await.0,
        201
    );
    server.wait_state("doc-1", "available").await;
    let bodies = json!({
        "EnrollRequest": enroll_body("doc-2", 8),
        "UpdateRequest": {"online": true, "description": "rack 4"},
        "ProvisionRequest": {"image": {"url": "http://images.invalid/os.qcow2"}},
        "PowerRequest": {"on": true},
        "RebootRequest": {"mode": "soft"},
        "AdoptRequest": {},
        "DetachRequest": {"force": false},
        "Faults": {},
    });
    let mut checked = 0;
    let paths = doc["paths"].as_object().unwrap();
    // Deleting last, so the host exists for everything else.
    let mut operations: Vec<(String, String, Value)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .iter()
                .map(move |(m, op)| (path.clone(), m.clone(), op.clone()))
        })
        .collect();
    operations.sort_by_key(|(path, method, _)| {
        (
            method == "delete",
            path.contains("attach") || path.contains("detach"),
            path.clone(),
        )
    });
    for (path, method, operation) in operations {
        if path == "/v1/events" {
            continue; // A stream; covered by its own test.
        }
        let concrete = path.replace("{name}", "doc-1");
        let body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .map(|r| bodies[r.trim_start_matches("#/components/schemas/")].clone());
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let (status, value) = server.call(method.clone(), &concrete, body).await;
        assert!(
            value
                .get("error")
                .is_none_or(|e| e["message"] != "no such endpoint (see /openapi.json)")
                && status != 405,
            "{method} {concrete} is documented but not served ({status})"
        );
        let documented = &operation["responses"][status.to_string()];
        assert!(
            !documented.is_null(),
            "{method} {concrete} answered {status}, which is not documented: {value}"
        );
        if let Some(schema) = documented["content"]["application/json"]["schema"].as_object() {
            check(
                &doc,
                &Value::Object(schema.clone()),
                &value,
                &format!("{method} {concrete}"),
            )
            .unwrap_or_else(|err| panic!("{err}\nbody: {value:#}"));
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} operations checked");
}
