//! The API's OpenAPI 3.1 document, served at `/openapi.json`. The tests check every path
//! in it against the running router and every response body against its schema.

use serde_json::{Value, json};

fn string() -> Value {
    json!({"type": "string"})
}

fn integer() -> Value {
    json!({"type": "integer", "minimum": 0})
}

fn boolean() -> Value {
    json!({"type": "boolean"})
}

fn timestamp() -> Value {
    json!({"type": "string", "format": "date-time"})
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn array(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

fn one_of_strings(values: &[&str]) -> Value {
    json!({"type": "string", "enum": values})
}

/// An object with exactly these properties, `required` among them.
fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties, "additionalProperties": false})
}

/// An object whose shape is documented elsewhere (the Metal³ types) or open-ended.
fn open_object(description: &str) -> Value {
    json!({"type": "object", "description": description})
}

const STATES: [&str; 11] = [
    "unmanaged",
    "registering",
    "inspecting",
    "preparing",
    "available",
    "provisioning",
    "provisioned",
    "externally provisioned",
    "deprovisioning",
    "powering off before delete",
    "deleting",
];
const OPERATIONAL: [&str; 5] = ["OK", "discovered", "error", "delayed", "detached"];
const ERROR_TYPES: [&str; 7] = [
    "provisioned registration error",
    "registration error",
    "inspection error",
    "preparation error",
    "provisioning error",
    "power management error",
    "detach error",
];
const OPERATIONS: [&str; 12] = [
    "register",
    "inspect",
    "prepare",
    "provision",
    "deprovision",
    "adopt",
    "power-on",
    "power-off",
    "reboot",
    "power-off-before-delete",
    "delete",
    "detach",
];
const STEPS: [&str; 13] = [
    "validate-bmc",
    "configure-agent-boot",
    "power-on",
    "power-off-soft",
    "power-off-hard",
    "await-agent",
    "inspect-in-band",
    "inspect-out-of-band",
    "clean",
    "deploy",
    "configure-disk-boot",
    "adopt-boot",
    "release-boot",
];

