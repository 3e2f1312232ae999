//! Firmware inventory and `UpdateService.SimpleUpdate`, and following BMC tasks to their end.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};

use super::RedfishProvider;
use super::client::{Reply, error_message};
use super::model::{self, SoftwareInventory, Task, UpdateService};
use crate::BmcError;
use crate::capability::{Firmware, FirmwareComponent};

/// What a task document says about the outcome; `None` while it is still going.
pub(crate) fn task_verdict(task: &Task, what: &str) -> Option<Result<(), BmcError>> {
    let state = task.task_state.as_deref()?;
    let failed = |state: &str| BmcError::TaskFailed {
        task: format!(
            "{what} ({})",
            task.id
                .as_deref()
                .or(task.odata_id.as_deref())
                .unwrap_or("?")
        ),
        state: state.to_owned(),
        message: task_messages(task),
    };
    match state {
        "Completed" if task.task_status.as_deref() == Some("Critical") => {
            Some(Err(failed("Completed with status Critical")))
        }
        "Completed" => Some(Ok(())),
        "Exception" | "Killed" | "Cancelled" | "Interrupted" => Some(Err(failed(state))),
        _ => None,
    }
}

fn task_messages(task: &Task) -> String {
    let messages: Vec<String> = task.messages.iter().filter_map(|m| m.describe()).collect();
    if messages.is_empty() {
        "no message".into()
    } else {
        messages.join("; ")
    }
}

