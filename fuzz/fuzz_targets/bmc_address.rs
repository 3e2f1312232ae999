//! The BMC address parser: never panics, and whatever it accepts prints to a canonical form
//! that parses back to the same address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rivet_bmc::BmcAddress;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(address) = BmcAddress::parse(text) else {
        return;
    };
    let canonical = address.to_string();
    let again = BmcAddress::parse(&canonical)
        .unwrap_or_else(|err| panic!("{text:?} printed as {canonical:?}, which fails: {err}"));
    assert_eq!(again, address, "{text:?} -> {canonical:?}");
    assert_eq!(again.to_string(), canonical);
    let redfish = address.redfish_endpoint();
    let ipmi = address.ipmi_endpoint();
    assert!(redfish.is_some() != ipmi.is_some(), "exactly one driver per address");
});
