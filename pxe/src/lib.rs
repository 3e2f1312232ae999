//! Boot services for Rivet: DHCPv4 (proxy and authoritative), TFTP, iPXE scripts and HTTP boot,
//! with sans-IO protocol cores and tokio sockets at the edge.
//!
//! Status: not built yet (see the project's issue 5).

#![forbid(unsafe_code)]