impl RedfishProvider {
    /// Follows the task an action started, if it started one: a `Location` task monitor
    /// (202 while running), a Task resource, or a Task in the body. An answer with none of
    /// these means the BMC finished synchronously.
    pub(crate) async fn follow_task(&self, reply: &Reply, what: &str) -> Result<(), BmcError> {
        let initial: Option<Task> = model::decode::<Task>(&reply.body)
            .ok()
            .filter(|t| t.task_state.is_some());
        if let Some(task) = &initial
            && let Some(verdict) = task_verdict(task, what)
        {
            return verdict;
        }
        let mut task_path = initial.as_ref().and_then(|t| t.odata_id.clone());
        let mut monitor = match reply.header("Location") {
            Some(location) => self.client.same_origin_path(location)?,
            None => match &task_path {
                Some(path) => path.clone(),
                None => return Ok(()),
            },
        };
        let deadline = tokio::time::Instant::now() + self.options.task_timeout;
        loop {
            let reply = self.client.send(Method::GET, &monitor, None, None).await?;
            let task: Option<Task> = model::decode::<Task>(&reply.body)
                .ok()
                .filter(|t| t.task_state.is_some());
            if let Some(path) = task.as_ref().and_then(|t| t.odata_id.clone()) {
                task_path = Some(path);
            }
            match reply.status {
                StatusCode::ACCEPTED => {}
                StatusCode::NO_CONTENT => return Ok(()),
                status if status.is_success() => match &task {
                    Some(task) => {
                        if let Some(verdict) = task_verdict(task, what) {
                            return verdict;
                        }
                    }
                    // A monitor answers with the operation's own result when it is done.
                    None => return Ok(()),
                },
                StatusCode::NOT_FOUND if task_path.as_deref().is_some_and(|p| p != monitor) => {
                    // Some BMCs drop the monitor once done; the task resource remains.
                    monitor = task_path.clone().unwrap_or_default();
                    continue;
                }
                status => {
                    return Err(BmcError::Rejected {
                        status: status.as_u16(),
                        message: format!("following {what}: {}", error_message(&reply)),
                    });
                }
            }
            if let Some(task) = &task {
                tracing::debug!(what, state = ?task.task_state, percent = ?task.percent_complete, "BMC task running");
            }
            // Honour Retry-After, but never sleep through more than a few polls' worth.
            let interval = self
                .options
                .task_poll_interval
                .max(Duration::from_millis(10));
            let wait = reply
                .header("Retry-After")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(interval)
                .min(interval * 6);
            if tokio::time::Instant::now() + wait > deadline {
                return Err(BmcError::Timeout(self.options.task_timeout));
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn update_service(&self) -> Result<UpdateService, BmcError> {
        let path = self
            .service
            .update_service
            .as_deref()
            .ok_or(BmcError::Unsupported {
                provider: "redfish",
                capability: "firmware (no UpdateService)",
            })?;
        self.client.get(path).await
    }
}

#[async_trait]
impl Firmware for RedfishProvider {
    async fn firmware_components(&self) -> Result<Vec<FirmwareComponent>, BmcError> {
        let service = self.update_service().await?;
        let Some(inventory) = service.firmware_inventory.as_ref().and_then(|l| l.path()) else {
            return Ok(Vec::new());
        };
        let items: Vec<SoftwareInventory> = match self.members(inventory).await {
            // Linked but not served (sushy-tools): there is nothing to list.
            Err(BmcError::Rejected { status: 404, .. }) => {
                tracing::warn!(
                    inventory,
                    "the BMC links a firmware inventory it does not serve"
                );
                Vec::new()
            }
            other => other?,
        };
        let mut components: Vec<FirmwareComponent> = items
            .into_iter()
            .filter_map(|item| {
                Some(FirmwareComponent {
                    id: item.id?,
                    name: item.name,
                    version: item.version,
                    updateable: item.updateable.unwrap_or(false),
                })
            })
            .collect();
        components.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(components)
    }

    async fn update_firmware(&self, image_url: &str, targets: &[String]) -> Result<(), BmcError> {
        let parsed = url::Url::parse(image_url).map_err(|err| {
            BmcError::InvalidRequest(format!("the firmware image location is not a URL: {err}"))
        })?;
        let service = self.update_service().await?;
        let action =
            service
                .actions
                .and_then(|a| a.simple_update)
                .ok_or(BmcError::Unsupported {
                    provider: "redfish",
                    capability: "firmware update (no SimpleUpdate action)",
                })?;
        let target = action
            .target
            .ok_or_else(|| BmcError::Protocol("the SimpleUpdate action has no target".into()))?;
        let mut body = Map::new();
        body.insert("ImageURI".into(), image_url.into());
        let protocol = parsed.scheme().to_ascii_uppercase();
        if action.transfer_protocols.contains(&protocol) {
            body.insert("TransferProtocol".into(), protocol.into());
        }
        if !targets.is_empty() {
            body.insert("Targets".into(), targets.to_vec().into());
        }
        tracing::info!(
            host = parsed.host_str().unwrap_or(""),
            "starting a firmware update"
        );
        let reply = self.client.post(&target, &Value::Object(body)).await?;
        self.follow_task(&reply, "firmware update").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(json: &str) -> Task {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn task_outcomes() {
        assert!(task_verdict(&task(r#"{"TaskState": "Running"}"#), "x").is_none());
        assert!(
            task_verdict(
                &task(r#"{"TaskState": "Completed", "TaskStatus": "OK"}"#),
                "x"
            )
            .unwrap()
            .is_ok()
        );
        assert!(
            task_verdict(
                &task(r#"{"TaskState": "Completed", "TaskStatus": "Warning"}"#),
                "x"
            )
            .unwrap()
            .is_ok()
        );
        let err = task_verdict(
            &task(
                r#"{"Id": "JID_1", "TaskState": "Exception",
                    "Messages": [{"MessageId": "SUP0518", "Message": "Image invalid"}]}"#,
            ),
            "firmware update",
        )
        .unwrap()
        .unwrap_err()
        .to_string();
        assert!(err.contains("firmware update (JID_1)"), "{err}");
        assert!(err.contains("Exception"), "{err}");
        assert!(err.contains("Image invalid (SUP0518)"), "{err}");
        assert!(
            task_verdict(
                &task(r#"{"TaskState": "Completed", "TaskStatus": "Critical"}"#),
                "x"
            )
            .unwrap()
            .is_err()
        );
    }
}
