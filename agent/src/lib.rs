//! `rivet-agent`: the agent that runs in a small initramfs on the host being provisioned.
//!
//! Status: not built yet (see the project's issue 6).
