//! `/v1/hosts`: enrolment, reads, updates, deletion and actions.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use rivet_model::{HardwareDetails, RootDeviceHints};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use crate::lifecycle::{
    BmcSpec, CleaningPolicy, DeleteAction, DetachSpec, ImageSpec, InspectionMode, Intent,
    RebootMode, SettingsPatch, TimelineEntry,
};
use crate::runtime::{
    EngineError, EnrollRequest, HostView, ListQuery, Page, SecretsUpdate, validate_bmc_address,
};

pub type Reply<T> = Result<(StatusCode, Json<T>), ApiError>;

fn ok<T>(status: StatusCode, body: T) -> Reply<T> {
    Ok((status, Json(body)))
}

pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Reply<Page> {
    let Query(query) = query.map_err(|err| ApiError::bad_request(err.body_text()))?;
    ok(StatusCode::OK, state.engine.list(query).await?)
}

pub async fn enroll(
    State(state): State<AppState>,
    body: Result<Json<EnrollRequest>, JsonRejection>,
) -> Reply<HostView> {
    let Json(request) = body?;
    ok(StatusCode::CREATED, state.engine.enroll(request).await?)
}

pub async fn show(State(state): State<AppState>, Path(name): Path<String>) -> Reply<HostView> {
    match state.engine.get(&name).await? {
        Some(view) => ok(StatusCode::OK, view),
        None => Err(EngineError::NotFound(name).into()),
    }
}

/// `PATCH /v1/hosts/{name}`: fields left out are left alone.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateRequest {
    #[serde(default)]
    pub bmc: Option<BmcUpdate>,
    #[serde(default)]
    pub online: Option<bool>,
    /// `null` removes the hints.
    #[serde(default, deserialize_with = "double_option")]
    pub root_device_hints: Option<Option<RootDeviceHints>>,
    #[serde(default)]
    pub cleaning: Option<CleaningPolicy>,
    #[serde(default, deserialize_with = "double_option")]
    pub description: Option<Option<String>>,
    #[serde(default)]
    pub externally_provisioned: Option<bool>,
    #[serde(default)]
    pub inspection_mode: Option<InspectionMode>,
}

/// New BMC details; credentials come as a pair.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BmcUpdate {
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub disable_certificate_verification: Option<bool>,
}

/// Tells "absent" (`None`) from "null" (`Some(None)`).
fn double_option<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

pub async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<UpdateRequest>, JsonRejection>,
) -> Reply<HostView> {
    let Json(update) = body?;
    let current = state
        .engine
        .get(&name)
        .await?
        .ok_or_else(|| EngineError::NotFound(name.clone()))?;
    let mut intents = Vec::new();
    let mut secrets = None;
    if let Some(bmc) = update.bmc {
        match (bmc.username, bmc.password) {
            (Some(username), Some(password)) => {
                if username.is_empty() || password.is_empty() {
                    return Err(ApiError::bad_request(
                        "BMC credentials need a user name and a password",
                    ));
                }
                secrets = Some(SecretsUpdate::Credentials { username, password });
                intents.push(Intent::CredentialsChanged);
            }
            (None, None) => {}
            _ => {
                return Err(ApiError::bad_request(
                    "give the BMC username and password together",
                ));
            }
        }
        if bmc.address.is_some() || bmc.disable_certificate_verification.is_some() {
            let old = current.spec.bmc.clone();
            let address = bmc
                .address
                .or_else(|| old.as_ref().map(|b| b.address.clone()))
                .ok_or_else(|| ApiError::bad_request("a BMC address is needed"))?;
            validate_bmc_address(&address, current.spec.boot_mac_address)?;
            let disable = bmc
                .disable_certificate_verification
                .or(old.map(|b| b.disable_certificate_verification))
                .unwrap_or(false);
            intents.push(Intent::SetBmc(BmcSpec {
                address: address.trim().to_owned(),
                disable_certificate_verification: disable,
            }));
        }
    }
    if let Some(online) = update.online {
        intents.push(Intent::SetOnline(online));
    }
    let patch = SettingsPatch {
        root_device_hints: update.root_device_hints,
        cleaning: update.cleaning,
        description: update.description,
        externally_provisioned: update.externally_provisioned,
        inspection_mode: update.inspection_mode,
    };
    if patch != SettingsPatch::default() {
        intents.push(Intent::Update(Box::new(patch)));
    }
    if intents.is_empty() {
        return ok(StatusCode::OK, current);
    }
    ok(
        StatusCode::OK,
        state.engine.request(&name, intents, secrets).await?,
    )
}

