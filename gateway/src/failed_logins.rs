//! Slows down password guessing: a failed login (Kafka SASL, MQTT CONNECT) is answered
//! only after a delay that doubles with each recent failure for the same user from the same
//! address, from [`FIRST_DELAY`] up to [`MAX_DELAY`] (Kafka delays every failure by
//! `connection.failed.authentication.delay.ms`, 100 ms by default). Failures older than
//! [`WINDOW`] are forgotten, and a success forgets them at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const FIRST_DELAY: Duration = Duration::from_millis(100);
pub const MAX_DELAY: Duration = Duration::from_secs(5);
pub const WINDOW: Duration = Duration::from_secs(600);
/// Pairs kept at most; past it, those whose last failure is oldest go first.
const MAX_TRACKED: usize = 100_000;

/// A user name and the address it logged in from.
type Who = (String, Option<IpAddr>);

#[derive(Debug, Default)]
pub struct FailedLogins {
    /// Failures in a row, and when the last one was.
    recent: Mutex<HashMap<Who, (u32, Instant)>>,
}

impl FailedLogins {
    /// Records a failure; returns how long to wait before answering it.
    pub fn failed(&self, user: &str, addr: Option<IpAddr>) -> Duration {
        self.failed_at(user, addr, Instant::now())
    }

    fn failed_at(&self, user: &str, addr: Option<IpAddr>, now: Instant) -> Duration {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= MAX_TRACKED {
            recent.retain(|_, (_, last)| now.duration_since(*last) < WINDOW);
            if recent.len() >= MAX_TRACKED {
                let mut lasts: Vec<Instant> = recent.values().map(|(_, l)| *l).collect();
                lasts.sort_unstable();
                let cut = lasts[lasts.len() / 2];
                recent.retain(|_, (_, last)| *last > cut);
            }
        }
        let entry = recent.entry((user.to_string(), addr)).or_insert((0, now));
        if now.duration_since(entry.1) >= WINDOW {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let doublings = (entry.0 - 1).min(16);
        FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
    }

    /// A successful login: its user and address start afresh.
    pub fn succeeded(&self, user: &str, addr: Option<IpAddr>) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.remove(&(user.to_string(), addr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_per_user_and_address_and_are_forgotten() {
        let f = FailedLogins::default();
        let a: Option<IpAddr> = Some("10.0.0.1".parse().expect("ip"));
        let b: Option<IpAddr> = Some("10.0.0.2".parse().expect("ip"));
        let t = Instant::now();
        let delays: Vec<u64> = (0..8)
            .map(|_| f.failed_at("alice", a, t).as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        // Another user, or the same from elsewhere, is not slowed by alice's failures.
        assert_eq!(f.failed_at("bob", a, t), FIRST_DELAY);
        assert_eq!(f.failed_at("alice", b, t), FIRST_DELAY);
        // Forgotten after the window, and after a success.
        assert_eq!(f.failed_at("alice", a, t + WINDOW), FIRST_DELAY);
        f.failed_at("alice", a, t + WINDOW);
        f.succeeded("alice", a);
        assert_eq!(f.failed_at("alice", a, t + WINDOW), FIRST_DELAY);
    }
}
