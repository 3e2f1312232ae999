//! The lease table: which address each client holds, and which addresses are free.
//!
//! Pure state, no I/O: changes that must survive a restart are returned as
//! [`LeaseRecord`]s for the caller to persist before it answers the client.

use std::collections::HashMap;
use std::net::Ipv4Addr;

/// How a client is identified: the client identifier (option 61) if it sent one, else its
/// hardware type and address, as RFC 2131 §4.2 prescribes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(Vec<u8>);

impl ClientId {
    /// Longest identifier kept (option 61 can exceed 255 bytes only by RFC 3396
    /// concatenation, which no real client uses for it).
    pub const MAX_LEN: usize = 255;

    /// From option 61's bytes (truncated to [`ClientId::MAX_LEN`]).
    pub fn from_option(bytes: &[u8]) -> Self {
        Self(bytes[..bytes.len().min(Self::MAX_LEN)].to_vec())
    }

    /// From the hardware type and address (the same layout option 61 uses for them).
    pub fn from_hardware(htype: u8, chaddr: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(1 + chaddr.len());
        bytes.push(htype);
        bytes.extend_from_slice(chaddr);
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Where an address is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Offered and awaiting the client's REQUEST; kept in memory only.
    Offered,
    /// Acknowledged: the client may use the address until `expires`.
    Bound,
    /// Given back by the client; free, but remembered so it can have it again.
    Released,
    /// Reported in use by someone else (DHCPDECLINE); nobody gets it until `expires`.
    Declined,
}

/// One address's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub client: ClientId,
    pub state: LeaseState,
    /// Unix time (seconds) at which the lease, offer or quarantine ends.
    pub expires: u64,
}

impl Lease {
    /// Whether the lease still keeps the address from other clients at `now`.
    fn holds(&self, now: u64) -> bool {
        match self.state {
            LeaseState::Offered | LeaseState::Bound | LeaseState::Declined => self.expires > now,
            LeaseState::Released => false,
        }
    }
}

/// A change to persist durably, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub address: Ipv4Addr,
    pub lease: Lease,
}

/// A contiguous range of addresses to lease from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPool {
    first: u32,
    last: u32,
}

impl AddressPool {
    /// `first..=last`; `None` if the range is empty.
    pub fn new(first: Ipv4Addr, last: Ipv4Addr) -> Option<Self> {
        let (first, last) = (u32::from(first), u32::from(last));
        (first <= last).then_some(Self { first, last })
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(address))
    }

    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.first)
    }

    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.last)
    }

    fn size(&self) -> u64 {
        u64::from(self.last - self.first) + 1
    }
}

/// Every address's lease, indexed both ways.
#[derive(Debug, Default)]
pub struct LeaseTable {
    by_address: HashMap<Ipv4Addr, Lease>,
    by_client: HashMap<ClientId, Ipv4Addr>,
    /// Where the next search for a free pool address starts, so allocation is O(1) while
    /// the pool has never-used addresses.
    cursor: u64,
}

impl LeaseTable {
    /// A table holding previously persisted leases.
    pub fn from_records(records: impl IntoIterator<Item = LeaseRecord>) -> Self {
        let mut table = Self::default();
        for record in records {
            table.set(record.address, record.lease);
        }
        table
    }

    /// The lease on `address`, if any.
    pub fn get(&self, address: Ipv4Addr) -> Option<&Lease> {
        self.by_address.get(&address)
    }

    /// The address `client` last had.
    pub fn address_of(&self, client: &ClientId) -> Option<Ipv4Addr> {
        self.by_client.get(client).copied()
    }

    /// How many addresses have a lease entry (of any state).
    pub fn len(&self) -> usize {
        self.by_address.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }

    /// Whether `address` is free for `client` at `now`: unleased, leased to `client`
    /// (and not declined), or leased to someone else but lapsed.
    pub fn free_for(&self, address: Ipv4Addr, client: &ClientId, now: u64) -> bool {
        match self.by_address.get(&address) {
            None => true,
            Some(lease) if lease.state == LeaseState::Declined => !lease.holds(now),
            Some(lease) => lease.client == *client || !lease.holds(now),
        }
    }

    /// Records `lease` on `address`, keeping the client index consistent.
    pub fn set(&mut self, address: Ipv4Addr, lease: Lease) {
        if let Some(previous) = self.by_address.get(&address)
            && previous.client != lease.client
            && self.by_client.get(&previous.client) == Some(&address)
        {
            self.by_client.remove(&previous.client);
        }
        if let Some(old_address) = self.by_client.get(&lease.client).copied()
            && old_address != address
            && let Some(old) = self.by_address.get(&old_address)
            && old.client == lease.client
            && old.state == LeaseState::Offered
        {
            // An offer the client never took: free it now rather than at expiry.
            self.by_address.remove(&old_address);
        }
        if lease.state == LeaseState::Declined {
            // Nobody should be steered back to a declined address.
            if self.by_client.get(&lease.client) == Some(&address) {
                self.by_client.remove(&lease.client);
            }
        } else {
            self.by_client.insert(lease.client.clone(), address);
        }
        self.by_address.insert(address, lease);
    }

