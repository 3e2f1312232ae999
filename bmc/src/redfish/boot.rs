//! Boot-source override (`Boot.BootSourceOverride*`), with the vendor rules that decide
//! which keys to send and where.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::RedfishProvider;
use super::model::{Boot, SettingsBoot};
use super::quirks::QuirkProfile;
use crate::BmcError;
use crate::capability::{BootDevice, BootMode, BootOverride, BootPersistence, BootTarget};

/// The Redfish target for a boot target, as this BMC spells it.
pub(crate) fn redfish_target(
    target: BootTarget,
    profile: &QuirkProfile,
    allowed: &[String],
) -> &'static str {
    match target {
        BootTarget::Pxe => "Pxe",
        BootTarget::Disk => "Hdd",
        BootTarget::UefiHttp => "UefiHttp",
        BootTarget::BiosSetup => "BiosSetup",
        BootTarget::Cd => {
            let vendor = profile.cd_boot_target;
            if allowed.is_empty() || allowed.iter().any(|a| a == vendor) {
                vendor
            } else {
                "Cd"
            }
        }
    }
}

fn parse_target(value: &str) -> Option<BootTarget> {
    match value {
        "Pxe" => Some(BootTarget::Pxe),
        "Hdd" => Some(BootTarget::Disk),
        "Cd" | "UsbCd" => Some(BootTarget::Cd),
        "UefiHttp" => Some(BootTarget::UefiHttp),
        "BiosSetup" => Some(BootTarget::BiosSetup),
        _ => None,
    }
}

fn mode_name(mode: BootMode) -> &'static str {
    match mode {
        BootMode::Uefi => "UEFI",
        BootMode::Legacy => "Legacy",
    }
}

/// What the override in a system document means, or an error naming a target Rivet does not
/// model.
pub(crate) fn parse_override(boot: &Boot) -> Result<Option<BootOverride>, BmcError> {
    let enabled = boot.enabled.as_deref().unwrap_or("Disabled");
    let target = boot.target.as_deref().unwrap_or("None");
    if enabled == "Disabled" || target == "None" {
        return Ok(None);
    }
    let parsed = parse_target(target).ok_or_else(|| {
        BmcError::Protocol(format!(
            "the BMC's boot override target is `{target}`, which Rivet does not model"
        ))
    })?;
    Ok(Some(BootOverride {
        target: parsed,
        persistence: if enabled == "Continuous" {
            BootPersistence::Persistent
        } else {
            BootPersistence::Once
        },
        mode: match boot.mode.as_deref() {
            Some("UEFI") => Some(BootMode::Uefi),
            Some("Legacy") => Some(BootMode::Legacy),
            _ => None,
        },
        http_boot_uri: boot.http_boot_uri.clone().filter(|uri| !uri.is_empty()),
    }))
}

/// The `Boot` object to PATCH. `enabled` is already adjusted to what the BMC supports.
pub(crate) fn boot_patch(
    current: &Boot,
    target: &str,
    enabled: &str,
    requested: &BootOverride,
    profile: &QuirkProfile,
) -> Value {
    let mut boot = Map::new();
    boot.insert("BootSourceOverrideTarget".into(), target.into());
    // Many BMCs reject re-setting Enabled to its current value; some insist on it.
    let enabled_changes = current.enabled.as_deref() != Some(enabled);
    if enabled_changes || profile.always_send_override_enabled || profile.send_full_boot_override {
        boot.insert("BootSourceOverrideEnabled".into(), enabled.into());
    }
    match requested.mode.map(mode_name) {
        Some(mode) if current.mode.as_deref() != Some(mode) || profile.send_full_boot_override => {
            boot.insert("BootSourceOverrideMode".into(), mode.into());
        }
        Some(_) => {}
        None if profile.send_full_boot_override => {
            if let Some(mode) = &current.mode {
                boot.insert("BootSourceOverrideMode".into(), mode.clone().into());
            }
        }
        None => {}
    }
    if requested.target == BootTarget::UefiHttp
        && let Some(uri) = &requested.http_boot_uri
    {
        boot.insert("HttpBootUri".into(), uri.clone().into());
    }
    json!({ "Boot": boot })
}

