//! Lenient models of the Redfish resources Rivet reads.
//!
//! Every field is optional and decoded by [`super::lenient`], so unknown enumeration values,
//! wrongly typed fields and vendor extensions never fail a document. Enumerations stay
//! strings: the driver interprets the values it knows and reports the others verbatim.
//! Resources are reached through their `@odata.id` links, never by building paths.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::lenient;

/// Decodes one Redfish document. Only malformed JSON or a non-object fails.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|err| DecodeError(err.to_string()))?;
    if !value.is_object() {
        return Err(DecodeError("the document is not a JSON object".into()));
    }
    T::deserialize(value).map_err(|err| DecodeError(err.to_string()))
}

/// Why a document could not be decoded at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// A reference to another resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Link {
    #[serde(rename = "@odata.id", default, deserialize_with = "lenient::string")]
    pub odata_id: Option<String>,
}

impl Link {
    /// The linked path, without any `#/fragment` pointer; `None` when empty.
    pub fn path(&self) -> Option<&str> {
        let id = self.odata_id.as_deref()?;
        let id = id.split_once('#').map_or(id, |(path, _)| path);
        (!id.is_empty()).then_some(id)
    }
}

/// `Status`, common to most resources.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Status {
    #[serde(default, deserialize_with = "lenient::string")]
    pub state: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub health: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub health_rollup: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRoot {
    #[serde(default, deserialize_with = "lenient::string")]
    pub redfish_version: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub vendor: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub product: Option<String>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub systems: Option<Link>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub managers: Option<Link>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub session_service: Option<Link>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub update_service: Option<Link>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub event_service: Option<Link>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub registries: Option<Link>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub links: Option<ServiceRootLinks>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRootLinks {
    #[serde(default, deserialize_with = "lenient::object")]
    pub sessions: Option<Link>,
}

/// Any resource collection.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Collection {
    #[serde(rename = "Members", default, deserialize_with = "lenient::list")]
    pub members: Vec<Link>,
    #[serde(
        rename = "Members@odata.nextLink",
        default,
        deserialize_with = "lenient::string"
    )]
    pub next_link: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SessionService {
    #[serde(default, deserialize_with = "lenient::object")]
    pub sessions: Option<Link>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ComputerSystem {
    #[serde(rename = "@odata.id", default, deserialize_with = "lenient::string")]
    pub odata_id: Option<String>,
    #[serde(rename = "@odata.etag", default, deserialize_with = "lenient::string")]
    pub etag: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub manufacturer: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub serial_number: Option<String>,
    #[serde(rename = "SKU", default, deserialize_with = "lenient::string")]
    pub sku: Option<String>,
    #[serde(rename = "UUID", default, deserialize_with = "lenient::string")]
    pub uuid: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub host_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub power_state: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub bios_version: Option<String>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub status: Option<Status>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub boot: Option<Boot>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub processor_summary: Option<ProcessorSummary>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub memory_summary: Option<MemorySummary>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub processors: Option<Link>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub ethernet_interfaces: Option<Link>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub storage: Option<Link>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub simple_storage: Option<Link>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub bios: Option<Link>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub secure_boot: Option<Link>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub virtual_media: Option<Link>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub links: Option<SystemLinks>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub actions: Option<SystemActions>,
    #[serde(
        rename = "@Redfish.Settings",
        default,
        deserialize_with = "lenient::object"
    )]
    pub settings: Option<Settings>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SystemLinks {
    #[serde(default, deserialize_with = "lenient::list")]
    pub managed_by: Vec<Link>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub chassis: Vec<Link>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SystemActions {
    #[serde(
        rename = "#ComputerSystem.Reset",
        default,
        deserialize_with = "lenient::object"
    )]
    pub reset: Option<Action>,
}

/// An action: its target and the values it accepts for its main parameter.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Action {
    #[serde(default, deserialize_with = "lenient::string")]
    pub target: Option<String>,
    #[serde(
        rename = "ResetType@Redfish.AllowableValues",
        default,
        deserialize_with = "lenient::strings"
    )]
    pub reset_types: Vec<String>,
    #[serde(
        rename = "@Redfish.ActionInfo",
        default,
        deserialize_with = "lenient::string"
    )]
    pub action_info: Option<String>,
}

