//! The Redfish driver.
//!
//! [`RedfishProvider::connect`] reads the service root, logs in (session token, else HTTP
//! Basic), finds the ComputerSystem to manage and picks the vendor quirk profile; the
//! capability implementations live in the submodules. Resources are reached by following
//! `@odata.id` links from the service root, never by building paths.

mod bios;
mod boot;
mod client;
mod firmware;
mod inventory;
pub(crate) mod lenient;
mod media;
mod misc;
pub mod model;
mod power;
pub mod quirks;
pub mod retry;

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use serde::de::DeserializeOwned;

use self::client::Client;
use self::model::{ActionInfo, Collection, ComputerSystem, ServiceRoot, SessionService};
use self::quirks::{QuirkProfile, Vendor};
use self::retry::RetryPolicy;
use crate::address::RedfishEndpoint;
use crate::capability::{
    Bios, BootDevice, BootOverride, Events, Firmware, HealthCheck, Inventory, Power, Provider,
    SecureBoot, VirtualMedia,
};
use crate::{BmcError, Credentials};

pub use self::inventory::assemble_inventory;
pub use self::model::{DecodeError, decode};

/// How to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// A session token when the service offers sessions, HTTP Basic otherwise.
    #[default]
    Auto,
    /// Sessions only.
    Session,
    /// HTTP Basic only.
    Basic,
}

/// Knobs for the Redfish driver. The defaults suit real BMCs; tests shorten the waits.
#[derive(Debug, Clone)]
pub struct RedfishOptions {
    /// BareMetalHost's `disableCertificateVerification`.
    pub disable_certificate_verification: bool,
    /// PEM bundles to trust instead of the system roots (Ironic's `redfish_verify_ca` path).
    pub ca_certificates_pem: Vec<Vec<u8>>,
    pub auth: AuthMode,
    pub connect_timeout: Duration,
    /// For one request, body included.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// Larger responses are refused (the largest legitimate ones are BIOS attribute
    /// registries of a few MiB).
    pub max_response_bytes: usize,
    /// How often power state is polled while waiting for a change.
    pub power_poll_interval: Duration,
    /// How long a power change may take to show (Metal³ gives Ironic 120 s).
    pub power_timeout: Duration,
    pub task_poll_interval: Duration,
    pub task_timeout: Duration,
    /// Requests in flight at once while walking collections.
    pub concurrency: usize,
    /// Force a quirk profile instead of detecting one.
    pub vendor: Option<Vendor>,
    /// Force Dell's virtual-CD boot path (the `idrac-virtualmedia` scheme).
    pub dell_virtual_media_boot: bool,
}

impl Default for RedfishOptions {
    fn default() -> Self {
        Self {
            disable_certificate_verification: false,
            ca_certificates_pem: Vec::new(),
            auth: AuthMode::Auto,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            max_response_bytes: 16 << 20,
            power_poll_interval: Duration::from_secs(2),
            power_timeout: Duration::from_secs(120),
            task_poll_interval: Duration::from_secs(10),
            task_timeout: Duration::from_secs(2 * 3600),
            concurrency: 4,
            vendor: None,
            dell_virtual_media_boot: false,
        }
    }
}

/// `ComputerSystem.Reset`: where to post and which reset types the BMC accepts (empty when
/// it does not say).
#[derive(Debug, Clone)]
struct ResetAction {
    target: String,
    allowed: Vec<String>,
}

/// Paths learnt from the service root.
#[derive(Debug, Clone, Default)]
struct ServiceLinks {
    update_service: Option<String>,
    event_service: Option<String>,
    registries: Option<String>,
}

/// Paths learnt from the system document.
#[derive(Debug, Clone, Default)]
struct SystemLinks {
    bios: Option<String>,
    secure_boot: Option<String>,
    virtual_media: Option<String>,
    managers: Vec<String>,
}

/// A connection to one ComputerSystem behind a Redfish service.
#[derive(Debug)]
pub struct RedfishProvider {
    client: Client,
    options: RedfishOptions,
    profile: QuirkProfile,
    service: ServiceLinks,
    system_path: String,
    system_links: SystemLinks,
    reset: Option<ResetAction>,
    /// A persistent override the BMC can only hold once; re-applied before each power-on.
    sticky_boot: Mutex<Option<BootOverride>>,
}

