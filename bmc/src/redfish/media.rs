//! Virtual media: find the slots, clear stale media, insert the way this vendor wants.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::RedfishProvider;
use super::model::{Manager, VirtualMediaSlot};
use super::quirks::{MediaInsert, MediaLocation};
use crate::BmcError;
use crate::capability::{MediaKind, MediaSlot, VirtualMedia};

fn kind_of(media_type: &str) -> Option<MediaKind> {
    match media_type {
        "CD" | "DVD" => Some(MediaKind::Cd),
        "USBStick" | "USB" => Some(MediaKind::Usb),
        "Floppy" => Some(MediaKind::Floppy),
        _ => None,
    }
}

/// Whether a slot takes `kind` (a slot that lists no media types is assumed to take any).
pub(crate) fn accepts(slot: &VirtualMediaSlot, kind: MediaKind) -> bool {
    slot.media_types.is_empty() || slot.media_types.iter().any(|t| kind_of(t) == Some(kind))
}

/// Whether something is (or may still be) in the slot. iDRAC can report `Inserted` after an
/// eject; treating that as inserted costs one harmless extra eject.
pub(crate) fn occupied(slot: &VirtualMediaSlot) -> bool {
    slot.inserted == Some(true) || slot.image.as_deref().is_some_and(|i| !i.is_empty())
}

/// The properties a BMC's refusal asks for, in the form to add them.
fn missing_properties(message: &str, image_url: &str) -> Vec<(&'static str, Value)> {
    let protocol = image_url
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_uppercase())
        .unwrap_or_else(|| "HTTP".into());
    let mut wanted = Vec::new();
    if message.contains("TransferProtocolType") {
        wanted.push(("TransferProtocolType", Value::from(protocol)));
    }
    if message.contains("TransferMethod") {
        wanted.push(("TransferMethod", Value::from("Stream")));
    }
    // NVIDIA DGX BMCs demand credentials even for anonymous images (Ironic bug 2071945).
    if message.contains("UserName") || message.contains("Password") {
        wanted.push(("UserName", Value::from("none")));
        wanted.push(("Password", Value::from("none")));
    }
    wanted
}

impl RedfishProvider {
    /// The slots of the first location (per the quirk profile) that has any.
    async fn media_slots(&self) -> Result<Vec<(String, VirtualMediaSlot)>, BmcError> {
        let mut from_managers = Vec::new();
        for manager in &self.system_links.managers {
            match self.client.get::<Manager>(manager).await {
                Ok(m) => {
                    if let Some(path) = m.virtual_media.as_ref().and_then(|l| l.path()) {
                        from_managers.push(path.to_owned());
                    }
                }
                Err(err) if err.is_transient() => return Err(err),
                Err(err) => tracing::debug!(manager, error = %err, "manager unreadable"),
            }
        }
        let from_system: Vec<String> = self.system_links.virtual_media.iter().cloned().collect();
        let ordered = match self.profile.media_location {
            MediaLocation::SystemsFirst => [from_system, from_managers].concat(),
            MediaLocation::ManagersFirst => [from_managers, from_system].concat(),
        };
        for collection in ordered {
            let slots: Vec<(String, VirtualMediaSlot)> =
                self.members_with_paths(&collection).await?;
            if !slots.is_empty() {
                return Ok(slots);
            }
        }
        Err(BmcError::Unsupported {
            provider: "redfish",
            capability: "virtual media (the BMC exposes no slots)",
        })
    }

    async fn eject_slot(&self, path: &str, slot: &VirtualMediaSlot) -> Result<(), BmcError> {
        let eject = slot
            .actions
            .as_ref()
            .and_then(|a| a.eject.as_ref())
            .and_then(|a| a.target.clone());
        match eject {
            // HPE wants a body, even an empty one.
            Some(target) => self.client.post(&target, &json!({})).await.map(drop),
            None => {
                let body = json!({ "Image": null, "Inserted": false });
                self.client
                    .patch(path, &body, slot.etag.as_deref())
                    .await
                    .map(drop)
            }
        }
    }

