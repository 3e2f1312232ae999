//! DHCPv4 for network boot: ProxyDHCP (PXE spec: boot information only, ports 67 and 4011)
//! and an authoritative server (addresses for known hosts and an optional pool, durable
//! leases).
//!
//! [`wire`], [`client`], [`leases`] and [`server`] are the sans-IO core: a datagram and the
//! time in, a reply and the lease records to persist out. [`store`] keeps leases durable
//! with group commit and [`edge`] owns the sockets.

pub mod client;
pub mod edge;
pub mod leases;
pub mod server;
pub mod store;
pub mod wire;

pub use edge::{DhcpPorts, DhcpService};
pub use leases::{AddressPool, ClientId, Lease, LeaseRecord, LeaseState};
pub use server::{
    BootFiles, DhcpConfig, DhcpMode, DhcpServer, Exchange, Handled, Reply, RequestSeen, ServerPort,
    Silence, Subnet,
};
pub use store::{LeaseStore, StoreError};
