//! BMC addresses in every form a BareMetalHost's `spec.bmc.address` accepts.
//!
//! The grammar follows Metal³'s baremetal-operator (v0.13.2):
//!
//! - `ipmi://host[:port][?privilegelevel=OPERATOR]`, and the short forms `host`, `host:port`,
//!   `[v6]:port` and `ipmi:host` (no scheme means IPMI);
//! - `libvirt://host[:port]` (VirtualBMC: IPMI towards a libvirt domain);
//! - `<type>[+http|+https]://host[:port][/system path]` for the Redfish families `redfish`,
//!   `redfish-virtualmedia`, `redfish-uefihttp`, `idrac-redfish`, `idrac-virtualmedia`,
//!   `ilo5-redfish` and `ilo5-virtualmedia` (plain `<type>` means HTTPS), also as `<type>:host`.
//!
//! Parsing is pure: no DNS, no I/O. Rivet is stricter than Metal³ in one place on purpose:
//! credentials in the address (`user:pass@host`) are refused instead of silently ignored, and
//! the error never repeats them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::ipmi::Privilege;

/// The IPMI port when an address names none.
pub const IPMI_DEFAULT_PORT: u16 = 623;

/// Why an address was refused. Messages quote the offending part, never credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    #[error("the BMC address is empty")]
    Empty,
    #[error("unknown BMC address type `{0}`; known types: {known}", known = Scheme::known_names())]
    UnknownScheme(String),
    #[error("the BMC address `{0}` names no host")]
    MissingHost(String),
    #[error("`{0}` is neither an IP address nor a valid DNS host name")]
    InvalidHost(String),
    #[error("a bracketed IPv6 address without a scheme needs a port, as in `[{0}]:623`")]
    Ipv6WithoutPort(String),
    #[error("`{0}` is not a valid port (1-65535)")]
    InvalidPort(String),
    #[error(
        "the BMC address must not carry credentials (`user:password@`); \
         put them in the BMC credentials secret instead"
    )]
    CredentialsInAddress,
    #[error("unknown IPMI privilege level `{0}`; use CALLBACK, USER, OPERATOR or ADMINISTRATOR")]
    InvalidPrivilege(String),
    #[error("the BMC address contains a character that is not allowed in a URL: {0:?}")]
    InvalidCharacter(char),
}

/// Every registered address type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Ipmi,
    Libvirt,
    Redfish,
    RedfishVirtualMedia,
    RedfishUefiHttp,
    IdracRedfish,
    IdracVirtualMedia,
    Ilo5Redfish,
    Ilo5VirtualMedia,
}

impl Scheme {
    const ALL: [Scheme; 9] = [
        Scheme::Ipmi,
        Scheme::Libvirt,
        Scheme::Redfish,
        Scheme::RedfishVirtualMedia,
        Scheme::RedfishUefiHttp,
        Scheme::IdracRedfish,
        Scheme::IdracVirtualMedia,
        Scheme::Ilo5Redfish,
        Scheme::Ilo5VirtualMedia,
    ];