impl RedfishProvider {
    /// Connects, logs in and finds the system to manage.
    pub async fn connect(
        endpoint: &RedfishEndpoint,
        credentials: Credentials,
        options: RedfishOptions,
    ) -> Result<Self, BmcError> {
        let mut client = Client::new(&endpoint.base_url, credentials, &options)?;
        let root: ServiceRoot = client.get_public("/redfish/v1/").await?;
        if endpoint.base_url.starts_with("http://") {
            tracing::warn!(
                bmc = %endpoint.base_url,
                "talking to the BMC over plain HTTP: its credentials cross the network unencrypted"
            );
        }
        let sessions = match root.links.as_ref().and_then(|l| l.sessions.as_ref()) {
            Some(link) => link.path().map(str::to_owned),
            None => match root.session_service.as_ref().and_then(|l| l.path()) {
                Some(path) => client
                    .get::<SessionService>(path)
                    .await
                    .ok()
                    .and_then(|s| s.sessions?.path().map(str::to_owned)),
                None => None,
            },
        };
        client.login(options.auth, sessions.as_deref()).await?;

        let system_path = match &endpoint.system_path {
            Some(path) => client.same_origin_path(path)?,
            None => only_system(&client, &root).await?,
        };
        let system: ComputerSystem = match client.get(&system_path).await {
            Err(BmcError::Rejected { status: 404, .. }) => {
                let known = list_systems(&client, &root).await.unwrap_or_default();
                return Err(BmcError::InvalidRequest(format!(
                    "the BMC has no system at {system_path}; it lists: {}",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            other => other?,
        };
        let profile = QuirkProfile::select(
            options.vendor,
            system.manufacturer.as_deref(),
            system.model.as_deref(),
            root.vendor.as_deref(),
        );
        client.set_busy_rules(profile.busy.clone());

        let mut managers: Vec<String> = system
            .links
            .iter()
            .flat_map(|l| &l.managed_by)
            .filter_map(|m| m.path().map(str::to_owned))
            .collect();
        let managers_collection = root.managers.as_ref().and_then(|l| l.path());
        if managers.is_empty()
            && let Some(path) = managers_collection
        {
            managers = client
                .get::<Collection>(path)
                .await
                .map(|c| {
                    c.members
                        .iter()
                        .filter_map(|m| m.path().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
        }
        let profile = if profile.vendor == Vendor::Dell {
            let firmware = match managers.first() {
                Some(path) => client
                    .get::<model::Manager>(path)
                    .await
                    .ok()
                    .and_then(|m| m.firmware_version),
                None => None,
            };
            profile.with_manager_firmware(firmware.as_deref(), options.dell_virtual_media_boot)
        } else {
            profile
        };
        let reset = reset_action(&client, &system).await;
        let link = |l: &Option<model::Link>| l.as_ref().and_then(|l| l.path()).map(str::to_owned);
        let provider = Self {
            service: ServiceLinks {
                update_service: link(&root.update_service),
                event_service: link(&root.event_service),
                registries: link(&root.registries),
            },
            system_links: SystemLinks {
                bios: link(&system.bios),
                secure_boot: link(&system.secure_boot),
                virtual_media: link(&system.virtual_media),
                managers,
            },
            client,
            options,
            profile,
            system_path,
            reset,
            sticky_boot: Mutex::new(None),
        };
        // Awaited outside the macro: an await inside tracing's argument list holds a
        // non-Send value across it, and the connect future must stay Send for spawned tasks.
        let session = provider.client.uses_session().await;
        tracing::debug!(
            system = %provider.system_path,
            profile = provider.profile.name,
            session,
            "Redfish connected"
        );
        Ok(provider)
    }

    /// The ComputerSystem this provider manages.
    pub fn system_path(&self) -> &str {
        &self.system_path
    }

    /// The quirk profile in use (`"generic"`, `"dell-idrac"`, …).
    pub fn profile(&self) -> &QuirkProfile {
        &self.profile
    }

    /// Whether requests carry a session token (else HTTP Basic).
    pub async fn uses_session(&self) -> bool {
        self.client.uses_session().await
    }

    async fn system(&self) -> Result<ComputerSystem, BmcError> {
        self.client.get(&self.system_path).await
    }

    /// Every member of a collection (following `Members@odata.nextLink`), fetched with
    /// bounded concurrency. Members that are gone or unreadable are skipped with a warning;
    /// transport and authentication failures end the walk.
    async fn members<T: DeserializeOwned>(&self, collection: &str) -> Result<Vec<T>, BmcError> {
        let members = self.members_with_paths(collection).await?;
        Ok(members.into_iter().map(|(_, member)| member).collect())
    }

    /// [`Self::members`], each with the path it was read from.
    async fn members_with_paths<T: DeserializeOwned>(
        &self,
        collection: &str,
    ) -> Result<Vec<(String, T)>, BmcError> {
        use futures::StreamExt;
        let paths = self.member_paths(collection).await?;
        let fetched: Vec<(String, Result<T, BmcError>)> = futures::stream::iter(paths)
            .map(|path| async move {
                let result = self.client.get::<T>(&path).await;
                (path, result)
            })
            .buffered(self.options.concurrency.max(1))
            .collect()
            .await;
        let mut members = Vec::with_capacity(fetched.len());
        for (path, result) in fetched {
            match result {
                Ok(member) => members.push((path, member)),
                Err(err) if skippable(&err) => {
                    tracing::warn!(path, error = %err, "skipping an unreadable resource");
                }
                Err(err) => return Err(err),
            }
        }
        Ok(members)
    }

    async fn member_paths(&self, collection: &str) -> Result<Vec<String>, BmcError> {
        // Pages are few in practice; the cap stops a BMC that links pages in a loop.
        const MAX_PAGES: usize = 64;
        let mut paths = Vec::new();
        let mut next = Some(collection.to_owned());
        for _ in 0..MAX_PAGES {
            let Some(page) = next.take() else { break };
            let page: Collection = self.client.get(&page).await?;
            paths.extend(
                page.members
                    .iter()
                    .filter_map(|m| m.path())
                    .map(str::to_owned),
            );
            next = page.next_link;
        }
        Ok(paths)
    }
}

/// Errors that mean "this resource is missing, broken or refused", not "the BMC is
/// unreachable or refuses us": a walk skips such members instead of failing.
fn skippable(err: &BmcError) -> bool {
    matches!(err, BmcError::Protocol(_) | BmcError::Rejected { .. })
}

/// Keeps a collection walk's result, or an empty one (with a warning) when the collection
/// itself is unreadable in a [`skippable`] way.
fn or_skip<T>(what: &str, result: Result<Vec<T>, BmcError>) -> Result<Vec<T>, BmcError> {
    match result {
        Err(err) if skippable(&err) => {
            tracing::warn!(what, error = %err, "skipping an unreadable collection");
            Ok(Vec::new())
        }
        other => other,
    }
}

async fn list_systems(client: &Client, root: &ServiceRoot) -> Result<Vec<String>, BmcError> {
    let path = root
        .systems
        .as_ref()
        .and_then(|l| l.path())
        .ok_or_else(|| BmcError::Protocol("the service root links no Systems".into()))?;
    let systems: Collection = client.get(path).await?;
    Ok(systems
        .members
        .iter()
        .filter_map(|m| m.path().map(str::to_owned))
        .collect())
}

async fn only_system(client: &Client, root: &ServiceRoot) -> Result<String, BmcError> {
    let systems = list_systems(client, root).await?;
    match systems.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(BmcError::Protocol("the BMC lists no systems".into())),
        several => Err(BmcError::InvalidRequest(format!(
            "the BMC manages {} systems ({}); name one in the address path, as in \
             redfish://host{}",
            several.len(),
            several.join(", "),
            several[0]
        ))),
    }
}

/// The reset action and its allowed values, from the system or its `ActionInfo`.
async fn reset_action(client: &Client, system: &ComputerSystem) -> Option<ResetAction> {
    let action = system.actions.as_ref()?.reset.as_ref()?;
    let target = action.target.clone()?;
    let mut allowed = action.reset_types.clone();
    if allowed.is_empty()
        && let Some(info) = &action.action_info
        && let Ok(info) = client.get::<ActionInfo>(info).await
    {
        allowed = info
            .parameters
            .into_iter()
            .find(|p| p.name.as_deref() == Some("ResetType"))
            .map(|p| p.allowable_values)
            .unwrap_or_default();
    }
    Some(ResetAction { target, allowed })
}

impl Provider for RedfishProvider {
    fn name(&self) -> &'static str {
        "redfish"
    }
    fn power(&self) -> Option<&dyn Power> {
        Some(self)
    }
    fn boot_device(&self) -> Option<&dyn BootDevice> {
        Some(self)
    }
    fn virtual_media(&self) -> Option<&dyn VirtualMedia> {
        Some(self)
    }
    fn inventory(&self) -> Option<&dyn Inventory> {
        Some(self)
    }
    fn bios(&self) -> Option<&dyn Bios> {
        self.system_links.bios.is_some().then_some(self as _)
    }
    fn firmware(&self) -> Option<&dyn Firmware> {
        self.service.update_service.is_some().then_some(self as _)
    }
    fn secure_boot(&self) -> Option<&dyn SecureBoot> {
        self.system_links.secure_boot.is_some().then_some(self as _)
    }
    fn events(&self) -> Option<&dyn Events> {
        self.service.event_service.is_some().then_some(self as _)
    }
    fn health(&self) -> Option<&dyn HealthCheck> {
        Some(self)
    }
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.client.logout())
    }
}