pub async fn delete(State(state): State<AppState>, Path(name): Path<String>) -> Reply<HostView> {
    ok(
        StatusCode::ACCEPTED,
        state.engine.apply(&name, Intent::Delete).await?,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineQuery {
    /// Entries after this sequence number.
    #[serde(default)]
    pub after: u64,
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `GET /v1/hosts/{name}/timeline`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Timeline {
    pub entries: Vec<TimelineEntry>,
}

pub async fn timeline(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<TimelineQuery>, axum::extract::rejection::QueryRejection>,
) -> Reply<Timeline> {
    let Query(query) = query.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let limit = query.limit.unwrap_or(1000).clamp(1, 10_000);
    let entries = state.engine.timeline(&name, query.after, limit).await?;
    ok(StatusCode::OK, Timeline { entries })
}

pub async fn hardware(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Reply<HardwareDetails> {
    match state.engine.hardware(&name).await? {
        Some(hardware) => ok(StatusCode::OK, hardware),
        None => Err(ApiError::not_found(format!(
            "host `{name}` has not been inspected"
        ))),
    }
}

/// Body of `actions/provision`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProvisionRequest {
    pub image: ImageSpec,
    #[serde(default)]
    pub user_data: Option<String>,
    #[serde(default)]
    pub network_data: Option<String>,
    /// A JSON object merged over the engine's meta data.
    #[serde(default)]
    pub meta_data: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PowerRequest {
    pub on: bool,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RebootRequest {
    #[serde(default)]
    pub mode: Option<RebootMode>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdoptRequest {
    #[serde(default)]
    pub image: Option<ImageSpec>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DetachRequest {
    #[serde(default)]
    pub delete_action: Option<DeleteAction>,
    #[serde(default)]
    pub force: bool,
}

/// An action body: required for some actions, optional (or empty) for others.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|err| ApiError::bad_request(format!("the request body is not valid: {err}")))
}

fn optional_body<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        body(bytes)
    }
}

/// `POST /v1/hosts/{name}/actions/{action}`.
pub async fn action(
    State(state): State<AppState>,
    Path((name, action)): Path<(String, String)>,
    bytes: Bytes,
) -> Reply<HostView> {
    let mut secrets = None;
    let intent = match action.as_str() {
        "inspect" => Intent::Inspect,
        "provision" => {
            let request: ProvisionRequest = body(&bytes)?;
            if let Some(meta) = &request.meta_data
                && serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(meta).is_err()
            {
                return Err(ApiError::bad_request("metaData must be a JSON object"));
            }
            secrets = Some(SecretsUpdate::ConfigDrive {
                user_data: request.user_data,
                network_data: request.network_data,
                meta_data: request.meta_data,
            });
            Intent::Provision {
                image: request.image,
            }
        }
        "deprovision" => Intent::Deprovision,
        "power" => Intent::SetOnline(body::<PowerRequest>(&bytes)?.on),
        "reboot" => Intent::Reboot {
            mode: optional_body::<RebootRequest>(&bytes)?
                .mode
                .unwrap_or(RebootMode::Soft),
        },
        "adopt" => Intent::Adopt {
            image: optional_body::<AdoptRequest>(&bytes)?.image,
        },
        "detach" => {
            let request: DetachRequest = optional_body(&bytes)?;
            Intent::Detach(DetachSpec {
                delete_action: request.delete_action.unwrap_or_default(),
                force: request.force,
            })
        }
        "attach" => Intent::Attach,
        other => {
            return Err(ApiError::not_found(format!(
                "unknown action `{other}` (inspect, provision, deprovision, power, reboot, adopt, detach, attach)"
            )));
        }
    };
    let view = state.engine.request(&name, vec![intent], secrets).await?;
    ok(StatusCode::ACCEPTED, view)
}