    /// The scheme as written in an address, without a `+http`/`+https` suffix.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Ipmi => "ipmi",
            Scheme::Libvirt => "libvirt",
            Scheme::Redfish => "redfish",
            Scheme::RedfishVirtualMedia => "redfish-virtualmedia",
            Scheme::RedfishUefiHttp => "redfish-uefihttp",
            Scheme::IdracRedfish => "idrac-redfish",
            Scheme::IdracVirtualMedia => "idrac-virtualmedia",
            Scheme::Ilo5Redfish => "ilo5-redfish",
            Scheme::Ilo5VirtualMedia => "ilo5-virtualmedia",
        }
    }

    fn from_name(name: &str) -> Option<Scheme> {
        Scheme::ALL.into_iter().find(|s| s.name() == name)
    }

    fn known_names() -> String {
        Scheme::ALL.map(Scheme::name).join(", ")
    }

    /// The wire protocol the driver speaks.
    pub fn protocol(self) -> Protocol {
        match self {
            Scheme::Ipmi | Scheme::Libvirt => Protocol::Ipmi,
            _ => Protocol::Redfish,
        }
    }

    /// The Ironic hardware type Metal³ would pick; `Idrac` means "apply the Dell iDRAC
    /// behaviour regardless of what the BMC says it is".
    pub fn driver(self) -> Driver {
        match self {
            Scheme::Ipmi | Scheme::Libvirt => Driver::Ipmi,
            Scheme::IdracRedfish | Scheme::IdracVirtualMedia => Driver::Idrac,
            _ => Driver::Redfish,
        }
    }

    /// How a host behind this kind of address is booted for provisioning.
    pub fn boot_method(self) -> BootMethod {
        match self {
            Scheme::RedfishVirtualMedia | Scheme::IdracVirtualMedia | Scheme::Ilo5VirtualMedia => {
                BootMethod::VirtualMedia
            }
            Scheme::RedfishUefiHttp => BootMethod::UefiHttp,
            _ => BootMethod::NetworkBoot,
        }
    }

    /// Whether the BareMetalHost must name its boot MAC address.
    ///
    /// This is BMO `main`'s rule: only `libvirt://` needs one, because every Redfish flavour
    /// now learns MAC addresses by out-of-band inspection (as Rivet does). BMO v0.13.2 also
    /// required it for `redfish://`, `ilo5-redfish://`, `idrac-redfish://` and
    /// `redfish-uefihttp://`. A MAC is always needed when inspection is disabled; that rule
    /// belongs to the caller.
    pub fn needs_boot_mac(self) -> bool {
        self == Scheme::Libvirt
    }

    /// Whether UEFI secure boot can be switched through this driver.
    pub fn supports_secure_boot(self) -> bool {
        self.protocol() == Protocol::Redfish
    }

    /// Whether the host can boot a pre-provisioning ISO (virtual media or UEFI HTTP).
    pub fn supports_iso_preprovisioning_image(self) -> bool {
        self.boot_method() != BootMethod::NetworkBoot
    }

    /// Whether booting needs a provisioning network (DHCP/PXE reachable from the host).
    pub fn requires_provisioning_network(self) -> bool {
        self.boot_method() == BootMethod::NetworkBoot
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Ipmi,
    Redfish,
}

/// The Ironic hardware type behind an address (BMO's `driver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Driver {
    Ipmi,
    Redfish,
    Idrac,
}

/// How the host is booted into the provisioning ramdisk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootMethod {
    /// DHCP + PXE/iPXE over a provisioning network.
    NetworkBoot,
    /// An ISO attached through the BMC's virtual media.
    VirtualMedia,
    /// UEFI HTTP boot with the URL pushed through Redfish (`HttpBootUri`).
    UefiHttp,
}

/// HTTP or HTTPS towards a Redfish service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Http,
    Https,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Https => "https",
        }
    }
}

/// A parsed BMC address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmcAddress {
    scheme: Scheme,
    /// `Some` only when written as `<type>+http` / `<type>+https`.
    explicit_transport: Option<Transport>,
    host: Host,
    port: Option<u16>,
    path: String,
    query: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::V4(ip) => write!(f, "{ip}"),
            Host::V6(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// Where the Redfish driver connects, derived from an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedfishEndpoint {
    /// `http[s]://host[:port]`, IPv6 in brackets; no path.
    pub base_url: String,
    /// The ComputerSystem to manage, as a path (`/redfish/v1/Systems/1`); `None` means "the
    /// only system the service has".
    pub system_path: Option<String>,
}

/// Where the IPMI driver connects, derived from an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiEndpoint {
    pub host: String,
    pub port: u16,
    pub privilege: Privilege,
}

