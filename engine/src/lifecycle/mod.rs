//! The host lifecycle, sans-IO: the host model, its states, and the pure transition
//! function that turns events into a new host and a list of actions.
//!
//! Nothing here performs I/O, reads a clock or draws random numbers; the runtime feeds
//! events and the time in and carries the actions out. That is what lets the tests drive
//! every transition, and a property test drive random event sequences, in microseconds.

pub mod address;
pub mod backoff;
pub mod host;
pub mod ids;
pub mod machine;
pub mod state;
pub mod steps;
pub mod time;
pub mod timeline;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

pub use address::{BmcKind, BmcProtocol, BootMethod};
pub use backoff::Backoff;
pub use host::{
    Activity, AgentSession, BmcSpec, BootMode, ChecksumType, CleaningMode, CleaningPolicy,
    DeleteAction, DetachSpec, Host, HostError, HostSpec, HostStatus, ImageFormat, ImageSpec,
    InspectionMode, OperationHistory, OperationMetric, Progress, RebootMode, StepPhase,
};
pub use ids::{HostId, MacAddr};
pub use machine::{
    Action, Event, FailureClass, Intent, Output, Policy, Rejected, SettingsPatch, StepFailure,
    StepOutput, apply, resume,
};
pub use state::{ErrorType, OperationalStatus, ProvisioningState};
pub use steps::{Operation, Step, plan};
pub use time::Timestamp;
pub use timeline::{
    BootObservations, DhcpAnswered, NextLoad, TimelineEntry, TimelineEvent, WaitReason, wait_reason,
};
