//! A limit on open connections per source address (Kafka's `max.connections.per.ip`),
//! shared by the Kafka and MQTT listeners: one noisy host cannot take every connection a
//! gateway has.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections by source address.
#[derive(Debug)]
pub struct PerIp {
    /// At most this many per address; 0: no limit.
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds one connection's place; gives it back when dropped. Without a limit nothing is
/// counted.
#[derive(Debug)]
pub struct Slot(Option<(Arc<PerIp>, IpAddr)>);

impl PerIp {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for a new connection from `ip`, or `None` when it has `limit` open.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        if self.limit == 0 {
            return Some(Slot(None));
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Slot(Some((self.clone(), ip))))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some((owner, ip)) = &self.0 else {
            return;
        };
        let mut open = owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_per_address_and_given_back() {
        let a: IpAddr = "10.0.0.1".parse().expect("an address");
        let b: IpAddr = "10.0.0.2".parse().expect("an address");
        let limits = PerIp::new(2);
        let first = limits.admit(a).expect("first");
        let _second = limits.admit(a).expect("second");
        assert!(
            limits.admit(a).is_none(),
            "a third from one address is refused"
        );
        assert!(limits.admit(b).is_some(), "another address is not affected");
        drop(first);
        assert!(
            limits.admit(a).is_some(),
            "a closed connection frees its place"
        );
        let unlimited = PerIp::new(0);
        let held: Vec<_> = (0..100).map(|_| unlimited.admit(a)).collect();
        assert!(held.iter().all(Option::is_some));
        drop(held);
        assert!(unlimited.open.lock().expect("not poisoned").is_empty());
    }
}