impl RedfishProvider {
    /// PATCHes `path`; when the BMC demands a precondition (428) or our ETag is stale
    /// (412), fetches the current ETag and tries once more with `If-Match`.
    pub(crate) async fn patch_resource(&self, path: &str, body: &Value) -> Result<(), BmcError> {
        match self.client.patch(path, body, None).await {
            Err(BmcError::Rejected {
                status: 412 | 428, ..
            }) => {
                let (_, etag) = self.client.get_with_etag::<Value>(path).await?;
                self.client
                    .patch(path, body, etag.as_deref())
                    .await
                    .map(drop)
            }
            other => other.map(drop),
        }
    }

    /// Re-sends a persistent override that the BMC could only hold for one boot.
    pub(crate) async fn reapply_sticky_boot(&self) -> Result<(), BmcError> {
        let sticky = self
            .sticky_boot
            .lock()
            .map_err(|_| BmcError::Protocol("boot override state poisoned".into()))?
            .clone();
        if let Some(boot) = sticky {
            tracing::debug!(?boot.target, "re-applying a persistent boot override before power-on");
            self.apply_override(&boot).await.map(drop)?;
        }
        Ok(())
    }

    /// Applies `requested`; returns whether the BMC could only take it for one boot.
    async fn apply_override(&self, requested: &BootOverride) -> Result<bool, BmcError> {
        let system = self.system().await?;
        let current = system.boot.clone().unwrap_or_default();
        if requested.target == BootTarget::Cd && self.profile.dell_virtual_cd_boot {
            self.dell_virtual_cd_boot(requested.persistence).await?;
            return Ok(false);
        }
        let target = redfish_target(requested.target, &self.profile, &current.allowed_targets);
        if !current.allowed_targets.is_empty()
            && !current.allowed_targets.iter().any(|a| a == target)
        {
            return Err(BmcError::InvalidRequest(format!(
                "the BMC does not offer boot target {target}; it offers {}",
                current.allowed_targets.join(", ")
            )));
        }
        if requested.target == BootTarget::UefiHttp
            && requested.http_boot_uri.is_none()
            && current.http_boot_uri.is_none()
        {
            tracing::debug!("UEFI HTTP boot without a URL: the firmware will ask DHCP");
        }
        let continuous_allowed = current.allowed_enabled.is_empty()
            || current.allowed_enabled.iter().any(|e| e == "Continuous");
        let once_only = requested.persistence == BootPersistence::Persistent && !continuous_allowed;
        let enabled = match requested.persistence {
            BootPersistence::Persistent if continuous_allowed => "Continuous",
            BootPersistence::Persistent => {
                tracing::info!(
                    "the BMC cannot hold a persistent boot override; setting it once and \
                     re-applying it before every power-on"
                );
                "Once"
            }
            BootPersistence::Once => "Once",
        };
        let body = boot_patch(&current, target, enabled, requested, &self.profile);
        let settings_path = system
            .settings
            .as_ref()
            .and_then(|s| s.settings_object.as_ref())
            .and_then(|l| l.path())
            .map(str::to_owned);
        let mut sent = false;
        if let Some(settings_path) = settings_path.filter(|p| *p != self.system_path) {
            // Pending-settings resources take boot keys only when they advertise them.
            if let Ok((settings, etag)) = self
                .client
                .get_with_etag::<SettingsBoot>(&settings_path)
                .await
                && settings.boot.contains_key("BootSourceOverrideTarget")
            {
                self.client
                    .patch(&settings_path, &body, etag.or(settings.etag).as_deref())
                    .await?;
                sent = true;
            }
        }
        if !sent {
            self.patch_resource(&self.system_path, &body).await?;
        }
        if self.profile.resync_boot_mode
            && let Some(mode) = requested.mode.map(mode_name)
        {
            let after = self.system().await?.boot.unwrap_or_default();
            if after.mode.as_deref() != Some(mode) {
                tracing::debug!(
                    mode,
                    "boot mode reverted after setting the device; setting it again"
                );
                self.patch_resource(
                    &self.system_path,
                    &json!({ "Boot": { "BootSourceOverrideMode": mode } }),
                )
                .await?;
            }
        }
        Ok(once_only)
    }