impl BmcAddress {
    /// Parses an address as a BareMetalHost would carry it.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        if input.is_empty() {
            return Err(AddressError::Empty);
        }
        if let Some(bad) = input.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(AddressError::InvalidCharacter(bad));
        }
        let (scheme_text, rest) = split_scheme(input)?;
        let (scheme, explicit_transport) = resolve_scheme(&scheme_text)?;
        let implicit = scheme_text.is_empty();
        let (authority, path, query) = split_rest(rest);
        let (host, port) = parse_authority(authority, implicit, input)?;
        let query = parse_query(query);
        let address = Self {
            scheme,
            explicit_transport,
            host,
            port,
            path: path.to_owned(),
            query,
        };
        if scheme.protocol() == Protocol::Ipmi {
            // Validate the privilege now so that a typo is reported at enrolment.
            address.ipmi_privilege()?;
        }
        Ok(address)
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    pub fn protocol(&self) -> Protocol {
        self.scheme.protocol()
    }

    pub fn driver(&self) -> Driver {
        self.scheme.driver()
    }

    pub fn boot_method(&self) -> BootMethod {
        self.scheme.boot_method()
    }

    pub fn needs_boot_mac(&self) -> bool {
        self.scheme.needs_boot_mac()
    }

    /// The host without brackets or port.
    pub fn host(&self) -> String {
        self.host.to_string()
    }

    /// The port as written, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// `host[:port]` with IPv6 literals in brackets.
    pub fn authority(&self) -> String {
        let host = match &self.host {
            Host::V6(ip) => format!("[{ip}]"),
            other => other.to_string(),
        };
        match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }

    /// The path as written (empty when absent).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Query parameters, each with every value given.
    pub fn query(&self) -> &BTreeMap<String, Vec<String>> {
        &self.query
    }

    /// HTTP or HTTPS, for the Redfish families (HTTPS unless `+http` was written).
    pub fn transport(&self) -> Transport {
        self.explicit_transport.unwrap_or(Transport::Https)
    }

    /// The Redfish endpoint, or `None` for IPMI addresses.
    ///
    /// The path names the system unless it is empty or `/redfish/v1` (BMO's rule);
    /// `redfish-uefihttp` always passes it on, and an empty one still means "the only system".
    pub fn redfish_endpoint(&self) -> Option<RedfishEndpoint> {
        if self.protocol() != Protocol::Redfish {
            return None;
        }
        let trimmed = self.path.trim_matches('/');
        let names_system = if self.scheme == Scheme::RedfishUefiHttp {
            !trimmed.is_empty()
        } else {
            !trimmed.is_empty() && trimmed != "redfish/v1"
        };
        Some(RedfishEndpoint {
            base_url: format!("{}://{}", self.transport().as_str(), self.authority()),
            system_path: names_system.then(|| self.path.clone()),
        })
    }

    /// The IPMI endpoint (port defaulted to 623), or `None` for Redfish addresses.
    pub fn ipmi_endpoint(&self) -> Option<IpmiEndpoint> {
        if self.protocol() != Protocol::Ipmi {
            return None;
        }
        Some(IpmiEndpoint {
            host: self.host(),
            port: self.port.unwrap_or(IPMI_DEFAULT_PORT),
            // Checked in `parse`.
            privilege: self.ipmi_privilege().unwrap_or(Privilege::Administrator),
        })
    }

    fn ipmi_privilege(&self) -> Result<Privilege, AddressError> {
        let Some(value) = self
            .query
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case("privilegelevel"))
            .and_then(|(_, values)| values.first())
        else {
            return Ok(Privilege::Administrator);
        };
        match value.to_ascii_uppercase().as_str() {
            "CALLBACK" => Ok(Privilege::Callback),
            "USER" => Ok(Privilege::User),
            "OPERATOR" => Ok(Privilege::Operator),
            "ADMINISTRATOR" => Ok(Privilege::Administrator),
            _ => Err(AddressError::InvalidPrivilege(value.clone())),
        }
    }
}

