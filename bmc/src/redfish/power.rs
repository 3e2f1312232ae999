//! Power through `ComputerSystem.Reset`, with reset types chosen from what the BMC allows.

use async_trait::async_trait;
use serde_json::json;

use super::RedfishProvider;
use crate::BmcError;
use crate::capability::{Power, PowerOffMode, PowerState, wait_for_power_state};

/// What the caller wants; mapped onto the reset types the BMC offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intent {
    On,
    HardOff,
    SoftOff,
    Restart,
}

impl Intent {
    /// Reset types that achieve the intent, best first. `PushPowerButton` toggles, so it
    /// only stands in where a toggle from the expected state does the job.
    fn candidates(self) -> &'static [&'static str] {
        match self {
            Intent::On => &["On", "ForceOn", "PushPowerButton"],
            Intent::HardOff => &["ForceOff"],
            Intent::SoftOff => &["GracefulShutdown", "PushPowerButton"],
            Intent::Restart => &["ForceRestart", "PowerCycle", "GracefulRestart"],
        }
    }

    /// The state the host settles in once the intent is carried out.
    fn settles_in(self) -> PowerState {
        match self {
            Intent::On | Intent::Restart => PowerState::On,
            Intent::HardOff | Intent::SoftOff => PowerState::Off,
        }
    }
}

/// The reset type to send, given the BMC's allowable values (empty: the BMC did not say, so
/// the standard value is tried).
pub(crate) fn choose_reset_type(intent: Intent, allowed: &[String]) -> Option<&'static str> {
    let candidates = intent.candidates();
    if allowed.is_empty() {
        return candidates.first().copied();
    }
    candidates
        .iter()
        .copied()
        .find(|c| allowed.iter().any(|a| a == c))
}

/// Maps Redfish `PowerState`. `Paused` (a suspended VM) is powered.
pub(crate) fn parse_power_state(value: Option<&str>) -> Result<PowerState, BmcError> {
    match value {
        Some("On") | Some("Paused") => Ok(PowerState::On),
        Some("Off") => Ok(PowerState::Off),
        Some("PoweringOn") => Ok(PowerState::PoweringOn),
        Some("PoweringOff") => Ok(PowerState::PoweringOff),
        Some(other) => Err(BmcError::Protocol(format!(
            "the BMC reports power state `{other}`"
        ))),
        None => Err(BmcError::Protocol("the BMC reports no power state".into())),
    }
}

impl RedfishProvider {
    /// Posts the reset that carries out `intent`. A refusal because the host is already
    /// where it should be (400/409 on many BMCs) counts as success.
    pub(crate) async fn request_power(&self, intent: Intent) -> Result<(), BmcError> {
        let reset = self.reset.as_ref().ok_or(BmcError::Unsupported {
            provider: "redfish",
            capability: "power control (the system has no Reset action)",
        })?;
        let reset_type = choose_reset_type(intent, &reset.allowed).ok_or_else(|| {
            BmcError::InvalidRequest(format!(
                "the BMC offers reset types [{}], none of which does {intent:?}",
                reset.allowed.join(", ")
            ))
        })?;
        if intent == Intent::On {
            self.reapply_sticky_boot().await?;
        }
        if reset_type == "PushPowerButton" {
            // A toggle: only press it when the host is not already where we want it.
            if self.power_state().await? == intent.settles_in() {
                return Ok(());
            }
        }
        tracing::debug!(system = %self.system_path, reset_type, "power request");
        let result = self
            .client
            .post(&reset.target, &json!({ "ResetType": reset_type }))
            .await;
        match result {
            Err(BmcError::Rejected { status, .. })
                if (status == 400 || status == 409)
                    && intent != Intent::Restart
                    && self.power_state().await.ok() == Some(intent.settles_in()) =>
            {
                tracing::debug!(status, "BMC refused a power change that was already done");
                Ok(())
            }
            other => other.map(drop),
        }
    }
}

#[async_trait]
impl Power for RedfishProvider {
    async fn power_state(&self) -> Result<PowerState, BmcError> {
        parse_power_state(self.system().await?.power_state.as_deref())
    }

    async fn power_on(&self) -> Result<(), BmcError> {
        self.request_power(Intent::On).await
    }

    async fn power_off(&self, mode: PowerOffMode) -> Result<(), BmcError> {
        match mode {
            PowerOffMode::Hard => self.request_power(Intent::HardOff).await,
            PowerOffMode::Soft => self.request_power(Intent::SoftOff).await,
        }
    }

    async fn reset(&self) -> Result<(), BmcError> {
        self.request_power(Intent::Restart).await
    }

    /// Off, wait until off, on — as Ironic reboots, so a once-only boot override can be
    /// re-applied in between and no vendor's `PowerCycle` semantics matter.
    async fn power_cycle(&self) -> Result<(), BmcError> {
        if self.power_state().await? != PowerState::Off {
            self.request_power(Intent::HardOff).await?;
            wait_for_power_state(
                self,
                PowerState::Off,
                self.options.power_timeout,
                self.options.power_poll_interval,
            )
            .await?;
        }
        self.request_power(Intent::On).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn reset_types_fall_back_along_what_the_bmc_allows() {
        let dell = allowed(&[
            "On",
            "ForceOff",
            "ForceRestart",
            "GracefulRestart",
            "GracefulShutdown",
            "PushPowerButton",
            "Nmi",
            "PowerCycle",
        ]);
        assert_eq!(choose_reset_type(Intent::On, &dell), Some("On"));
        assert_eq!(
            choose_reset_type(Intent::Restart, &dell),
            Some("ForceRestart")
        );
        let minimal = allowed(&["ForceOn", "ForceOff", "PushPowerButton", "PowerCycle"]);
        assert_eq!(choose_reset_type(Intent::On, &minimal), Some("ForceOn"));
        assert_eq!(
            choose_reset_type(Intent::SoftOff, &minimal),
            Some("PushPowerButton")
        );
        assert_eq!(
            choose_reset_type(Intent::Restart, &minimal),
            Some("PowerCycle")
        );
        let no_off = allowed(&["On", "GracefulShutdown"]);
        assert_eq!(choose_reset_type(Intent::HardOff, &no_off), None);
        assert_eq!(choose_reset_type(Intent::HardOff, &[]), Some("ForceOff"));
    }

    #[test]
    fn power_states_map_and_unknown_ones_are_named() {
        assert_eq!(parse_power_state(Some("Paused")).unwrap(), PowerState::On);
        assert_eq!(
            parse_power_state(Some("PoweringOff")).unwrap(),
            PowerState::PoweringOff
        );
        let err = parse_power_state(Some("Unknown")).unwrap_err();
        assert!(err.to_string().contains("`Unknown`"), "{err}");
        assert!(parse_power_state(None).is_err());
    }
}
