//! A host's BMC as an ordered list of providers, bmclib-style.
//!
//! [`Bmc`] implements every capability trait by asking its providers in order: the first
//! provider that offers the capability is tried under its own timeout, and when it fails the
//! next one is tried (power via Redfish, else IPMI). Operations that must not run twice
//! (reset, power cycle) move on only when the failure proves the first provider did nothing.
//! A single failure is returned as is; several are reported together.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use rivet_model::HardwareDetails;

use crate::BmcError;
use crate::capability::{
    ApplyTime, AttributeSchema, Attributes, Bios, BootDevice, BootOverride, EventSubscription,
    Events, Firmware, FirmwareComponent, Health, HealthCheck, Inventory, MediaKind, MediaSlot,
    Power, PowerOffMode, PowerState, Provider, SecureBoot, VirtualMedia,
};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BmcError>> + Send + 'a>>;

/// When a failed call may be handed to the next provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fallback {
    /// The operation is idempotent: any failure moves on.
    OnAnyError,
    /// The operation must not run twice: move on only if the failure proves nothing happened.
    OnlyIfNothingHappened,
}

#[derive(Debug)]
struct Registered {
    provider: Box<dyn Provider>,
    timeout: Option<Duration>,
}

/// A BMC reached through one or more providers, tried in the order they were added.
#[derive(Debug, Default)]
pub struct Bmc {
    providers: Vec<Registered>,
}

impl Bmc {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider after the existing ones. Each call it serves is abandoned after
    /// `timeout` (firmware updates excepted: they follow the BMC's task to its end).
    pub fn push(&mut self, provider: Box<dyn Provider>, timeout: Duration) {
        self.providers.push(Registered {
            provider,
            timeout: Some(timeout),
        });
    }

    /// The providers' names, in the order they are tried.
    pub fn provider_names(&self) -> Vec<&'static str> {
        self.providers.iter().map(|r| r.provider.name()).collect()
    }

    /// The providers themselves, for driver-specific calls.
    pub fn providers(&self) -> impl Iterator<Item = &dyn Provider> {
        self.providers.iter().map(|r| r.provider.as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Runs `call` on each provider in turn; `call` returns `None` when the provider lacks
    /// the capability.
    async fn dispatch<'a, T>(
        &'a self,
        capability: &'static str,
        fallback: Fallback,
        bounded: bool,
        call: impl Fn(&'a dyn Provider) -> Option<BoxFuture<'a, T>>,
    ) -> Result<T, BmcError> {
        let mut failures: Vec<(&'static str, BmcError)> = Vec::new();
        for registered in &self.providers {
            let provider = registered.provider.as_ref();
            let Some(pending) = call(provider) else {
                continue;
            };
            let outcome = match registered.timeout.filter(|_| bounded) {
                Some(limit) => tokio::time::timeout(limit, pending)
                    .await
                    .unwrap_or(Err(BmcError::Timeout(limit))),
                None => pending.await,
            };
            match outcome {
                Ok(value) => {
                    tracing::debug!(provider = provider.name(), capability, "BMC call served");
                    return Ok(value);
                }
                Err(err) => {
                    tracing::debug!(provider = provider.name(), capability, error = %err, "BMC call failed");
                    let may_continue = match fallback {
                        Fallback::OnAnyError => true,
                        Fallback::OnlyIfNothingHappened => err.proves_nothing_happened(),
                    };
                    failures.push((provider.name(), err));
                    if !may_continue {
                        break;
                    }
                }
            }
        }
        match failures.len() {
            0 => Err(BmcError::NoProvider { capability }),
            1 => Err(failures.remove(0).1),
            _ => Err(BmcError::AllProvidersFailed {
                capability,
                failures,
            }),
        }
    }

    fn offers(&self, select: impl Fn(&dyn Provider) -> bool) -> bool {
        self.providers.iter().any(|r| select(r.provider.as_ref()))
    }
}

impl Provider for Bmc {
    fn name(&self) -> &'static str {
        "registry"
    }
    fn power(&self) -> Option<&dyn Power> {
        self.offers(|p| p.power().is_some()).then_some(self as _)
    }
    fn boot_device(&self) -> Option<&dyn BootDevice> {
        self.offers(|p| p.boot_device().is_some())
            .then_some(self as _)
    }
    fn virtual_media(&self) -> Option<&dyn VirtualMedia> {
        self.offers(|p| p.virtual_media().is_some())
            .then_some(self as _)
    }
    fn inventory(&self) -> Option<&dyn Inventory> {
        self.offers(|p| p.inventory().is_some())
            .then_some(self as _)
    }
    fn bios(&self) -> Option<&dyn Bios> {
        self.offers(|p| p.bios().is_some()).then_some(self as _)
    }
    fn firmware(&self) -> Option<&dyn Firmware> {
        self.offers(|p| p.firmware().is_some()).then_some(self as _)
    }
    fn secure_boot(&self) -> Option<&dyn SecureBoot> {
        self.offers(|p| p.secure_boot().is_some())
            .then_some(self as _)
    }
    fn events(&self) -> Option<&dyn Events> {
        self.offers(|p| p.events().is_some()).then_some(self as _)
    }
    fn health(&self) -> Option<&dyn HealthCheck> {
        self.offers(|p| p.health().is_some()).then_some(self as _)
    }
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            for registered in &self.providers {
                registered.provider.close().await;
            }
        })
    }
}