fn schemas() -> Value {
    let image = object(
        &["url"],
        json!({
            "url": string(),
            "checksum": string(),
            "checksumType": one_of_strings(&["md5", "sha256", "sha512", "auto"]),
            "format": one_of_strings(&["raw", "qcow2", "vdi", "vmdk", "live-iso"]),
        }),
    );
    let cleaning = object(
        &[],
        json!({
            "mode": one_of_strings(&["metadata", "erase", "disabled"]),
            "disks": array(string()),
        }),
    );
    let spec = object(
        &[
            "online",
            "bootMode",
            "cleaning",
            "externallyProvisioned",
            "inspectionMode",
            "inspectRequested",
            "adoptRequested",
            "deleting",
            "credentialsVersion",
        ],
        json!({
            "bmc": object(&["address", "disableCertificateVerification"], json!({"address": string(), "disableCertificateVerification": boolean()})),
            "bootMACAddress": string(),
            "bootMode": one_of_strings(&["UEFI", "UEFISecureBoot", "legacy"]),
            "online": boolean(),
            "image": reference("Image"),
            "rootDeviceHints": open_object("Metal³ rootDeviceHints"),
            "cleaning": reference("Cleaning"),
            "externallyProvisioned": boolean(),
            "inspectionMode": one_of_strings(&["agent", "out-of-band", "disabled"]),
            "description": string(),
            "architecture": string(),
            "detached": object(&["deleteAction", "force"], json!({"deleteAction": one_of_strings(&["delete", "delay"]), "force": boolean()})),
            "reboot": one_of_strings(&["soft", "hard"]),
            "inspectRequested": boolean(),
            "adoptRequested": boolean(),
            "deleting": boolean(),
            "credentialsVersion": integer(),
        }),
    );
    let metric = object(&[], json!({"start": timestamp(), "end": timestamp()}));
    let status = object(
        &[
            "state",
            "operationalStatus",
            "errorCount",
            "registered",
            "adopted",
            "detached",
            "hasHardware",
            "agent",
            "slot",
            "activity",
            "operationHistory",
            "lastUpdated",
            "timelineSeq",
            "dispatches",
        ],
        json!({
            "state": one_of_strings(&STATES),
            "operationalStatus": one_of_strings(&OPERATIONAL),
            "error": object(
                &["type", "message", "operation", "at", "retryAt"],
                json!({
                    "type": one_of_strings(&ERROR_TYPES),
                    "message": string(),
                    "operation": one_of_strings(&OPERATIONS),
                    "step": one_of_strings(&STEPS),
                    "at": timestamp(),
                    "retryAt": timestamp(),
                }),
            ),
            "errorCount": integer(),
            "poweredOn": boolean(),
            "image": reference("Image"),
            "registered": boolean(),
            "adopted": boolean(),
            "detached": boolean(),
            "hasHardware": boolean(),
            "architecture": string(),
            "agent": object(&["connected"], json!({"connected": boolean()})),
            "slot": boolean(),
            "activity": {
                "type": "object",
                "required": ["kind"],
                "properties": {"kind": one_of_strings(&["idle", "delayed", "running", "backoff"])},
                "description": "What the host is doing; `running` carries the operation's steps and the cursor into them."
            },
            "operationHistory": object(
                &["register", "inspect", "provision", "deprovision"],
                json!({"register": metric, "inspect": metric, "provision": metric, "deprovision": metric}),
            ),
            "lastUpdated": timestamp(),
            "timelineSeq": integer(),
            "dispatches": integer(),
        }),
    );
    let host = object(
        &["id", "name", "spec", "status"],
        json!({
            "id": {"type": "string", "format": "uuid"},
            "name": string(),
            "spec": reference("HostSpec"),
            "bmcUsername": string(),
            "status": reference("HostStatus"),
            "waitingFor": {"type": "string", "description": "What the host waits for, in words."},
            "progress": object(
                &["operation", "step", "index", "total", "description", "since"],
                json!({
                    "operation": one_of_strings(&OPERATIONS),
                    "step": one_of_strings(&STEPS),
                    "index": integer(),
                    "total": integer(),
                    "description": string(),
                    "since": timestamp(),
                }),
            ),
        }),
    );
    let bmc_access = object(
        &["address", "username", "password"],
        json!({"address": string(), "username": string(), "password": {"type": "string", "writeOnly": true}, "disableCertificateVerification": boolean()}),
    );
    let enroll = object(
        &["name"],
        json!({
            "name": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,253}$"},
            "bmc": reference("BmcAccess"),
            "bootMACAddress": string(),
            "bootMode": one_of_strings(&["UEFI", "UEFISecureBoot", "legacy"]),
            "online": boolean(),
            "rootDeviceHints": open_object("Metal³ rootDeviceHints"),
            "cleaning": reference("Cleaning"),
            "externallyProvisioned": boolean(),
            "inspectionMode": one_of_strings(&["agent", "out-of-band", "fast", "disabled"]),
            "description": string(),
            "architecture": string(),
            "adopt": object(&[], json!({"image": reference("Image")})),
        }),
    );
    let update = object(
        &[],
        json!({
            "bmc": object(&[], json!({"address": string(), "username": string(), "password": {"type": "string", "writeOnly": true}, "disableCertificateVerification": boolean()})),
            "online": boolean(),
            "rootDeviceHints": {"description": "Metal³ rootDeviceHints; null removes them"},
            "cleaning": reference("Cleaning"),
            "description": {"type": ["string", "null"]},
            "externallyProvisioned": boolean(),
            "inspectionMode": one_of_strings(&["agent", "out-of-band", "fast", "disabled"]),
        }),
    );
    let entry = {
        let mut entry = object(
            &["seq", "at", "type"],
            json!({
                "seq": integer(),
                "at": timestamp(),
                "type": one_of_strings(&["enrolled", "intent", "stateChanged", "operationStarted", "stepSucceeded", "stepFailed", "waiting", "slotGranted", "operationSucceeded", "operationFailed", "operationCancelled", "errorCleared", "resumed", "powerObserved", "agentConnected", "agentDisconnected", "detached", "attached"]),
            }),
        );
        entry["additionalProperties"] = json!(true);
        entry["description"] = json!(
            "The fields besides `seq`, `at` and `type` depend on the type (operation, step, durationMs, error, reason, from, to, …)."
        );
        entry
    };
    let counts = json!({"type": "object", "additionalProperties": integer()});
    json!({
        "Image": image,
        "Cleaning": cleaning,
        "HostSpec": spec,
        "HostStatus": status,
        "Host": host,
        "BmcAccess": bmc_access,
        "EnrollRequest": enroll,
        "UpdateRequest": update,
        "Page": object(&["items", "total"], json!({"items": array(reference("Host")), "next": string(), "total": integer()})),
        "TimelineEntry": entry,
        "Timeline": object(&["entries"], json!({"entries": array(reference("TimelineEntry"))})),
        "Summary": object(
            &["total", "byState", "byOperationalStatus", "slotsInUse", "slotsWaiting"],
            json!({"total": integer(), "byState": counts, "byOperationalStatus": counts, "slotsInUse": integer(), "slotsWaiting": integer()}),
        ),
        "Health": object(&["status", "hosts"], json!({"status": one_of_strings(&["ok", "stopped"]), "hosts": integer()})),
        "Error": object(&["error"], json!({"error": object(&["code", "message"], json!({"code": string(), "message": string()}))})),
        "ProvisionRequest": object(&["image"], json!({"image": reference("Image"), "userData": string(), "networkData": string(), "metaData": {"type": "string", "description": "A JSON object, as text"}})),
        "PowerRequest": object(&["on"], json!({"on": boolean()})),
        "RebootRequest": object(&[], json!({"mode": one_of_strings(&["soft", "hard"])})),
        "AdoptRequest": object(&[], json!({"image": reference("Image")})),
        "DetachRequest": object(&[], json!({"deleteAction": one_of_strings(&["delete", "delay"]), "force": boolean()})),
        "HardwareDetails": open_object("Metal³ HardwareDetails (status.hardware)"),
        "Faults": object(&[], json!({"bmcUnreachable": boolean(), "bmcPassword": string(), "noDhcp": boolean()})),
        "Machine": object(&["name", "poweredOn", "agentRunning", "faults"], json!({"name": string(), "poweredOn": boolean(), "disk": {"type": ["string", "null"]}, "agentRunning": boolean(), "faults": reference("Faults")})),
    })
}

