//! Metal³'s own BMC address test vectors (baremetal-operator v0.13.2, compared with `main`),
//! run against Rivet's parser.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rivet_bmc::address::{AddressError, BmcAddress, BootMethod, Driver, Protocol};
use rivet_bmc::ipmi::Privilege;
use serde_json::Value;

fn vectors() -> Value {
    let path = rivet_tests::fixture("metal3/bmc-addresses.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn cases<'a>(vectors: &'a Value, section: &str) -> &'a Vec<Value> {
    let cases = vectors[section].as_array().unwrap();
    assert!(!cases.is_empty(), "{section} is empty");
    cases
}

fn text<'a>(case: &'a Value, key: &str) -> &'a str {
    case[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {case}"))
}

#[test]
fn every_parse_vector_passes() {
    let vectors = vectors();
    for case in cases(&vectors, "parse") {
        let scenario = text(case, "scenario");
        let result = BmcAddress::parse(text(case, "address"));
        if case["expect_error"].as_bool().unwrap() {
            assert!(result.is_err(), "{scenario}: accepted {result:?}");
            continue;
        }
        let address = result.unwrap_or_else(|err| panic!("{scenario}: {err}"));
        assert_eq!(address.scheme().name(), text(case, "scheme"), "{scenario}");
        assert_eq!(address.host(), text(case, "hostname"), "{scenario}");
        assert_eq!(address.authority(), text(case, "authority"), "{scenario}");
        let port = address.port().map(|p| p.to_string()).unwrap_or_default();
        assert_eq!(port, text(case, "port"), "{scenario}");
        assert_eq!(address.path(), text(case, "path"), "{scenario}");
        let query: serde_json::Map<String, Value> = address
            .query()
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(v)))
            .collect();
        assert_eq!(Value::Object(query), case["query"], "{scenario}");
    }
}

#[test]
fn every_interface_vector_maps_to_driver_boot_method_and_mac_rule() {
    let vectors = vectors();
    for case in cases(&vectors, "interfaces") {
        let scenario = text(case, "scenario");
        let address = BmcAddress::parse(text(case, "address")).unwrap();
        let driver = match address.driver() {
            Driver::Ipmi => "ipmi",
            Driver::Redfish => "redfish",
            Driver::Idrac => "idrac",
        };
        assert_eq!(driver, text(case, "driver"), "{scenario}");
        let boot = match (address.boot_method(), address.driver()) {
            (BootMethod::NetworkBoot, _) => "ipxe",
            (BootMethod::VirtualMedia, Driver::Idrac) => "idrac-redfish-virtual-media",
            (BootMethod::VirtualMedia, _) => "redfish-virtual-media",
            (BootMethod::UefiHttp, _) => "redfish-https",
        };
        assert_eq!(boot, text(case, "boot_interface"), "{scenario}");
        // Rivet inspects out of band over Redfish, so it follows BMO main's MAC rule.
        assert_eq!(
            address.needs_boot_mac(),
            case["needs_mac_main"].as_bool().unwrap(),
            "{scenario}"
        );
        let oob_inspection = address.protocol() == Protocol::Redfish;
        assert_eq!(
            oob_inspection,
            text(case, "inspect_interface_main") == "redfish",
            "{scenario}"
        );
    }
}

#[test]
fn every_driver_info_vector_yields_the_same_endpoint() {
    let vectors = vectors();
    for case in cases(&vectors, "driver_info") {
        let scenario = text(case, "scenario");
        let expected = &case["expected_driver_info"];
        let address = BmcAddress::parse(text(case, "address")).unwrap();
        if let Some(ipmi_address) = expected["ipmi_address"].as_str() {
            let endpoint = address.ipmi_endpoint().unwrap();
            assert_eq!(endpoint.host, ipmi_address, "{scenario}");
            assert_eq!(
                endpoint.port.to_string(),
                text(expected, "ipmi_port"),
                "{scenario}"
            );
            let privilege = match endpoint.privilege {
                Privilege::Callback => "CALLBACK",
                Privilege::User => "USER",
                Privilege::Operator => "OPERATOR",
                Privilege::Administrator => "ADMINISTRATOR",
            };
            assert_eq!(privilege, text(expected, "ipmi_priv_level"), "{scenario}");
            assert!(address.redfish_endpoint().is_none());
        } else {
            let endpoint = address.redfish_endpoint().unwrap();
            assert_eq!(
                endpoint.base_url,
                text(expected, "redfish_address"),
                "{scenario}"
            );
            assert_eq!(
                endpoint.system_path.as_deref(),
                expected["redfish_system_id"].as_str(),
                "{scenario}"
            );
            assert!(address.ipmi_endpoint().is_none());
        }
    }
}

#[test]
fn unknown_types_are_rejected_by_name() {
    let vectors = vectors();
    for case in cases(&vectors, "unknown_type") {
        let address = text(case, "address");
        let err = BmcAddress::parse(address).unwrap_err();
        assert!(
            matches!(&err, AddressError::UnknownScheme(s) if s == "foo"),
            "{address}: {err}"
        );
        assert!(err.to_string().contains("unknown BMC address type"));
    }
}

#[test]
fn scheme_capabilities_match_for_every_scheme_and_transport() {
    let vectors = vectors();
    for family in cases(&vectors, "scheme_capabilities") {
        for scheme in family["schemes"].as_array().unwrap() {
            let scheme = scheme.as_str().unwrap();
            let address = BmcAddress::parse(&format!("{scheme}://192.0.2.1")).unwrap();
            let parsed = address.scheme();
            assert_eq!(
                parsed.needs_boot_mac(),
                family["needs_mac_main"].as_bool().unwrap(),
                "{scheme}"
            );
            assert_eq!(
                parsed.supports_secure_boot(),
                family["supports_secure_boot"].as_bool().unwrap(),
                "{scheme}"
            );
            assert_eq!(
                parsed.supports_iso_preprovisioning_image(),
                family["supports_iso_preprovisioning_image"]
                    .as_bool()
                    .unwrap(),
                "{scheme}"
            );
            assert_eq!(
                parsed.requires_provisioning_network(),
                family["requires_provisioning_network"].as_bool().unwrap(),
                "{scheme}"
            );
            let transport = if scheme.ends_with("+http") {
                "http"
            } else {
                "https"
            };
            if let Some(endpoint) = address.redfish_endpoint() {
                assert!(
                    endpoint.base_url.starts_with(&format!("{transport}://")),
                    "{scheme}"
                );
            }
        }
    }
}