use Fallback::{OnAnyError, OnlyIfNothingHappened};

#[async_trait]
impl Power for Bmc {
    async fn power_state(&self) -> Result<PowerState, BmcError> {
        self.dispatch("power status", OnAnyError, true, |p| {
            p.power().map(|c| c.power_state())
        })
        .await
    }
    async fn power_on(&self) -> Result<(), BmcError> {
        self.dispatch("power on", OnAnyError, true, |p| {
            p.power().map(|c| c.power_on())
        })
        .await
    }
    async fn power_off(&self, mode: PowerOffMode) -> Result<(), BmcError> {
        self.dispatch("power off", OnAnyError, true, |p| {
            p.power().map(|c| c.power_off(mode))
        })
        .await
    }
    async fn reset(&self) -> Result<(), BmcError> {
        self.dispatch("reset", OnlyIfNothingHappened, true, |p| {
            p.power().map(|c| c.reset())
        })
        .await
    }
    async fn power_cycle(&self) -> Result<(), BmcError> {
        self.dispatch("power cycle", OnlyIfNothingHappened, true, |p| {
            p.power().map(|c| c.power_cycle())
        })
        .await
    }
}

#[async_trait]
impl BootDevice for Bmc {
    async fn set_boot_override(&self, boot: &BootOverride) -> Result<(), BmcError> {
        self.dispatch("boot device", OnAnyError, true, |p| {
            p.boot_device().map(|c| c.set_boot_override(boot))
        })
        .await
    }
    async fn boot_override(&self) -> Result<Option<BootOverride>, BmcError> {
        self.dispatch("boot device", OnAnyError, true, |p| {
            p.boot_device().map(|c| c.boot_override())
        })
        .await
    }
}

#[async_trait]
impl VirtualMedia for Bmc {
    async fn insert_media(&self, image_url: &str, kind: MediaKind) -> Result<(), BmcError> {
        self.dispatch("virtual media", OnAnyError, true, |p| {
            p.virtual_media().map(|c| c.insert_media(image_url, kind))
        })
        .await
    }
    async fn eject_media(&self, kind: MediaKind) -> Result<(), BmcError> {
        self.dispatch("virtual media", OnAnyError, true, |p| {
            p.virtual_media().map(|c| c.eject_media(kind))
        })
        .await
    }
    async fn media_status(&self) -> Result<Vec<MediaSlot>, BmcError> {
        self.dispatch("virtual media", OnAnyError, true, |p| {
            p.virtual_media().map(|c| c.media_status())
        })
        .await
    }
}

#[async_trait]
impl Inventory for Bmc {
    async fn inventory(&self) -> Result<HardwareDetails, BmcError> {
        self.dispatch("inventory", OnAnyError, true, |p| {
            p.inventory().map(|c| c.inventory())
        })
        .await
    }
}

