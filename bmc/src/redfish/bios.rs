//! BIOS attributes, their registry (the FirmwareSchema shape) and validated changes.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::RedfishProvider;
use super::model::{AttributeRegistry, BiosResource, RegistryFile};
use crate::BmcError;
use crate::capability::{ApplyTime, AttributeSchema, AttributeType, Attributes, Bios};

/// Registry files fetched at most while looking for the BIOS registry (HPE lists dozens of
/// message registries).
const MAX_REGISTRY_PROBES: usize = 8;

pub(crate) fn schema_from_registry(registry: &AttributeRegistry) -> Vec<AttributeSchema> {
    let Some(entries) = &registry.registry_entries else {
        return Vec::new();
    };
    let mut schema: Vec<AttributeSchema> = entries
        .attributes
        .iter()
        .filter_map(|a| {
            Some(AttributeSchema {
                name: a.attribute_name.clone()?,
                attribute_type: match a.kind.as_deref() {
                    Some("Enumeration") => Some(AttributeType::Enumeration),
                    Some("String") => Some(AttributeType::String),
                    Some("Integer") => Some(AttributeType::Integer),
                    Some("Boolean") => Some(AttributeType::Boolean),
                    Some("Password") => Some(AttributeType::Password),
                    _ => None,
                },
                allowable_values: a
                    .value
                    .iter()
                    .filter_map(|v| v.value_name.clone())
                    .collect(),
                lower_bound: a.lower_bound.map(|b| b.round() as i64),
                upper_bound: a.upper_bound.map(|b| b.round() as i64),
                min_length: a.min_length,
                max_length: a.max_length,
                read_only: a.read_only == Some(true) || a.immutable == Some(true),
                reset_required: a.reset_required.unwrap_or(false),
                unique: a.is_system_unique_property.unwrap_or(false),
            })
        })
        .collect();
    schema.sort_by(|a, b| a.name.cmp(&b.name));
    schema
}

