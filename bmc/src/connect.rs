//! From a parsed address and credentials to a ready [`Bmc`].

use std::time::Duration;

use crate::address::{BmcAddress, BootMethod, Driver, IpmiEndpoint};
use crate::ipmi::{IpmiOptions, IpmiProvider, IpmiTarget};
use crate::redfish::quirks::Vendor;
use crate::redfish::{RedfishOptions, RedfishProvider};
use crate::{Bmc, BmcError, Credentials};

/// How to connect; the defaults suit production BMCs.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub redfish: RedfishOptions,
    pub ipmi: IpmiOptions,
    /// For Redfish addresses, also register IPMI on the same host (port 623) as a fallback
    /// for power and boot device. Off by default: many BMCs disable IPMI over LAN.
    pub ipmi_fallback: bool,
    /// How long the registry lets one provider work on one call before trying the next.
    pub call_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            redfish: RedfishOptions::default(),
            ipmi: IpmiOptions::default(),
            ipmi_fallback: false,
            call_timeout: Duration::from_secs(300),
        }
    }
}

/// Connects to the BMC behind `address`: Redfish for the Redfish families, IPMI for `ipmi://`
/// and `libvirt://` (VirtualBMC). With [`ConnectOptions::ipmi_fallback`], a Redfish BMC also
/// gets an IPMI provider after it; a fallback that fails to connect is dropped with a warning.
pub async fn connect(
    address: &BmcAddress,
    credentials: Credentials,
    options: ConnectOptions,
) -> Result<Bmc, BmcError> {
    let mut bmc = Bmc::new();
    if let Some(endpoint) = address.ipmi_endpoint() {
        let provider = connect_ipmi(endpoint, credentials, options.ipmi).await?;
        bmc.push(Box::new(provider), options.call_timeout);
        return Ok(bmc);
    }
    let endpoint = address
        .redfish_endpoint()
        .ok_or_else(|| BmcError::Setup(format!("no driver for {}", address.scheme())))?;
    let mut redfish_options = options.redfish.clone();
    if address.driver() == Driver::Idrac {
        redfish_options.vendor = Some(Vendor::Dell);
        redfish_options.dell_virtual_media_boot = address.boot_method() == BootMethod::VirtualMedia;
    }
    let redfish = RedfishProvider::connect(&endpoint, credentials.clone(), redfish_options).await?;
    bmc.push(Box::new(redfish), options.call_timeout);
    if options.ipmi_fallback {
        let endpoint = IpmiEndpoint {
            host: address.host(),
            port: crate::address::IPMI_DEFAULT_PORT,
            privilege: crate::ipmi::Privilege::Administrator,
        };
        match connect_ipmi(endpoint, credentials, options.ipmi).await {
            Ok(ipmi) => bmc.push(Box::new(ipmi), options.call_timeout),
            Err(err) => {
                tracing::warn!(error = %err, "IPMI fallback unavailable; using Redfish only")
            }
        }
    }
    Ok(bmc)
}

async fn connect_ipmi(
    endpoint: IpmiEndpoint,
    credentials: Credentials,
    options: IpmiOptions,
) -> Result<IpmiProvider, BmcError> {
    let target = IpmiTarget {
        host: endpoint.host,
        port: endpoint.port,
        privilege: endpoint.privilege,
    };
    IpmiProvider::connect(target, credentials, options).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// Callers spawn BMC work on multi-threaded runtimes; a connect future that is not
    /// `Send` (an await inside a logging macro was one) would force them onto one thread.
    #[test]
    fn the_connect_future_is_send() {
        let address = BmcAddress::parse("redfish+http://127.0.0.1:1/redfish/v1/Systems/1")
            .expect("a valid address");
        let future = connect(
            &address,
            Credentials::new("admin", "password"),
            ConnectOptions::default(),
        );
        assert_send(&future);
    }
}