#[async_trait]
impl Bios for Bmc {
    async fn bios_attributes(&self) -> Result<Attributes, BmcError> {
        self.dispatch("BIOS", OnAnyError, true, |p| {
            p.bios().map(|c| c.bios_attributes())
        })
        .await
    }
    async fn bios_schema(&self) -> Result<Vec<AttributeSchema>, BmcError> {
        self.dispatch("BIOS", OnAnyError, true, |p| {
            p.bios().map(|c| c.bios_schema())
        })
        .await
    }
    async fn apply_bios(&self, changes: &Attributes) -> Result<ApplyTime, BmcError> {
        self.dispatch("BIOS", OnAnyError, true, |p| {
            p.bios().map(|c| c.apply_bios(changes))
        })
        .await
    }
}

#[async_trait]
impl Firmware for Bmc {
    async fn firmware_components(&self) -> Result<Vec<FirmwareComponent>, BmcError> {
        self.dispatch("firmware inventory", OnAnyError, true, |p| {
            p.firmware().map(|c| c.firmware_components())
        })
        .await
    }
    async fn update_firmware(&self, image_url: &str, targets: &[String]) -> Result<(), BmcError> {
        self.dispatch("firmware update", OnlyIfNothingHappened, false, |p| {
            p.firmware().map(|c| c.update_firmware(image_url, targets))
        })
        .await
    }
}

#[async_trait]
impl SecureBoot for Bmc {
    async fn secure_boot_enabled(&self) -> Result<bool, BmcError> {
        self.dispatch("secure boot", OnAnyError, true, |p| {
            p.secure_boot().map(|c| c.secure_boot_enabled())
        })
        .await
    }
    async fn set_secure_boot(&self, enabled: bool) -> Result<(), BmcError> {
        self.dispatch("secure boot", OnAnyError, true, |p| {
            p.secure_boot().map(|c| c.set_secure_boot(enabled))
        })
        .await
    }
}

#[async_trait]
impl Events for Bmc {
    async fn subscribe(&self, subscription: &EventSubscription) -> Result<String, BmcError> {
        self.dispatch("event subscription", OnlyIfNothingHappened, true, |p| {
            p.events().map(|c| c.subscribe(subscription))
        })
        .await
    }
    async fn unsubscribe(&self, id: &str) -> Result<(), BmcError> {
        self.dispatch("event subscription", OnAnyError, true, |p| {
            p.events().map(|c| c.unsubscribe(id))
        })
        .await
    }
}

#[async_trait]
impl HealthCheck for Bmc {
    async fn health(&self) -> Result<Health, BmcError> {
        self.dispatch("health", OnAnyError, true, |p| {
            p.health().map(|c| c.health())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    //! Two scripted providers exercise ordering, fallback and timeouts. They are mocks by
    //! design: the logic under test is the registry's, not any BMC's.
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    enum Behaviour {
        Answer(PowerState),
        Fail(fn() -> BmcError),
        Hang,
    }

    #[derive(Debug)]
    struct Scripted {
        name: &'static str,
        behaviour: Behaviour,
        calls: AtomicU32,
        has_power: bool,
        log: &'static Mutex<Vec<&'static str>>,
    }

    impl Scripted {
        fn new(
            name: &'static str,
            behaviour: Behaviour,
            log: &'static Mutex<Vec<&'static str>>,
        ) -> Box<Self> {
            Box::new(Self {
                name,
                behaviour,
                calls: AtomicU32::new(0),
                has_power: true,
                log,
            })
        }

        async fn act(&self) -> Result<PowerState, BmcError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.log.lock().unwrap().push(self.name);
            match &self.behaviour {
                Behaviour::Answer(state) => Ok(*state),
                Behaviour::Fail(make) => Err(make()),
                Behaviour::Hang => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(PowerState::On)
                }
            }
        }
    }

    #[async_trait]
    impl Power for Scripted {
        async fn power_state(&self) -> Result<PowerState, BmcError> {
            self.act().await
        }
        async fn power_on(&self) -> Result<(), BmcError> {
            self.act().await.map(drop)
        }
        async fn power_off(&self, _: PowerOffMode) -> Result<(), BmcError> {
            self.act().await.map(drop)
        }
        async fn reset(&self) -> Result<(), BmcError> {
            self.act().await.map(drop)
        }
        async fn power_cycle(&self) -> Result<(), BmcError> {
            self.act().await.map(drop)
        }
    }

    impl Provider for Scripted {
        fn name(&self) -> &'static str {
            self.name
        }
        fn power(&self) -> Option<&dyn Power> {
            self.has_power.then_some(self as _)
        }
    }