impl fmt::Display for BmcAddress {
    /// The canonical form: always `scheme://`, which [`BmcAddress::parse`] reads back to an
    /// equal value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.scheme)?;
        if let Some(transport) = self.explicit_transport {
            write!(f, "+{}", transport.as_str())?;
        }
        write!(f, "://{}{}", self.authority(), self.path)?;
        let mut first = true;
        for (key, values) in &self.query {
            for value in values {
                let sep = if first { '?' } else { '&' };
                first = false;
                write!(f, "{sep}{}={}", encode(key), encode(value))?;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for BmcAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Splits `scheme://rest` or `scheme:rest`; returns an empty scheme for the short IPMI forms.
fn split_scheme(input: &str) -> Result<(String, &str), AddressError> {
    if let Ok(ip) = input.parse::<Ipv6Addr>() {
        return Err(AddressError::Ipv6WithoutPort(ip.to_string()));
    }
    if let Some((scheme, rest)) = input.split_once("://") {
        if looks_like_scheme(scheme) {
            return Ok((scheme.to_ascii_lowercase(), rest));
        }
        return Err(AddressError::UnknownScheme(scheme.to_owned()));
    }
    // `ipmi:host` and `redfish:host`: a known type name followed by a single colon. Anything
    // else containing a colon is `host:port` or `[v6]:port`.
    if let Some((prefix, rest)) = input.split_once(':') {
        let lowered = prefix.to_ascii_lowercase();
        if known_scheme_text(&lowered) {
            return Ok((lowered, rest));
        }
        let is_host_port = prefix.starts_with('[')
            || (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()));
        if !is_host_port && looks_like_scheme(prefix) && !prefix.contains('.') {
            return Err(AddressError::UnknownScheme(prefix.to_owned()));
        }
    }
    Ok((String::new(), input))
}

fn looks_like_scheme(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

fn known_scheme_text(text: &str) -> bool {
    resolve_scheme(text).is_ok()
}

fn resolve_scheme(text: &str) -> Result<(Scheme, Option<Transport>), AddressError> {
    if text.is_empty() {
        return Ok((Scheme::Ipmi, None));
    }
    let (base, transport) = match text.rsplit_once('+') {
        Some((base, "http")) => (base, Some(Transport::Http)),
        Some((base, "https")) => (base, Some(Transport::Https)),
        _ => (text, None),
    };
    match Scheme::from_name(base) {
        // IPMI has no HTTP transports; `ipmi+https` is not a registered type.
        Some(scheme) if transport.is_none() || scheme.protocol() == Protocol::Redfish => {
            Ok((scheme, transport))
        }
        _ => Err(AddressError::UnknownScheme(text.to_owned())),
    }
}

/// Splits `authority[/path][?query][#fragment]`; the fragment is dropped.
fn split_rest(rest: &str) -> (&str, &str, &str) {
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    match before_query.find('/') {
        Some(slash) => (&before_query[..slash], &before_query[slash..], query),
        None => (before_query, "", query),
    }
}

fn parse_authority(
    authority: &str,
    implicit_scheme: bool,
    input: &str,
) -> Result<(Host, Option<u16>), AddressError> {
    if authority.contains('@') {
        return Err(AddressError::CredentialsInAddress);
    }
    if authority.is_empty() {
        return Err(AddressError::MissingHost(input.to_owned()));
    }
    if let Some(after_bracket) = authority.strip_prefix('[') {
        let (literal, after) = after_bracket
            .split_once(']')
            .ok_or_else(|| AddressError::InvalidHost(authority.to_owned()))?;
        let ip: Ipv6Addr = literal
            .parse()
            .map_err(|_| AddressError::InvalidHost(literal.to_owned()))?;
        let port = match after {
            "" if implicit_scheme => return Err(AddressError::Ipv6WithoutPort(literal.to_owned())),
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(parse_port(port)?),
                None => return Err(AddressError::InvalidHost(authority.to_owned())),
            },
        };
        return Ok((Host::V6(ip), port));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(parse_port(port)?)),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err(AddressError::MissingHost(input.to_owned()));
    }
    Ok((parse_host(host)?, port))
}

fn parse_port(text: &str) -> Result<u16, AddressError> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(AddressError::InvalidPort(text.to_owned())),
    }
}

fn parse_host(text: &str) -> Result<Host, AddressError> {
    if let Ok(ip) = text.parse::<Ipv4Addr>() {
        return Ok(Host::V4(ip));
    }
    if is_dns_name(text) {
        return Ok(Host::Name(text.to_ascii_lowercase()));
    }
    Err(AddressError::InvalidHost(text.to_owned()))
}

/// Labels of 1–63 letters, digits and hyphens, not starting or ending with a hyphen.
fn is_dns_name(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn parse_query(query: &str) -> BTreeMap<String, Vec<String>> {
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        params.entry(decode(key)).or_default().push(decode(value));
    }
    params
}

