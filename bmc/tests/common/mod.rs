//! Helpers shared by the Redfish integration tests (each test file uses a subset).
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use rivet_bmc::Credentials;
use rivet_bmc::address::RedfishEndpoint;
use rivet_bmc::redfish::retry::RetryPolicy;
use rivet_bmc::redfish::{RedfishOptions, RedfishProvider};
use rivet_tests::sushy::{SUSHY_PASSWORD, SUSHY_USERNAME};

/// Production behaviour with test-sized waits: the same number of retries, milliseconds
/// instead of seconds between them.
pub(crate) fn fast_options() -> RedfishOptions {
    RedfishOptions {
        request_timeout: Duration::from_secs(20),
        retry: RetryPolicy {
            attempts: 4,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            busy_initial_backoff: Duration::from_millis(20),
            busy_max_backoff: Duration::from_millis(100),
        },
        power_poll_interval: Duration::from_millis(250),
        power_timeout: Duration::from_secs(60),
        task_poll_interval: Duration::from_millis(100),
        task_timeout: Duration::from_secs(60),
        ..RedfishOptions::default()
    }
}

pub(crate) fn credentials() -> Credentials {
    Credentials::new(SUSHY_USERNAME, SUSHY_PASSWORD)
}

pub(crate) fn vendor_tree(name: &str) -> PathBuf {
    rivet_tests::fixture(format!("redfish/vendors/{name}"))
}

pub(crate) fn dmtf_tree(name: &str) -> PathBuf {
    rivet_tests::fixture(format!("redfish/dmtf/{name}"))
}

pub(crate) fn endpoint(base_url: &str, system_path: Option<&str>) -> RedfishEndpoint {
    RedfishEndpoint {
        base_url: base_url.to_owned(),
        system_path: system_path.map(str::to_owned),
    }
}

pub(crate) async fn connect(
    base_url: &str,
    system_path: Option<&str>,
    options: RedfishOptions,
) -> RedfishProvider {
    RedfishProvider::connect(&endpoint(base_url, system_path), credentials(), options)
        .await
        .unwrap_or_else(|err| panic!("connecting to {base_url}: {err}"))
}