    /// Forgets an offer (the client chose another server).
    pub fn withdraw_offer(&mut self, client: &ClientId) {
        if let Some(address) = self.by_client.get(client).copied()
            && self
                .by_address
                .get(&address)
                .is_some_and(|lease| lease.state == LeaseState::Offered)
        {
            self.by_address.remove(&address);
            self.by_client.remove(client);
        }
    }

    /// Finds a pool address for `client` that `acceptable` allows: never-used addresses
    /// first (so lapsed leases stay available to their old clients as long as possible),
    /// then lapsed or released ones.
    pub fn find_free(
        &mut self,
        pool: &AddressPool,
        client: &ClientId,
        now: u64,
        mut acceptable: impl FnMut(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        let size = pool.size();
        for fresh_only in [true, false] {
            for step in 0..size {
                let offset = (self.cursor + step) % size;
                let address = Ipv4Addr::from(pool.first + offset as u32);
                let free = if fresh_only {
                    !self.by_address.contains_key(&address)
                } else {
                    self.free_for(address, client, now)
                };
                if free && acceptable(address) {
                    self.cursor = (offset + 1) % size;
                    return Some(address);
                }
            }
        }
        None
    }

    /// All leases worth persisting (offers are not).
    pub fn records(&self) -> impl Iterator<Item = LeaseRecord> + '_ {
        self.by_address
            .iter()
            .filter(|(_, lease)| lease.state != LeaseState::Offered)
            .map(|(address, lease)| LeaseRecord {
                address: *address,
                lease: lease.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(n: u8) -> ClientId {
        ClientId::from_hardware(1, &[0x52, 0x54, 0, 0, 0, n])
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    fn lease(n: u8, state: LeaseState, expires: u64) -> Lease {
        Lease {
            client: client(n),
            state,
            expires,
        }
    }

    #[test]
    fn held_addresses_are_not_free_for_others_until_they_lapse() {
        let mut table = LeaseTable::default();
        table.set(ip(10), lease(1, LeaseState::Bound, 100));
        assert!(table.free_for(ip(10), &client(1), 50));
        assert!(!table.free_for(ip(10), &client(2), 50));
        assert!(table.free_for(ip(10), &client(2), 100));
        table.set(ip(11), lease(1, LeaseState::Released, 0));
        assert!(table.free_for(ip(11), &client(2), 0));
    }

    #[test]
    fn declined_addresses_are_quarantined_even_for_the_decliner() {
        let mut table = LeaseTable::default();
        table.set(ip(10), lease(1, LeaseState::Bound, 100));
        table.set(ip(10), lease(1, LeaseState::Declined, 200));
        assert!(!table.free_for(ip(10), &client(1), 150));
        assert_eq!(table.address_of(&client(1)), None);
        assert!(table.free_for(ip(10), &client(2), 200));
    }

    #[test]
    fn the_client_index_follows_moves_and_takeovers() {
        let mut table = LeaseTable::default();
        table.set(ip(10), lease(1, LeaseState::Offered, 100));
        // Client 1 ends up bound elsewhere: the unused offer is freed.
        table.set(ip(11), lease(1, LeaseState::Bound, 100));
        assert_eq!(table.get(ip(10)), None);
        assert_eq!(table.address_of(&client(1)), Some(ip(11)));
        // Client 2 takes over the lapsed address: client 1 no longer maps to it.
        table.set(ip(11), lease(2, LeaseState::Bound, 300));
        assert_eq!(table.address_of(&client(1)), None);
        assert_eq!(table.address_of(&client(2)), Some(ip(11)));
    }

    #[test]
    fn allocation_prefers_fresh_addresses_then_lapsed_ones() {
        let pool = AddressPool::new(ip(10), ip(12)).unwrap();
        let mut table = LeaseTable::default();
        table.set(ip(10), lease(1, LeaseState::Bound, 10));
        let first = table.find_free(&pool, &client(2), 50, |_| true).unwrap();
        assert_eq!(first, ip(11));
        table.set(first, lease(2, LeaseState::Bound, 100));
        let second = table
            .find_free(&pool, &client(3), 50, |a| a != ip(12))
            .unwrap();
        // 12 is refused by the predicate (say, reserved), 11 is held: 10 has lapsed.
        assert_eq!(second, ip(10));
        table.set(second, lease(3, LeaseState::Bound, 100));
        assert_eq!(
            table.find_free(&pool, &client(4), 50, |a| a != ip(12)),
            None
        );
    }

    #[test]
    fn withdrawn_offers_free_the_address() {
        let mut table = LeaseTable::default();
        table.set(ip(10), lease(1, LeaseState::Offered, 100));
        table.withdraw_offer(&client(1));
        assert!(table.is_empty());
        // A bound lease is not an offer and stays.
        table.set(ip(10), lease(1, LeaseState::Bound, 100));
        table.withdraw_offer(&client(1));
        assert_eq!(table.len(), 1);
        assert_eq!(table.records().count(), 1);
    }

    #[test]
    fn pools_are_inclusive_ranges() {
        assert!(AddressPool::new(ip(12), ip(10)).is_none());
        let pool = AddressPool::new(ip(10), ip(10)).unwrap();
        assert!(pool.contains(ip(10)) && !pool.contains(ip(11)));
        assert_eq!(pool.size(), 1);
    }
}
