//! Rivet's engine: the host lifecycle (register → inspect → prepare → available → provision →
//! provisioned → deprovision → delete) as a pure state machine, a durable store, the REST API
//! and the runtime that drives BMCs, boot services and agents.

#![forbid(unsafe_code)]

pub mod drivers;
pub mod lifecycle;
pub mod metrics;
pub mod runtime;
pub mod secrets;
pub mod sim;
pub mod store;

pub use runtime::{Engine, EngineConfig, EngineError, EngineHandle};
pub mod api;
pub mod client;
pub mod config;