fn response(description: &str, schema: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": reference(schema)}}})
}

fn body(schema: &str, required: bool) -> Value {
    json!({"required": required, "content": {"application/json": {"schema": reference(schema)}}})
}

fn errors() -> Value {
    json!({
        "400": response("The request is malformed", "Error"),
        "401": response("The bearer token is missing or wrong", "Error"),
        "404": response("No such host", "Error"),
        "409": response("The request does not apply to the host as it is", "Error"),
    })
}

fn with_errors(mut responses: Value) -> Value {
    if let (Some(map), Value::Object(errors)) = (responses.as_object_mut(), errors()) {
        for (code, value) in errors {
            map.entry(code).or_insert(value);
        }
    }
    responses
}

fn name_parameter() -> Value {
    json!({"name": "name", "in": "path", "required": true, "schema": string()})
}

/// The document.
pub fn document() -> Value {
    let action = |summary: &str, request: Option<(&str, bool)>| {
        let mut operation = json!({
            "summary": summary,
            "parameters": [name_parameter()],
            "responses": with_errors(json!({"202": response("Accepted; the host as it is now", "Host")})),
        });
        if let Some((schema, required)) = request {
            operation["requestBody"] = body(schema, required);
        }
        json!({"post": operation})
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Rivet engine API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Bare-metal host lifecycle: enrol hosts with their BMC, inspect, provision, deprovision, power, adopt, detach and delete them, and watch what happens. Requests that change a host return once the change is durable; the work itself goes on in the background and shows in the host's status, timeline and event stream."
        },
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": response("The engine runs", "Health"), "503": response("The engine stopped", "Health")}}},
            "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": string()}}}, "401": response("No token", "Error")}}},
            "/v1/hosts": {
                "get": {
                    "summary": "List hosts, by name, a page at a time",
                    "parameters": [
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                        {"name": "after", "in": "query", "schema": string()},
                        {"name": "state", "in": "query", "schema": one_of_strings(&STATES)}
                    ],
                    "responses": with_errors(json!({"200": response("A page of hosts", "Page")}))
                },
                "post": {
                    "summary": "Enrol a host",
                    "requestBody": body("EnrollRequest", true),
                    "responses": with_errors(json!({"201": response("Enrolled", "Host")}))
                }
            },
            "/v1/hosts/{name}": {
                "get": {"summary": "A host", "parameters": [name_parameter()], "responses": with_errors(json!({"200": response("The host", "Host")}))},
                "patch": {"summary": "Change a host's BMC, credentials or settings", "parameters": [name_parameter()], "requestBody": body("UpdateRequest", true), "responses": with_errors(json!({"200": response("The host", "Host")}))},
                "delete": {"summary": "Delete a host (it is powered off and cleaned first, as BMO does)", "parameters": [name_parameter()], "responses": with_errors(json!({"202": response("Deletion started", "Host")}))}
            },
            "/v1/hosts/{name}/timeline": {"get": {
                "summary": "The host's timeline: every step with its duration, waits and failures with reasons",
                "parameters": [name_parameter(), {"name": "after", "in": "query", "schema": integer()}, {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10000}}],
                "responses": with_errors(json!({"200": response("Entries in order", "Timeline")}))
            }},
            "/v1/hosts/{name}/hardware": {"get": {"summary": "The inventory found by inspection", "parameters": [name_parameter()], "responses": with_errors(json!({"200": response("Metal³ HardwareDetails", "HardwareDetails")}))}},
            "/v1/hosts/{name}/actions/inspect": action("Inspect an available host again", None),
            "/v1/hosts/{name}/actions/provision": action("Provision an image (powers the host on)", Some(("ProvisionRequest", true))),
            "/v1/hosts/{name}/actions/deprovision": action("Remove the image", None),
            "/v1/hosts/{name}/actions/power": action("Set the desired power", Some(("PowerRequest", true))),
            "/v1/hosts/{name}/actions/reboot": action("Reboot a provisioned host (soft by default, hard after the soft timeout)", Some(("RebootRequest", false))),
            "/v1/hosts/{name}/actions/adopt": action("Take a running host over without touching its disk", Some(("AdoptRequest", false))),
            "/v1/hosts/{name}/actions/detach": action("Stop managing a host without deprovisioning it", Some(("DetachRequest", false))),
            "/v1/hosts/{name}/actions/attach": action("Manage a detached host again (it registers and is adopted)", None),
            "/v1/summary": {"get": {"summary": "Host counts by state", "responses": with_errors(json!({"200": response("Counts", "Summary")}))}},
            "/v1/events": {"get": {
                "summary": "Server-sent events: `timeline` (one per committed timeline entry), `progress` (live agent progress), `deleted`, `lagged`",
                "parameters": [{"name": "host", "in": "query", "schema": string()}],
                "responses": {"200": {"description": "An event stream", "content": {"text/event-stream": {"schema": string()}}}, "401": response("No token", "Error")}
            }},
            "/v1/sim/machines/{name}": {"get": {"summary": "A simulated machine (only with simulated drivers)", "parameters": [name_parameter()], "responses": with_errors(json!({"200": response("The machine", "Machine")}))}},
            "/v1/sim/machines/{name}/faults": {"put": {"summary": "Inject faults into a simulated machine (only with simulated drivers)", "parameters": [name_parameter()], "requestBody": body("Faults", true), "responses": with_errors(json!({"204": {"description": "Set"}}))}}
        }
    })
}
