//! The provisioning slots (BMO's `HasCapacity`): at most `limit` hosts inspect, provision or
//! deprovision at once; the others queue in arrival order. Virtual-media hosts never ask.

use std::collections::{HashSet, VecDeque};

use crate::lifecycle::HostId;

#[derive(Debug)]
pub(super) struct Capacity {
    /// 0 means no limit.
    limit: usize,
    holders: HashSet<HostId>,
    queue: VecDeque<HostId>,
    /// The members of `queue`, for constant-time checks with thousands queued.
    queued: HashSet<HostId>,
}

impl Capacity {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            limit,
            holders: HashSet::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
        }
    }

    fn has_room(&self) -> bool {
        self.limit == 0 || self.holders.len() < self.limit
    }

    /// A host that held a slot when the engine stopped keeps it.
    pub(super) fn hold(&mut self, id: HostId) {
        self.holders.insert(id);
    }

    /// Asks for a slot; `true` when granted at once, otherwise the host queues.
    pub(super) fn request(&mut self, id: HostId) -> bool {
        if self.holders.contains(&id) {
            return true;
        }
        if self.queue.is_empty() && self.has_room() {
            self.holders.insert(id);
            return true;
        }
        if self.queued.insert(id) {
            self.queue.push_back(id);
        }
        false
    }

    /// Gives back `id`'s slot or takes it out of the queue; returns the hosts granted a
    /// slot as a result.
    pub(super) fn release(&mut self, id: HostId) -> Vec<HostId> {
        if self.queued.remove(&id) {
            self.queue.retain(|queued| *queued != id);
        }
        self.holders.remove(&id);
        let mut granted = Vec::new();
        while self.has_room() {
            let Some(next) = self.queue.pop_front() else {
                break;
            };
            self.queued.remove(&next);
            self.holders.insert(next);
            granted.push(next);
        }
        granted
    }

    pub(super) fn in_use(&self) -> usize {
        self.holders.len()
    }

    pub(super) fn waiting(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> HostId {
        HostId::from_u128(n)
    }

    #[test]
    fn slots_are_granted_in_arrival_order() {
        let mut capacity = Capacity::new(2);
        assert!(capacity.request(id(1)));
        assert!(capacity.request(id(2)));
        assert!(!capacity.request(id(3)));
        assert!(!capacity.request(id(4)));
        assert!(
            capacity.request(id(1)),
            "a holder asking again keeps its slot"
        );
        assert_eq!((capacity.in_use(), capacity.waiting()), (2, 2));
        assert_eq!(
            capacity.release(id(4)),
            [],
            "leaving the queue frees nothing"
        );
        assert_eq!(capacity.release(id(1)), [id(3)]);
        assert_eq!(
            capacity.release(id(9)),
            [],
            "releasing an unknown host is harmless"
        );
        assert_eq!((capacity.in_use(), capacity.waiting()), (2, 0));
    }

    #[test]
    fn over_subscription_after_a_restart_drains_before_granting() {
        let mut capacity = Capacity::new(1);
        capacity.hold(id(1));
        capacity.hold(id(2));
        assert!(!capacity.request(id(3)));
        assert_eq!(capacity.release(id(1)), []);
        assert_eq!(capacity.release(id(2)), [id(3)]);
    }

    #[test]
    fn zero_means_unlimited() {
        let mut capacity = Capacity::new(0);
        assert!((0..1000).all(|n| capacity.request(id(n))));
    }
}