/// An `ActionInfo` resource: the parameters an action accepts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActionInfo {
    #[serde(default, deserialize_with = "lenient::list")]
    pub parameters: Vec<ActionParameter>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActionParameter {
    #[serde(default, deserialize_with = "lenient::string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::strings")]
    pub allowable_values: Vec<String>,
}

/// `@Redfish.Settings`: where pending changes go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Settings {
    #[serde(default, deserialize_with = "lenient::object")]
    pub settings_object: Option<Link>,
    #[serde(default, deserialize_with = "lenient::strings")]
    pub supported_apply_times: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Boot {
    #[serde(
        rename = "BootSourceOverrideTarget",
        default,
        deserialize_with = "lenient::string"
    )]
    pub target: Option<String>,
    #[serde(
        rename = "BootSourceOverrideEnabled",
        default,
        deserialize_with = "lenient::string"
    )]
    pub enabled: Option<String>,
    #[serde(
        rename = "BootSourceOverrideMode",
        default,
        deserialize_with = "lenient::string"
    )]
    pub mode: Option<String>,
    #[serde(rename = "HttpBootUri", default, deserialize_with = "lenient::string")]
    pub http_boot_uri: Option<String>,
    #[serde(
        rename = "BootSourceOverrideTarget@Redfish.AllowableValues",
        default,
        deserialize_with = "lenient::strings"
    )]
    pub allowed_targets: Vec<String>,
    #[serde(
        rename = "BootSourceOverrideEnabled@Redfish.AllowableValues",
        default,
        deserialize_with = "lenient::strings"
    )]
    pub allowed_enabled: Vec<String>,
    #[serde(
        rename = "BootSourceOverrideMode@Redfish.AllowableValues",
        default,
        deserialize_with = "lenient::strings"
    )]
    pub allowed_modes: Vec<String>,
}

