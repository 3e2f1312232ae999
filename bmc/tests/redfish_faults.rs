//! Faults no peer produces, injected by a proxy in front of a real sushy-tools emulator:
//! 5xx answers, 401 in the middle of a session, slow answers, reset connections, malformed
//! and huge bodies, long-running tasks. The proxy also plays the SessionService sushy lacks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{connect, endpoint, fast_options, vendor_tree};
use rivet_bmc::redfish::{RedfishOptions, RedfishProvider};
use rivet_bmc::{BmcError, Credentials, Firmware, Power, PowerState, Provider};
use rivet_tests::fault_proxy::{Fault, FaultProxy};
use rivet_tests::sushy::{
    FakeSystem, SUSHY_PASSWORD, SUSHY_USERNAME, SushyDriver, SushyEmulator, SushyStatic,
};
use serde_json::json;

struct Setup {
    _sushy: SushyEmulator,
    proxy: FaultProxy,
    system: String,
}

fn setup() -> Setup {
    let system = FakeSystem::numbered(9);
    let sushy = SushyEmulator::start(SushyDriver::Fake(vec![system.clone()]), None);
    let proxy = FaultProxy::start(sushy.addr());
    Setup {
        _sushy: sushy,
        proxy,
        system: format!("/redfish/v1/Systems/{}", system.uuid),
    }
}

impl Setup {
    async fn connect(&self, options: RedfishOptions) -> RedfishProvider {
        connect(&self.proxy.base_url(), Some(&self.system), options).await
    }

    fn statuses(&self, method: &str, path: &str) -> Vec<u16> {
        self.proxy
            .matching(method, path)
            .iter()
            .filter(|r| r.path.trim_end_matches('/').ends_with(path))
            .map(|r| r.status)
            .collect()
    }
}