    /// Dell: boot the virtual CD through a configuration import of `ServerBoot.1`, because
    /// the standard `Cd` target boots the physical drive on most iDRAC firmware.
    async fn dell_virtual_cd_boot(&self, persistence: BootPersistence) -> Result<(), BmcError> {
        let manager =
            self.system_links.managers.first().ok_or_else(|| {
                BmcError::Protocol("the Dell system names no iDRAC manager".into())
            })?;
        let manager: super::model::Manager = self.client.get(manager).await?;
        let target = find_action(&manager.actions, "ImportSystemConfiguration").ok_or(
            BmcError::Unsupported {
                provider: "redfish",
                capability: "virtual CD boot (the iDRAC has no ImportSystemConfiguration)",
            },
        )?;
        let once = match persistence {
            BootPersistence::Once => "Enabled",
            BootPersistence::Persistent => "Disabled",
        };
        let buffer = format!(
            "<SystemConfiguration><Component FQDD=\"iDRAC.Embedded.1\">\
             <Attribute Name=\"ServerBoot.1#BootOnce\">{once}</Attribute>\
             <Attribute Name=\"ServerBoot.1#FirstBootDevice\">VCD-DVD</Attribute>\
             </Component></SystemConfiguration>"
        );
        let body = json!({
            "ShareParameters": { "Target": "ALL" },
            "ImportBuffer": buffer,
        });
        let reply = self.client.post(&target, &body).await?;
        self.follow_task(&reply, "iDRAC virtual CD boot").await
    }
}

/// The target of an OEM action whose name ends with `suffix`, wherever the vendor put it
/// under `Actions` (Dell nests it under `Oem` with a versioned key).
pub(crate) fn find_action(actions: &Value, suffix: &str) -> Option<String> {
    let object = actions.as_object()?;
    for (key, value) in object {
        if key.ends_with(suffix)
            && let Some(target) = value.get("target").and_then(Value::as_str)
        {
            return Some(target.to_owned());
        }
        if value.is_object()
            && let Some(found) = find_action(value, suffix)
        {
            return Some(found);
        }
    }
    None
}

#[async_trait]
impl BootDevice for RedfishProvider {
    async fn set_boot_override(&self, boot: &BootOverride) -> Result<(), BmcError> {
        if boot.http_boot_uri.is_some() && boot.target != BootTarget::UefiHttp {
            return Err(BmcError::InvalidRequest(
                "an HTTP boot URI only applies to the uefi-http boot target".into(),
            ));
        }
        let sticky = self.apply_override(boot).await?;
        let mut slot = self
            .sticky_boot
            .lock()
            .map_err(|_| BmcError::Protocol("boot override state poisoned".into()))?;
        *slot = sticky.then(|| boot.clone());
        Ok(())
    }