/// The `Boot` object of a settings resource, with the keys it advertises.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SettingsBoot {
    #[serde(rename = "@odata.etag", default, deserialize_with = "lenient::string")]
    pub etag: Option<String>,
    #[serde(default, deserialize_with = "lenient::map")]
    pub boot: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessorSummary {
    #[serde(default, deserialize_with = "lenient::u64")]
    pub count: Option<u64>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub logical_processor_count: Option<u64>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub model: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct MemorySummary {
    #[serde(
        rename = "TotalSystemMemoryGiB",
        default,
        deserialize_with = "lenient::f64"
    )]
    pub total_gib: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Processor {
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub processor_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub processor_architecture: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub instruction_set: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub model: Option<String>,
    #[serde(rename = "MaxSpeedMHz", default, deserialize_with = "lenient::f64")]
    pub max_speed_mhz: Option<f64>,
    #[serde(
        rename = "OperatingSpeedMHz",
        default,
        deserialize_with = "lenient::f64"
    )]
    pub operating_speed_mhz: Option<f64>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub total_cores: Option<u64>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub total_threads: Option<u64>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub status: Option<Status>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EthernetInterface {
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub name: Option<String>,
    #[serde(rename = "MACAddress", default, deserialize_with = "lenient::string")]
    pub mac_address: Option<String>,
    #[serde(
        rename = "PermanentMACAddress",
        default,
        deserialize_with = "lenient::string"
    )]
    pub permanent_mac_address: Option<String>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub speed_mbps: Option<u64>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub interface_enabled: Option<bool>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub link_status: Option<String>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub status: Option<Status>,
    #[serde(rename = "IPv4Addresses", default, deserialize_with = "lenient::list")]
    pub ipv4_addresses: Vec<IpAddress>,
    #[serde(rename = "IPv6Addresses", default, deserialize_with = "lenient::list")]
    pub ipv6_addresses: Vec<IpAddress>,
    #[serde(rename = "VLAN", default, deserialize_with = "lenient::object")]
    pub vlan: Option<Vlan>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpAddress {
    #[serde(default, deserialize_with = "lenient::string")]
    pub address: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Vlan {
    #[serde(rename = "VLANId", default, deserialize_with = "lenient::u64")]
    pub id: Option<u64>,
    #[serde(rename = "VLANEnable", default, deserialize_with = "lenient::bool")]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Storage {
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub drives: Vec<Link>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Drive {
    #[serde(rename = "@odata.id", default, deserialize_with = "lenient::string")]
    pub odata_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub manufacturer: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub serial_number: Option<String>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub capacity_bytes: Option<u64>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub media_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub protocol: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub identifiers: Vec<Identifier>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub status: Option<Status>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Identifier {
    #[serde(default, deserialize_with = "lenient::string")]
    pub durable_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub durable_name_format: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SimpleStorage {
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub devices: Vec<SimpleStorageDevice>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SimpleStorageDevice {
    #[serde(default, deserialize_with = "lenient::string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub manufacturer: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub capacity_bytes: Option<u64>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub status: Option<Status>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Manager {
    #[serde(rename = "@odata.id", default, deserialize_with = "lenient::string")]
    pub odata_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub firmware_version: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub virtual_media: Option<Link>,
    /// Kept raw: vendor actions (Dell's configuration import) live in `Actions.Oem`.
    #[serde(default)]
    pub actions: Value,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VirtualMediaSlot {
    #[serde(rename = "@odata.id", default, deserialize_with = "lenient::string")]
    pub odata_id: Option<String>,
    #[serde(rename = "@odata.etag", default, deserialize_with = "lenient::string")]
    pub etag: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::strings")]
    pub media_types: Vec<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub image: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub inserted: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub write_protected: Option<bool>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub connected_via: Option<String>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub actions: Option<MediaActions>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct MediaActions {
    #[serde(
        rename = "#VirtualMedia.InsertMedia",
        default,
        deserialize_with = "lenient::object"
    )]
    pub insert: Option<Action>,
    #[serde(
        rename = "#VirtualMedia.EjectMedia",
        default,
        deserialize_with = "lenient::object"
    )]
    pub eject: Option<Action>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BiosResource {
    #[serde(rename = "@odata.id", default, deserialize_with = "lenient::string")]
    pub odata_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub attribute_registry: Option<String>,
    #[serde(default, deserialize_with = "lenient::map")]
    pub attributes: serde_json::Map<String, Value>,
    #[serde(
        rename = "@Redfish.Settings",
        default,
        deserialize_with = "lenient::object"
    )]
    pub settings: Option<Settings>,
}

/// A `MessageRegistryFile`: where a registry (message or attribute) can be downloaded.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegistryFile {
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub registry: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub location: Vec<RegistryLocation>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegistryLocation {
    #[serde(default, deserialize_with = "lenient::string")]
    pub language: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub uri: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeRegistry {
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub registry_entries: Option<RegistryEntries>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegistryEntries {
    #[serde(default, deserialize_with = "lenient::list")]
    pub attributes: Vec<RegistryAttribute>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegistryAttribute {
    #[serde(default, deserialize_with = "lenient::string")]
    pub attribute_name: Option<String>,
    #[serde(rename = "Type", default, deserialize_with = "lenient::string")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub value: Vec<RegistryValue>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub read_only: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub immutable: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub reset_required: Option<bool>,
    #[serde(default, deserialize_with = "lenient::f64")]
    pub lower_bound: Option<f64>,
    #[serde(default, deserialize_with = "lenient::f64")]
    pub upper_bound: Option<f64>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub min_length: Option<u64>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub max_length: Option<u64>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub is_system_unique_property: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegistryValue {
    #[serde(default, deserialize_with = "lenient::string")]
    pub value_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SecureBootResource {
    #[serde(rename = "@odata.etag", default, deserialize_with = "lenient::string")]
    pub etag: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub secure_boot_enable: Option<bool>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub secure_boot_current_boot: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateService {
    #[serde(default, deserialize_with = "lenient::object")]
    pub firmware_inventory: Option<Link>,
    #[serde(default, deserialize_with = "lenient::object")]
    pub actions: Option<UpdateActions>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct UpdateActions {
    #[serde(
        rename = "#UpdateService.SimpleUpdate",
        default,
        deserialize_with = "lenient::object"
    )]
    pub simple_update: Option<SimpleUpdateAction>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SimpleUpdateAction {
    #[serde(default, deserialize_with = "lenient::string")]
    pub target: Option<String>,
    #[serde(
        rename = "TransferProtocol@Redfish.AllowableValues",
        default,
        deserialize_with = "lenient::strings"
    )]
    pub transfer_protocols: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SoftwareInventory {
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub version: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub updateable: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    #[serde(rename = "@odata.id", default, deserialize_with = "lenient::string")]
    pub odata_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub task_state: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub task_status: Option<String>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub percent_complete: Option<u64>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub messages: Vec<Message>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Message {
    #[serde(default, deserialize_with = "lenient::string")]
    pub message_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub message: Option<String>,
}

impl Message {
    /// `text (MessageId)`, or whichever of the two is present.
    pub fn describe(&self) -> Option<String> {
        match (&self.message, &self.message_id) {
            (Some(text), Some(id)) => Some(format!("{text} ({id})")),
            (Some(text), None) => Some(text.clone()),
            (None, Some(id)) => Some(id.clone()),
            (None, None) => None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EventService {
    #[serde(default, deserialize_with = "lenient::object")]
    pub subscriptions: Option<Link>,
}

/// A Redfish error body: `{"error": {"code", "message", "@Message.ExtendedInfo": […]}}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default, deserialize_with = "lenient::object")]
    pub error: Option<ErrorDetail>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorDetail {
    #[serde(default, deserialize_with = "lenient::string")]
    pub code: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub message: Option<String>,
    #[serde(
        rename = "@Message.ExtendedInfo",
        default,
        deserialize_with = "lenient::list"
    )]
    pub extended_info: Vec<Message>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_vendor_values_never_fail_the_document() {
        // The four mutations that break schema-generated models, plus invalid dates,
        // nulls and wrong types everywhere.
        let system: ComputerSystem = decode(
            br#"{
                "Status": {"State": "Degraded", "Health": 7},
                "PowerState": "Unknown",
                "ProcessorSummary": {"Count": "2", "Model": null},
                "MemorySummary": {"TotalSystemMemoryGiB": "512"},
                "LastResetTime": "0000-00-00T00:00:00+00:00",
                "UUID": "",
                "Boot": {"BootSourceOverrideTarget@Redfish.AllowableValues": ["Pxe", 3, null]},
                "Links": {"ManagedBy": null, "Chassis": [{"@odata.id": "/c"}, "junk"]},
                "Actions": "none",
                "Oem": {"Vendor": {"Anything": [1, 2, 3]}}
            }"#,
        )
        .unwrap();
        assert_eq!(system.power_state.as_deref(), Some("Unknown"));
        assert_eq!(system.processor_summary.unwrap().count, Some(2));
        assert_eq!(system.memory_summary.unwrap().total_gib, Some(512.0));
        let status = system.status.unwrap();
        assert_eq!(status.state.as_deref(), Some("Degraded"));
        assert_eq!(status.health.as_deref(), Some("7"));
        assert_eq!(system.boot.unwrap().allowed_targets, ["Pxe", "3"]);
        let links = system.links.unwrap();
        assert!(links.managed_by.is_empty());
        assert_eq!(links.chassis[0].path(), Some("/c"));
        assert!(system.actions.is_none());

        let media: VirtualMediaSlot =
            decode(br#"{"MediaTypes": ["USB", "CD"], "Inserted": "True"}"#).unwrap();
        assert_eq!(media.media_types, ["USB", "CD"]);
        assert_eq!(media.inserted, Some(true));
    }

    #[test]
    fn only_broken_json_or_non_objects_fail() {
        assert!(decode::<ComputerSystem>(b"{").is_err());
        assert!(decode::<ComputerSystem>(b"[1]").is_err());
        assert!(decode::<ComputerSystem>(b"\"x\"").is_err());
        assert!(decode::<ComputerSystem>(b"{}").is_ok());
    }

    #[test]
    fn links_drop_json_pointer_fragments() {
        let link: Link =
            serde_json::from_str(r##"{"@odata.id": "/redfish/v1/Chassis/1/Thermal#/Fans/0"}"##)
                .unwrap();
        assert_eq!(link.path(), Some("/redfish/v1/Chassis/1/Thermal"));
        let empty: Link = serde_json::from_str(r#"{"@odata.id": ""}"#).unwrap();
        assert_eq!(empty.path(), None);
    }
}
