//! Kubernetes controllers serving Metal³'s `metal3.io/v1alpha1` BareMetalHost API (and its
//! companions) on top of the Rivet engine, in the same process.
//!
//! Status: not built yet. The crate exists so the workspace has its final shape; it depends on
//! the engine and knows nothing of Redfish.

#![forbid(unsafe_code)]
