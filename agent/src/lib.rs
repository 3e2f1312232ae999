//! `rivet-agent`: the agent that runs in a small initramfs on the host being provisioned.
//!
//! Today the crate holds the agent channel ([`channel`]): the protocol between agent and
//! engine, and the client that keeps one TLS WebSocket open to the engine and hands its
//! commands to a [`channel::JobHandler`]. The agent's run mode (inventory, cleaning, image
//! writing) is built separately (issue 6).

pub mod channel;