    fn leak_log() -> &'static Mutex<Vec<&'static str>> {
        Box::leak(Box::new(Mutex::new(Vec::new())))
    }

    fn two(first: Behaviour, second: Behaviour) -> (Bmc, &'static Mutex<Vec<&'static str>>) {
        let log = leak_log();
        let mut bmc = Bmc::new();
        bmc.push(Scripted::new("first", first, log), Duration::from_secs(5));
        bmc.push(Scripted::new("second", second, log), Duration::from_secs(5));
        (bmc, log)
    }

    #[tokio::test]
    async fn the_first_provider_that_answers_wins() {
        let (bmc, log) = two(
            Behaviour::Answer(PowerState::Off),
            Behaviour::Answer(PowerState::On),
        );
        assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
        assert_eq!(*log.lock().unwrap(), ["first"]);
        assert_eq!(bmc.provider_names(), ["first", "second"]);
    }

    #[tokio::test]
    async fn a_failing_provider_falls_back_to_the_next() {
        let (bmc, log) = two(
            Behaviour::Fail(|| BmcError::Connection("refused".into())),
            Behaviour::Answer(PowerState::On),
        );
        assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
        assert_eq!(*log.lock().unwrap(), ["first", "second"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_provider_is_abandoned_after_its_timeout() {
        let (bmc, log) = two(Behaviour::Hang, Behaviour::Answer(PowerState::Off));
        assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
        assert_eq!(*log.lock().unwrap(), ["first", "second"]);
    }

    #[tokio::test(start_paused = true)]
    async fn when_all_fail_every_failure_is_reported() {
        let (bmc, _) = two(
            Behaviour::Hang,
            Behaviour::Fail(|| BmcError::Authentication),
        );
        let err = bmc.power_state().await.unwrap_err();
        let BmcError::AllProvidersFailed { failures, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(matches!(failures[0], ("first", BmcError::Timeout(_))));
        assert!(matches!(failures[1], ("second", BmcError::Authentication)));
    }

    #[tokio::test]
    async fn a_reset_that_may_have_happened_is_not_repeated_elsewhere() {
        let (bmc, log) = two(
            Behaviour::Fail(|| BmcError::Connection("reset by peer".into())),
            Behaviour::Answer(PowerState::On),
        );
        let err = bmc.reset().await.unwrap_err();
        assert!(matches!(err, BmcError::Connection(_)), "{err}");
        assert_eq!(*log.lock().unwrap(), ["first"]);
    }

    #[tokio::test]
    async fn a_reset_the_first_provider_cannot_do_goes_to_the_next() {
        let (bmc, log) = two(
            Behaviour::Fail(|| BmcError::Unsupported {
                provider: "first",
                capability: "reset",
            }),
            Behaviour::Answer(PowerState::On),
        );
        bmc.reset().await.unwrap();
        assert_eq!(*log.lock().unwrap(), ["first", "second"]);
    }

    #[tokio::test]
    async fn providers_without_the_capability_are_skipped() {
        let log = leak_log();
        let mut bmc = Bmc::new();
        let mut without = Scripted::new("without", Behaviour::Answer(PowerState::On), log);
        without.has_power = false;
        bmc.push(without, Duration::from_secs(1));
        assert!(bmc.power().is_none());
        assert!(matches!(
            bmc.power_state().await,
            Err(BmcError::NoProvider { .. })
        ));
        bmc.push(
            Scripted::new("with", Behaviour::Answer(PowerState::Off), log),
            Duration::from_secs(1),
        );
        assert!(bmc.power().is_some());
        assert!(Provider::inventory(&bmc).is_none());
        assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
        assert_eq!(*log.lock().unwrap(), ["with"]);
    }
}