    async fn boot_override(&self) -> Result<Option<BootOverride>, BmcError> {
        let boot = self.system().await?.boot.unwrap_or_default();
        parse_override(&boot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redfish::quirks::Vendor;

    fn boot(json: &str) -> Boot {
        serde_json::from_str(json).unwrap()
    }

    fn request(
        target: BootTarget,
        persistence: BootPersistence,
        mode: Option<BootMode>,
    ) -> BootOverride {
        BootOverride {
            target,
            persistence,
            mode,
            http_boot_uri: None,
        }
    }

    fn profile(vendor: Vendor) -> QuirkProfile {
        QuirkProfile::select(Some(vendor), None, None, None)
    }

    #[test]
    fn unchanged_enabled_is_left_out_for_most_bmcs() {
        let current =
            boot(r#"{"BootSourceOverrideEnabled": "Once", "BootSourceOverrideMode": "UEFI"}"#);
        let wanted = request(BootTarget::Pxe, BootPersistence::Once, Some(BootMode::Uefi));
        let body = boot_patch(&current, "Pxe", "Once", &wanted, &profile(Vendor::Generic));
        assert_eq!(body, json!({"Boot": {"BootSourceOverrideTarget": "Pxe"}}));
    }

    #[test]
    fn supermicro_always_gets_enabled_and_ami_gets_all_three() {
        let current =
            boot(r#"{"BootSourceOverrideEnabled": "Once", "BootSourceOverrideMode": "UEFI"}"#);
        let wanted = request(BootTarget::Disk, BootPersistence::Once, None);
        let body = boot_patch(
            &current,
            "Hdd",
            "Once",
            &wanted,
            &profile(Vendor::Supermicro),
        );
        assert_eq!(
            body,
            json!({"Boot": {"BootSourceOverrideTarget": "Hdd", "BootSourceOverrideEnabled": "Once"}})
        );
        let body = boot_patch(&current, "Hdd", "Once", &wanted, &profile(Vendor::Ami));
        assert_eq!(
            body,
            json!({"Boot": {"BootSourceOverrideTarget": "Hdd", "BootSourceOverrideEnabled": "Once",
                            "BootSourceOverrideMode": "UEFI"}})
        );
    }

    #[test]
    fn mode_and_http_uri_are_sent_when_asked_for() {
        let current = boot(
            r#"{"BootSourceOverrideEnabled": "Disabled", "BootSourceOverrideMode": "Legacy"}"#,
        );
        let mut wanted = request(
            BootTarget::UefiHttp,
            BootPersistence::Persistent,
            Some(BootMode::Uefi),
        );
        wanted.http_boot_uri = Some("http://10.0.0.1/boot.efi".into());
        let body = boot_patch(
            &current,
            "UefiHttp",
            "Continuous",
            &wanted,
            &profile(Vendor::Generic),
        );
        assert_eq!(
            body,
            json!({"Boot": {"BootSourceOverrideTarget": "UefiHttp",
                            "BootSourceOverrideEnabled": "Continuous",
                            "BootSourceOverrideMode": "UEFI",
                            "HttpBootUri": "http://10.0.0.1/boot.efi"}})
        );
    }

    #[test]
    fn supermicro_boots_virtual_media_from_usbcd_when_offered() {
        let sm = profile(Vendor::Supermicro);
        let offered: Vec<String> = ["Pxe", "Cd", "UsbCd"].map(String::from).to_vec();
        assert_eq!(redfish_target(BootTarget::Cd, &sm, &offered), "UsbCd");
        let without: Vec<String> = ["Pxe", "Cd"].map(String::from).to_vec();
        assert_eq!(redfish_target(BootTarget::Cd, &sm, &without), "Cd");
        assert_eq!(
            redfish_target(BootTarget::Cd, &profile(Vendor::Generic), &offered),
            "Cd"
        );
    }

    #[test]
    fn overrides_read_back_and_odd_targets_are_named() {
        assert_eq!(
            parse_override(&boot(
                r#"{"BootSourceOverrideEnabled": "Disabled", "BootSourceOverrideTarget": "Pxe"}"#
            ))
            .unwrap(),
            None
        );
        let got = parse_override(&boot(
            r#"{"BootSourceOverrideEnabled": "Continuous", "BootSourceOverrideTarget": "UsbCd",
                "BootSourceOverrideMode": "UEFI", "HttpBootUri": ""}"#,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            got,
            request(
                BootTarget::Cd,
                BootPersistence::Persistent,
                Some(BootMode::Uefi)
            )
        );
        let err = parse_override(&boot(
            r#"{"BootSourceOverrideEnabled": "Once", "BootSourceOverrideTarget": "SDCard"}"#,
        ))
        .unwrap_err();
        assert!(err.to_string().contains("`SDCard`"), "{err}");
    }

    #[test]
    fn oem_actions_are_found_under_any_versioned_key() {
        let actions = json!({
            "#Manager.Reset": {"target": "/reset"},
            "Oem": {"#OemManager.v1_4_0.OemManager#OemManager.ImportSystemConfiguration":
                    {"target": "/import"}}
        });
        assert_eq!(
            find_action(&actions, "ImportSystemConfiguration").as_deref(),
            Some("/import")
        );
        assert_eq!(find_action(&actions, "Nothing"), None);
    }
}