/// Checks every change against the registry (when there is one) or at least against the
/// attributes the BIOS has, and reports every problem at once.
pub(crate) fn validate_changes(
    schema: Option<&[AttributeSchema]>,
    current: &Map<String, Value>,
    changes: &Attributes,
) -> Result<(), BmcError> {
    let mut problems = Vec::new();
    for (name, value) in changes {
        let entry = schema.and_then(|s| s.iter().find(|a| a.name == *name));
        let Some(entry) = entry else {
            if !current.contains_key(name) {
                problems.push(format!("the BIOS has no attribute {name}"));
            }
            continue;
        };
        if entry.read_only {
            problems.push(format!("{name} is read-only"));
            continue;
        }
        match entry.attribute_type {
            Some(AttributeType::Enumeration) => match value.as_str() {
                Some(v)
                    if entry.allowable_values.is_empty()
                        || entry.allowable_values.iter().any(|a| a == v) => {}
                Some(v) => problems.push(format!(
                    "{name} cannot be {v}; allowed: {}",
                    entry.allowable_values.join(", ")
                )),
                None => problems.push(format!("{name} takes one of its named values")),
            },
            Some(AttributeType::Integer) => match value.as_i64() {
                Some(v)
                    if entry.lower_bound.is_some_and(|lo| v < lo)
                        || entry.upper_bound.is_some_and(|hi| v > hi) =>
                {
                    problems.push(format!(
                        "{name} must be between {} and {}",
                        entry.lower_bound.map_or("-".into(), |b| b.to_string()),
                        entry.upper_bound.map_or("-".into(), |b| b.to_string())
                    ));
                }
                Some(_) => {}
                None => problems.push(format!("{name} takes an integer")),
            },
            Some(AttributeType::Boolean) if !value.is_boolean() => {
                problems.push(format!("{name} takes true or false"));
            }
            Some(AttributeType::String | AttributeType::Password) => match value.as_str() {
                Some(v) => {
                    let len = v.chars().count() as u64;
                    if entry.min_length.is_some_and(|m| len < m)
                        || entry.max_length.is_some_and(|m| len > m)
                    {
                        problems.push(format!(
                            "{name} must be {}–{} characters long",
                            entry.min_length.unwrap_or(0),
                            entry.max_length.map_or("any".into(), |m| m.to_string())
                        ));
                    }
                }
                None => problems.push(format!("{name} takes a string")),
            },
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(BmcError::InvalidRequest(format!(
            "BIOS change refused before sending: {}",
            problems.join("; ")
        )))
    }
}

impl RedfishProvider {
    async fn bios_resource(&self) -> Result<(String, BiosResource), BmcError> {
        let path = self
            .system_links
            .bios
            .clone()
            .ok_or(BmcError::Unsupported {
                provider: "redfish",
                capability: "BIOS settings (the system links no Bios)",
            })?;
        let bios = self.client.get(&path).await?;
        Ok((path, bios))
    }

    /// Finds the attribute registry: through the service's `Registries` files, else at the
    /// Dell-style `<bios>/BiosRegistry`.
    async fn attribute_registry(
        &self,
        bios_path: &str,
        name: Option<&str>,
    ) -> Result<Option<AttributeRegistry>, BmcError> {
        let wanted = |registry: &AttributeRegistry| {
            registry.registry_entries.is_some()
                && name.is_none_or(|n| registry.id.as_deref() == Some(n))
        };
        if let Some(registries) = &self.service.registries {
            let mut files = self.member_paths(registries).await.unwrap_or_default();
            // Exact names first, then anything that looks like a BIOS or attribute registry.
            let last = |p: &String| p.rsplit('/').next().unwrap_or_default().to_owned();
            files.retain(|p| {
                let l = last(p);
                name.is_some_and(|n| l == n) || l.contains("Bios") || l.contains("Attribute")
            });
            files.sort_by_key(|p| name.is_none_or(|n| last(p) != n));
            for file in files.iter().take(MAX_REGISTRY_PROBES) {
                let Ok(file) = self.client.get::<RegistryFile>(file).await else {
                    continue;
                };
                let location = file
                    .location
                    .iter()
                    .find(|l| {
                        l.language
                            .as_deref()
                            .is_none_or(|lang| lang.starts_with("en"))
                    })
                    .or(file.location.first())
                    .and_then(|l| l.uri.clone());
                let Some(location) = location else { continue };
                match self.client.get::<AttributeRegistry>(&location).await {
                    Ok(registry) if wanted(&registry) => return Ok(Some(registry)),
                    Ok(_) => {}
                    Err(err) if err.is_transient() => return Err(err),
                    Err(err) => tracing::debug!(location, error = %err, "registry unreadable"),
                }
            }
        }
        let dell_style = format!("{}/BiosRegistry", bios_path.trim_end_matches('/'));
        match self.client.get::<AttributeRegistry>(&dell_style).await {
            Ok(registry) if registry.registry_entries.is_some() => Ok(Some(registry)),
            Ok(_) => Ok(None),
            Err(err) if err.is_transient() => Err(err),
            Err(_) => Ok(None),
        }
    }
}

#[async_trait]
impl Bios for RedfishProvider {
    async fn bios_attributes(&self) -> Result<Attributes, BmcError> {
        let (_, bios) = self.bios_resource().await?;
        Ok(bios.attributes.into_iter().collect())
    }

    async fn bios_schema(&self) -> Result<Vec<AttributeSchema>, BmcError> {
        let (path, bios) = self.bios_resource().await?;
        let registry = self
            .attribute_registry(&path, bios.attribute_registry.as_deref())
            .await?
            .ok_or(BmcError::Unsupported {
                provider: "redfish",
                capability: "BIOS attribute registry (none published)",
            })?;
        Ok(schema_from_registry(&registry))
    }

    async fn apply_bios(&self, changes: &Attributes) -> Result<ApplyTime, BmcError> {
        if changes.is_empty() {
            return Err(BmcError::InvalidRequest(
                "no BIOS attribute to change".into(),
            ));
        }
        let (path, bios) = self.bios_resource().await?;
        let registry = self
            .attribute_registry(&path, bios.attribute_registry.as_deref())
            .await?;
        let schema = registry.as_ref().map(schema_from_registry);
        validate_changes(schema.as_deref(), &bios.attributes, changes)?;
        let settings = bios.settings.as_ref();
        let settings_path = settings
            .and_then(|s| s.settings_object.as_ref())
            .and_then(|l| l.path())
            .map(str::to_owned);
        let mut body = json!({ "Attributes": changes });
        if settings.is_some_and(|s| s.supported_apply_times.iter().any(|t| t == "OnReset")) {
            body["@Redfish.SettingsApplyTime"] = json!({ "ApplyTime": "OnReset" });
        }
        match settings_path {
            Some(settings_path) => {
                self.patch_resource(&settings_path, &body).await?;
                Ok(ApplyTime::OnReset)
            }
            None => {
                self.patch_resource(&path, &body).await?;
                Ok(ApplyTime::Immediate)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redfish::model::decode;

    fn registry() -> Vec<AttributeSchema> {
        let registry: AttributeRegistry = decode(
            br#"{"Id": "R", "RegistryEntries": {"Attributes": [
                {"AttributeName": "ProcTurboMode", "Type": "Enumeration",
                 "Value": [{"ValueName": "Enabled"}, {"ValueName": "Disabled"}]},
                {"AttributeName": "ProcCoreDisable", "Type": "Integer", "LowerBound": 0, "UpperBound": 64},
                {"AttributeName": "SystemModelName", "Type": "String", "ReadOnly": true},
                {"AttributeName": "AssetTag", "Type": "String", "MaxLength": 4,
                 "IsSystemUniqueProperty": true},
                {"AttributeName": "Secure", "Type": "Boolean", "ResetRequired": true},
                {"AttributeName": "Odd", "Type": "Frobnicate"},
                {"Type": "String"}
            ]}}"#,
        )
        .unwrap();
        schema_from_registry(&registry)
    }

    fn changes(json: Value) -> Attributes {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn registry_entries_become_firmware_schema() {
        let schema = registry();
        assert_eq!(schema.len(), 6);
        let turbo = schema.iter().find(|a| a.name == "ProcTurboMode").unwrap();
        assert_eq!(turbo.attribute_type, Some(AttributeType::Enumeration));
        assert_eq!(turbo.allowable_values, ["Enabled", "Disabled"]);
        let odd = schema.iter().find(|a| a.name == "Odd").unwrap();
        assert_eq!(odd.attribute_type, None);
        let find = |name: &str| schema.iter().find(|a| a.name == name).unwrap();
        assert!(find("Secure").reset_required);
        assert!(find("AssetTag").unique);
        assert!(!find("ProcTurboMode").unique);
    }

    #[test]
    fn every_bad_change_is_reported_together() {
        let schema = registry();
        let current = Map::new();
        let err = validate_changes(
            Some(&schema),
            &current,
            &changes(json!({
                "ProcTurboMode": "Sometimes",
                "ProcCoreDisable": 65,
                "SystemModelName": "x",
                "AssetTag": "too long",
                "Secure": "yes",
                "Missing": 1
            })),
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "ProcTurboMode cannot be Sometimes; allowed: Enabled, Disabled",
            "ProcCoreDisable must be between 0 and 64",
            "SystemModelName is read-only",
            "AssetTag must be 0–4 characters long",
            "Secure takes true or false",
            "the BIOS has no attribute Missing",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in {err}");
        }
        validate_changes(
            Some(&schema),
            &current,
            &changes(json!({"ProcTurboMode": "Disabled", "ProcCoreDisable": 4, "Secure": true})),
        )
        .unwrap();
    }

    #[test]
    fn without_a_registry_only_known_names_pass() {
        let current: Map<String, Value> =
            serde_json::from_value(json!({"BootMode": "Uefi"})).unwrap();
        validate_changes(None, &current, &changes(json!({"BootMode": "Bios"}))).unwrap();
        assert!(validate_changes(None, &current, &changes(json!({"Nope": 1}))).is_err());
    }
}
