//! Secure boot, event subscriptions and health.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::RedfishProvider;
use super::model::{EventService, SecureBootResource};
use crate::BmcError;
use crate::capability::{EventSubscription, Events, Health, HealthCheck, SecureBoot};

pub(crate) fn parse_health(value: Option<&str>) -> Result<Health, BmcError> {
    match value {
        Some("OK") => Ok(Health::Ok),
        Some("Warning") => Ok(Health::Warning),
        Some("Critical") => Ok(Health::Critical),
        Some(other) => Err(BmcError::Protocol(format!(
            "the BMC reports health `{other}`"
        ))),
        None => Err(BmcError::Protocol(
            "the BMC reports no health status".into(),
        )),
    }
}

impl RedfishProvider {
    fn secure_boot_path(&self) -> Result<&str, BmcError> {
        self.system_links
            .secure_boot
            .as_deref()
            .ok_or(BmcError::Unsupported {
                provider: "redfish",
                capability: "secure boot (the system links no SecureBoot)",
            })
    }

    async fn subscriptions_path(&self) -> Result<String, BmcError> {
        let service = self
            .service
            .event_service
            .as_deref()
            .ok_or(BmcError::Unsupported {
                provider: "redfish",
                capability: "events (no EventService)",
            })?;
        let service: EventService = self.client.get(service).await?;
        service
            .subscriptions
            .as_ref()
            .and_then(|l| l.path())
            .map(str::to_owned)
            .ok_or_else(|| BmcError::Protocol("the EventService links no Subscriptions".into()))
    }
}

/// Supermicro answers secure-boot reads with a licence error when the feature is not paid for.
fn licence_missing(err: &BmcError) -> bool {
    matches!(err, BmcError::Rejected { message, .. } if message.contains("LicenseNotPassed"))
}

#[async_trait]
impl SecureBoot for RedfishProvider {
    async fn secure_boot_enabled(&self) -> Result<bool, BmcError> {
        let path = self.secure_boot_path()?;
        match self.client.get::<SecureBootResource>(path).await {
            Ok(resource) => resource.secure_boot_enable.ok_or_else(|| {
                BmcError::Protocol("the SecureBoot resource has no SecureBootEnable".into())
            }),
            Err(err) if licence_missing(&err) => Err(BmcError::Unsupported {
                provider: "redfish",
                capability: "secure boot (the BMC licence does not include it)",
            }),
            Err(err) => Err(err),
        }
    }

    async fn set_secure_boot(&self, enabled: bool) -> Result<(), BmcError> {
        let path = self.secure_boot_path()?.to_owned();
        self.patch_resource(&path, &json!({ "SecureBootEnable": enabled }))
            .await
    }
}

#[async_trait]
impl Events for RedfishProvider {
    async fn subscribe(&self, subscription: &EventSubscription) -> Result<String, BmcError> {
        url::Url::parse(&subscription.destination).map_err(|err| {
            BmcError::InvalidRequest(format!("the event destination is not a URL: {err}"))
        })?;
        let collection = self.subscriptions_path().await?;
        let mut body = Map::new();
        body.insert(
            "Destination".into(),
            subscription.destination.clone().into(),
        );
        body.insert("Protocol".into(), "Redfish".into());
        if let Some(context) = &subscription.context {
            body.insert("Context".into(), context.clone().into());
        }
        if !subscription.http_headers.is_empty() {
            let headers: Vec<Value> = subscription
                .http_headers
                .iter()
                .map(|(k, v)| json!({ k: v }))
                .collect();
            body.insert("HttpHeaders".into(), headers.into());
        }
        let reply = self.client.post(&collection, &Value::Object(body)).await?;
        let from_body = super::model::decode::<super::model::Link>(&reply.body)
            .ok()
            .and_then(|l| l.path().map(str::to_owned));
        let id = match reply.header("Location") {
            Some(location) => self.client.same_origin_path(location)?,
            None => from_body.ok_or_else(|| {
                BmcError::Protocol(
                    "the BMC accepted the subscription but returned no Location for it".into(),
                )
            })?,
        };
        Ok(id)
    }

    async fn unsubscribe(&self, id: &str) -> Result<(), BmcError> {
        let collection = self.subscriptions_path().await?;
        let path = self.client.same_origin_path(id)?;
        // Only subscriptions may be deleted through this call.
        if !path.starts_with(&format!("{}/", collection.trim_end_matches('/'))) {
            return Err(BmcError::InvalidRequest(format!(
                "{id} is not a subscription of {collection}"
            )));
        }
        match self.client.delete(&path).await {
            Ok(_) | Err(BmcError::Rejected { status: 404, .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }
}

#[async_trait]
impl HealthCheck for RedfishProvider {
    async fn health(&self) -> Result<Health, BmcError> {
        let status = self.system().await?.status.unwrap_or_default();
        parse_health(status.health_rollup.as_deref().or(status.health.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_values_map_and_unknown_ones_are_named() {
        assert_eq!(parse_health(Some("OK")).unwrap(), Health::Ok);
        assert_eq!(parse_health(Some("Critical")).unwrap(), Health::Critical);
        assert!(
            parse_health(Some("Meh"))
                .unwrap_err()
                .to_string()
                .contains("`Meh`")
        );
        assert!(parse_health(None).is_err());
    }
}
