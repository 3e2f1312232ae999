//! Rivet's engine: the host lifecycle (register → inspect → prepare → available → provision →
//! provisioned → deprovision → delete) as a pure state machine, a durable store, the REST API
//! and the runtime that drives BMCs, boot services and agents.
//!
//! Status: not built yet (see the project's issue 7). The `rivet` command line in
//! `src/bin/rivet` is its front end.

#![forbid(unsafe_code)]