/// Percent-decoding as in `application/x-www-form-urlencoded`; malformed escapes stay literal.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_refused_without_being_echoed() {
        let err =
            BmcAddress::parse("redfish://admin:hunter2@10.0.0.1/redfish/v1/Systems/1").unwrap_err();
        assert_eq!(err, AddressError::CredentialsInAddress);
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn bad_inputs_name_what_is_wrong() {
        let cases = [
            ("", "empty"),
            ("foo://10.0.0.1", "unknown BMC address type `foo`"),
            (
                "ipmi+https://10.0.0.1",
                "unknown BMC address type `ipmi+https`",
            ),
            ("redfish://", "names no host"),
            ("redfish://10.0.0.1:99999", "`99999` is not a valid port"),
            ("redfish://10.0.0.1:0", "`0` is not a valid port"),
            ("10.0.0.1:", "`` is not a valid port"),
            (
                "ipmi://10.0.0.1?privilegelevel=root",
                "privilege level `root`",
            ),
            ("redfish://bad_host", "`bad_host` is neither"),
            ("redfish://[::1", "`[::1` is neither"),
            ("redfish://10.0.0.1 /x", "not allowed"),
        ];
        for (input, expected) in cases {
            let err = BmcAddress::parse(input).unwrap_err().to_string();
            assert!(err.contains(expected), "{input:?}: {err}");
        }
    }

    #[test]
    fn host_port_with_a_dns_name_is_ipmi() {
        // BMO reads `bmc.example.com:623` as scheme `bmc.example.com`; Rivet takes the
        // evident meaning.
        let address = BmcAddress::parse("bmc.example.com:6230").unwrap();
        assert_eq!(address.scheme(), Scheme::Ipmi);
        assert_eq!(address.port(), Some(6230));
    }

    #[test]
    fn redfish_endpoints_follow_the_transport_and_system_rules() {
        let cases = [
            ("redfish://10.0.0.1", "https://10.0.0.1", None),
            (
                "redfish+http://[fd00::1]:8000/redfish/v1/Systems/abc",
                "http://[fd00::1]:8000",
                Some("/redfish/v1/Systems/abc"),
            ),
            (
                "idrac-virtualmedia+https://h/redfish/v1/",
                "https://h",
                None,
            ),
            ("redfish-uefihttp://h/", "https://h", None),
            (
                "redfish-uefihttp://h/redfish/v1",
                "https://h",
                Some("/redfish/v1"),
            ),
        ];
        for (input, base, system) in cases {
            let endpoint = BmcAddress::parse(input)
                .unwrap()
                .redfish_endpoint()
                .unwrap();
            assert_eq!(endpoint.base_url, base, "{input}");
            assert_eq!(endpoint.system_path.as_deref(), system, "{input}");
        }
    }

    #[test]
    fn ipmi_endpoints_default_port_and_privilege() {
        let endpoint = BmcAddress::parse("ipmi://10.0.0.1?PrivilegeLevel=operator")
            .unwrap()
            .ipmi_endpoint()
            .unwrap();
        assert_eq!(endpoint.port, 623);
        assert_eq!(endpoint.privilege, Privilege::Operator);
        assert!(
            BmcAddress::parse("redfish://h")
                .unwrap()
                .ipmi_endpoint()
                .is_none()
        );
    }

    #[test]
    fn display_is_canonical_and_parses_back() {
        for input in [
            "10.0.0.1",
            "ipmi:10.0.0.1:6230",
            "[fe80::1]:623",
            "REDFISH+HTTP://BMC.example.com:8000/redfish/v1/Systems/1?a=b%20c&a=d",
            "libvirt://192.168.122.1:6233/?abc=def",
        ] {
            let address = BmcAddress::parse(input).unwrap();
            let shown = address.to_string();
            assert_eq!(
                BmcAddress::parse(&shown).unwrap(),
                address,
                "{input} -> {shown}"
            );
        }
    }

    #[test]
    fn percent_decoding_leaves_malformed_escapes_alone() {
        assert_eq!(decode("a%2Fb"), "a/b");
        assert_eq!(decode("50%"), "50%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%4"), "%4");
    }
}