    async fn insert_into(
        &self,
        path: &str,
        slot: &VirtualMediaSlot,
        image_url: &str,
    ) -> Result<(), BmcError> {
        let action = slot
            .actions
            .as_ref()
            .and_then(|a| a.insert.as_ref())
            .and_then(|a| a.target.clone());
        let (target, with_flags) = match (self.profile.media_insert, action) {
            (MediaInsert::Action { with_flags }, Some(target)) => (Some(target), with_flags),
            // Slots without the action (Lenovo XCC) take a PATCH.
            _ => (None, true),
        };
        let mut body = Map::new();
        body.insert("Image".into(), image_url.into());
        // Supermicro refuses these when they carry their default values.
        if with_flags {
            body.insert("Inserted".into(), true.into());
            body.insert("WriteProtected".into(), true.into());
        }
        // Some BMCs insist on properties others refuse; add them when an answer asks.
        for _ in 0..3 {
            let body_value = Value::Object(body.clone());
            let result = match &target {
                Some(target) => self.client.post(target, &body_value).await.map(drop),
                None => self
                    .client
                    .patch(path, &body_value, slot.etag.as_deref())
                    .await
                    .map(drop),
            };
            match result {
                Err(BmcError::Rejected {
                    status: 400,
                    message,
                }) => {
                    let missing: Vec<_> = missing_properties(&message, image_url)
                        .into_iter()
                        .filter(|(key, _)| !body.contains_key(*key))
                        .collect();
                    if missing.is_empty() {
                        return Err(BmcError::Rejected {
                            status: 400,
                            message,
                        });
                    }
                    for (key, value) in missing {
                        tracing::debug!(key, "the BMC asked for an extra InsertMedia property");
                        body.insert(key.into(), value);
                    }
                }
                other => return other,
            }
        }
        Err(BmcError::Protocol(
            "the BMC kept refusing InsertMedia after adding the properties it asked for".into(),
        ))
    }
}

#[async_trait]
impl VirtualMedia for RedfishProvider {
    async fn insert_media(&self, image_url: &str, kind: MediaKind) -> Result<(), BmcError> {
        url::Url::parse(image_url).map_err(|err| {
            BmcError::InvalidRequest(format!("the image location is not a URL: {err}"))
        })?;
        let slots = self.media_slots().await?;
        let candidates: Vec<&(String, VirtualMediaSlot)> = slots
            .iter()
            .filter(|(_, slot)| accepts(slot, kind))
            .collect();
        if candidates.is_empty() {
            return Err(BmcError::InvalidRequest(format!(
                "no virtual-media slot takes {kind:?} media"
            )));
        }
        for (path, slot) in candidates.iter().filter(|(_, slot)| occupied(slot)) {
            tracing::debug!(slot = %path, "ejecting stale media first");
            if let Err(err) = self.eject_slot(path, slot).await {
                tracing::warn!(slot = %path, error = %err, "could not eject stale media");
            }
        }
        let prefix = self.profile.preferred_slot_prefix;
        let (path, slot) = candidates
            .iter()
            .find(|(_, slot)| {
                prefix.is_some_and(|p| slot.id.as_deref().is_some_and(|id| id.starts_with(p)))
            })
            .or_else(|| candidates.first())
            .copied()
            .ok_or_else(|| BmcError::Protocol("no usable virtual-media slot".into()))?;
        tracing::info!(slot = %path, "inserting virtual media");
        self.insert_into(path, slot, image_url).await
    }

    async fn eject_media(&self, kind: MediaKind) -> Result<(), BmcError> {
        let slots = self.media_slots().await?;
        for (path, slot) in slots
            .iter()
            .filter(|(_, slot)| accepts(slot, kind) && occupied(slot))
        {
            tracing::info!(slot = %path, "ejecting virtual media");
            self.eject_slot(path, slot).await?;
        }
        Ok(())
    }

    async fn media_status(&self) -> Result<Vec<MediaSlot>, BmcError> {
        let slots = self.media_slots().await?;
        Ok(slots
            .into_iter()
            .map(|(path, slot)| {
                let mut kinds: Vec<MediaKind> =
                    slot.media_types.iter().filter_map(|t| kind_of(t)).collect();
                kinds.dedup();
                let image = slot.image.clone().filter(|i| !i.is_empty());
                MediaSlot {
                    id: path,
                    kinds,
                    inserted: slot.inserted.unwrap_or(image.is_some()),
                    image,
                    write_protected: slot.write_protected,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(json: &str) -> VirtualMediaSlot {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn slots_are_matched_by_media_type() {
        let cd = slot(r#"{"MediaTypes": ["CD", "DVD"]}"#);
        assert!(accepts(&cd, MediaKind::Cd));
        assert!(!accepts(&cd, MediaKind::Usb));
        let any = slot(r#"{"MediaTypes": []}"#);
        assert!(accepts(&any, MediaKind::Floppy));
        let usb = slot(r#"{"MediaTypes": ["USBStick"]}"#);
        assert!(accepts(&usb, MediaKind::Usb));
    }

    #[test]
    fn stale_inserted_flags_count_as_occupied() {
        assert!(occupied(&slot(r#"{"Inserted": true, "Image": null}"#)));
        assert!(occupied(&slot(
            r#"{"Inserted": false, "Image": "http://x/a.iso"}"#
        )));
        assert!(!occupied(&slot(r#"{"Inserted": false, "Image": ""}"#)));
    }

    #[test]
    fn refusals_name_the_properties_to_add() {
        let asked = missing_properties(
            "The property TransferProtocolType is a required property (PropertyMissing)",
            "https://images/boot.iso",
        );
        assert_eq!(asked, [("TransferProtocolType", Value::from("HTTPS"))]);
        let dgx = missing_properties("UserName and Password must be passed together", "http://x");
        assert_eq!(dgx.len(), 2);
        assert!(missing_properties("PropertyValueNotInList", "http://x").is_empty());
    }
}
