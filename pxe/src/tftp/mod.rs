//! Read-only TFTP: RFC 1350 with option negotiation (RFC 2347), `blksize` (RFC 2348),
//! `tsize` and `timeout` (RFC 2349) and `windowsize` (RFC 7440).
//!
//! [`packet`] and [`transfer`] are the sans-IO core (bytes and time in, actions out);
//! [`server`] is the edge: a tokio socket for requests, a thread per transfer (see there
//! why). Files are opened through [`crate::confine`], so requests never leave the served
//! directory.

pub mod packet;
pub mod server;
pub mod transfer;

pub use server::{TftpConfig, TftpServer};
pub use transfer::{Negotiated, Step, TftpLimits, Transfer, negotiate};