#[tokio::test]
async fn server_errors_on_reads_are_retried_within_bounds() {
    let s = setup();
    let bmc = s.connect(fast_options()).await;
    s.proxy.clear_log();
    s.proxy
        .inject(Some("GET"), &s.system, Fault::json(503, "{}"), 2);
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(s.statuses("GET", &s.system), [503, 503, 200]);

    // A BMC that keeps failing gets exactly the configured number of attempts.
    s.proxy.clear_log();
    s.proxy.inject(
        Some("GET"),
        &s.system,
        Fault::json(502, "<html>bad gateway</html>"),
        100,
    );
    let err = bmc.power_state().await.unwrap_err();
    assert!(
        matches!(err, BmcError::Rejected { status: 502, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("bad gateway"), "{err}");
    assert_eq!(s.statuses("GET", &s.system), [502, 502, 502, 502]);

    // A 500 is usually deterministic: one more try only.
    s.proxy.clear_faults();
    s.proxy.clear_log();
    s.proxy
        .inject(Some("GET"), &s.system, Fault::json(500, "{}"), 100);
    assert!(bmc.power_state().await.is_err());
    assert_eq!(s.statuses("GET", &s.system), [500, 500]);
}

#[tokio::test]
async fn an_action_is_repeated_only_when_the_bmc_was_unavailable() {
    let s = setup();
    let bmc = s.connect(fast_options()).await;
    let reset = "Actions/ComputerSystem.Reset";
    s.proxy
        .inject(Some("POST"), reset, Fault::json(500, "{}"), 1);
    let err = bmc.power_on().await.unwrap_err();
    assert!(
        matches!(err, BmcError::Rejected { status: 500, .. }),
        "{err}"
    );
    assert_eq!(s.statuses("POST", reset), [500]);

    s.proxy.clear_log();
    s.proxy
        .inject(Some("POST"), reset, Fault::json(503, "{}"), 1);
    bmc.power_on().await.unwrap();
    assert_eq!(s.statuses("POST", reset), [503, 204]);
}

#[tokio::test]
async fn a_reset_connection_is_retried_for_reads_but_not_for_actions() {
    let s = setup();
    let bmc = s.connect(fast_options()).await;
    s.proxy.clear_log();
    s.proxy.inject(Some("GET"), &s.system, Fault::Reset, 1);
    bmc.power_state().await.unwrap();
    assert_eq!(s.statuses("GET", &s.system), [0, 200]);

    let reset = "Actions/ComputerSystem.Reset";
    s.proxy.inject(Some("POST"), reset, Fault::Reset, 1);
    let err = bmc.power_on().await.unwrap_err();
    assert!(matches!(err, BmcError::Connection(_)), "{err}");
    assert_eq!(s.statuses("POST", reset), [0]);
}

#[tokio::test]
async fn slow_answers_time_out_and_are_retried() {
    let s = setup();
    let options = RedfishOptions {
        request_timeout: Duration::from_millis(700),
        ..fast_options()
    };
    let bmc = s.connect(options).await;
    s.proxy.clear_log();
    s.proxy.inject(
        Some("GET"),
        &s.system,
        Fault::Delay(Duration::from_secs(3)),
        1,
    );
    bmc.power_state().await.unwrap();
    assert_eq!(s.proxy.matching("GET", &s.system).len(), 2);

    s.proxy.inject(
        Some("GET"),
        &s.system,
        Fault::Delay(Duration::from_secs(3)),
        100,
    );
    let err = bmc.power_state().await.unwrap_err();
    assert!(matches!(err, BmcError::Timeout(_)), "{err}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn malformed_and_huge_bodies_are_refused_without_retrying() {
    let s = setup();
    let options = RedfishOptions {
        max_response_bytes: 1 << 20,
        ..fast_options()
    };
    let bmc = s.connect(options).await;
    s.proxy.clear_log();
    s.proxy.inject(
        Some("GET"),
        &s.system,
        Fault::json(200, r#"{"PowerState": "#),
        1,
    );
    let err = bmc.power_state().await.unwrap_err();
    assert!(matches!(err, BmcError::Protocol(_)), "{err}");
    assert!(err.to_string().contains(&s.system), "{err}");
    assert_eq!(s.proxy.matching("GET", &s.system).len(), 1);

    // Streamed without a length, then announced with one.
    s.proxy
        .inject(Some("GET"), &s.system, Fault::HugeBody(4 << 20), 1);
    let err = bmc.power_state().await.unwrap_err();
    assert!(
        err.to_string().contains("larger than 1048576 bytes"),
        "{err}"
    );
    let big = format!(r#"{{"Name": "{}"}}"#, "x".repeat(2 << 20));
    s.proxy
        .inject(Some("GET"), &s.system, Fault::json(200, big), 1);
    let err = bmc.power_state().await.unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
    // The next answer is normal again.
    bmc.power_state().await.unwrap();
}

#[tokio::test]
async fn sessions_are_used_renewed_on_401_and_closed() {
    let s = setup();
    s.proxy
        .emulate_sessions("operator", "s3cret", SUSHY_USERNAME, SUSHY_PASSWORD);
    let bmc = RedfishProvider::connect(
        &endpoint(&s.proxy.base_url(), Some(&s.system)),
        Credentials::new("operator", "s3cret"),
        fast_options(),
    )
    .await
    .unwrap();
    assert!(bmc.uses_session().await);
    assert_eq!(s.proxy.live_sessions(), 1);
    bmc.power_state().await.unwrap();
    let last = s.proxy.requests().pop().unwrap();
    assert!(last.headers.contains_key("x-auth-token"));
    assert!(!last.headers.contains_key("authorization"));

    // The BMC forgets the session: one 401, a new login, the request again.
    s.proxy.expire_sessions();
    s.proxy.clear_log();
    bmc.power_state().await.unwrap();
    let seen: Vec<(String, u16)> = s
        .proxy
        .requests()
        .into_iter()
        .map(|r| (r.method, r.status))
        .collect();
    assert_eq!(
        seen,
        [
            ("GET".to_owned(), 401),
            ("POST".to_owned(), 201),
            ("GET".to_owned(), 200)
        ]
    );

    // A BMC that answers 401 to everything gets one new login, not a loop.
    s.proxy.clear_log();
    s.proxy
        .inject(Some("GET"), &s.system, Fault::json(401, "{}"), 100);
    let err = bmc.power_state().await.unwrap_err();
    assert!(matches!(err, BmcError::Authentication), "{err}");
    assert_eq!(
        s.proxy.matching("POST", "/SessionService/Sessions").len(),
        1
    );

    // Closing deletes the current session on the BMC. (The one the injected 401s stranded
    // stays in the proxy's table; a real BMC had already dropped it.)
    assert_eq!(s.proxy.live_sessions(), 2);
    bmc.close().await;
    assert_eq!(s.proxy.live_sessions(), 1);
    assert_eq!(
        s.proxy
            .matching("DELETE", "/SessionService/Sessions/")
            .len(),
        1
    );
}

#[tokio::test]
async fn wrong_credentials_cost_one_refusal_and_are_never_retried() {
    // BMCs lock accounts after a few failed logins, so a refused password is tried once.
    let s = setup();
    let err = RedfishProvider::connect(
        &endpoint(&s.proxy.base_url(), Some(&s.system)),
        Credentials::new(SUSHY_USERNAME, "wrong"),
        fast_options(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BmcError::Authentication), "{err}");
    let refused: Vec<_> = s
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.status == 401)
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    // The public service root was read without credentials.
    let root = &s.proxy.matching("GET", "/redfish/v1/")[0];
    assert!(!root.headers.contains_key("authorization"));

    // A SessionService that rejects the account: no second try over Basic.
    s.proxy.clear_log();
    s.proxy
        .emulate_sessions("someone-else", "x", SUSHY_USERNAME, SUSHY_PASSWORD);
    let err = RedfishProvider::connect(
        &endpoint(&s.proxy.base_url(), Some(&s.system)),
        Credentials::new(SUSHY_USERNAME, SUSHY_PASSWORD),
        fast_options(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BmcError::Authentication), "{err}");
    let sent: Vec<(String, u16)> = s
        .proxy
        .requests()
        .into_iter()
        .map(|r| (r.method, r.status))
        .collect();
    assert_eq!(sent, [("GET".to_owned(), 200), ("POST".to_owned(), 401)]);

    // Once the credentials have worked, a lone 401 is a BMC hiccup: retried once.
    let s = setup();
    let bmc = s.connect(fast_options()).await;
    s.proxy
        .inject(Some("GET"), &s.system, Fault::json(401, "{}"), 1);
    bmc.power_state().await.unwrap();
}

#[tokio::test]
async fn long_running_tasks_are_followed_to_their_end() {
    // sushy-static accepts SimpleUpdate with 204; the proxy turns it into a task that runs
    // for a while, then succeeds — or fails.
    let peer = SushyStatic::serve(&vendor_tree("dell"), None);
    let proxy = FaultProxy::start(peer.addr());
    let bmc = connect(&proxy.base_url(), None, fast_options()).await;
    let task = "/redfish/v1/TaskService/Tasks/JID_1";
    let started = Fault::Respond {
        status: 202,
        headers: vec![("Location".into(), task.into())],
        body: json!({"@odata.id": task, "Id": "JID_1", "TaskState": "New"}).to_string(),
    };
    proxy.inject(Some("POST"), "SimpleUpdate", started.clone(), 1);
    let running = json!({"@odata.id": task, "Id": "JID_1", "TaskState": "Running"}).to_string();
    proxy.inject(Some("GET"), task, Fault::json(202, running.clone()), 3);
    proxy.inject(
        Some("GET"),
        task,
        Fault::json(
            200,
            json!({"Id": "JID_1", "TaskState": "Completed", "TaskStatus": "OK"}).to_string(),
        ),
        1,
    );
    bmc.update_firmware("http://images.example/bios.exe", &[])
        .await
        .unwrap();
    assert_eq!(proxy.matching("GET", task).len(), 4);
    let post = &proxy.matching("POST", "SimpleUpdate")[0];
    assert_eq!(post.json()["ImageURI"], "http://images.example/bios.exe");

    proxy.inject(Some("POST"), "SimpleUpdate", started, 1);
    proxy.inject(Some("GET"), task, Fault::json(202, running), 1);
    proxy.inject(
        Some("GET"),
        task,
        Fault::json(
            200,
            json!({"Id": "JID_1", "TaskState": "Exception", "TaskStatus": "Critical",
                   "Messages": [{"MessageId": "RED017", "Message": "The image is not valid"}]})
            .to_string(),
        ),
        1,
    );
    let err = bmc
        .update_firmware("http://images.example/bios.exe", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, BmcError::TaskFailed { .. }), "{err}");
    assert!(
        err.to_string().contains("The image is not valid (RED017)"),
        "{err}"
    );
}
