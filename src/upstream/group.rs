//! An upstream group on one shard: its endpoints' pools, the balancer, and passive health.
//!
//! Passive health: `fail_threshold` consecutive failures (connect error, reset, timeout) eject an
//! endpoint for `eject_for`; a success resets the count. When every endpoint is ejected the group
//! answers "unavailable" (503) rather than hammering dead backends.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::{Balance, HealthConfig, UpstreamConfig};
use crate::upstream::pool::Pool;

/// One endpoint of a group, with its pool and health state.
#[derive(Debug)]
pub struct Member {
    /// This endpoint's pool.
    pub pool: Rc<Pool>,
    /// Requests in flight to this endpoint (for `least_outstanding`).
    outstanding: Cell<u32>,
    consecutive_failures: Cell<u32>,
    ejected_until: Cell<Option<Instant>>,
}

impl Member {
    fn available(&self, now: Instant) -> bool {
        match self.ejected_until.get() {
            Some(until) if until > now => false,
            Some(_) => {
                // Ejection over: give it a fresh chance (the next failure counts from zero).
                self.ejected_until.set(None);
                self.consecutive_failures.set(0);
                true
            }
            None => true,
        }
    }

    /// Whether this endpoint is ejected right now.
    pub fn is_ejected(&self) -> bool {
        self.ejected_until
            .get()
            .is_some_and(|t| t > crate::io::now())
    }
}

/// Counts one request in flight on a member; decrements on drop.
pub struct InFlight {
    member: Rc<Member>,
}

impl InFlight {
    /// The member this request went to.
    pub fn member(&self) -> &Rc<Member> {
        &self.member
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let m = &self.member;
        m.outstanding.set(m.outstanding.get().saturating_sub(1));
    }
}

/// A named group of endpoints on one shard.
#[derive(Debug)]
pub struct UpstreamGroup {
    /// The upstream's name (metrics label, error bodies).
    pub name: String,
    members: Vec<Rc<Member>>,
    balance: Balance,
    health: HealthConfig,
    next: Cell<usize>,
    rng: Cell<u64>,
}

impl UpstreamGroup {
    /// Builds the group; `pool_for` supplies each endpoint's pool (reused across reloads when
    /// unchanged).
    pub fn new(
        cfg: &UpstreamConfig,
        mut pool_for: impl FnMut(usize) -> Rc<Pool>,
        seed: u64,
    ) -> Self {
        let members = (0..cfg.endpoints.len())
            .map(|i| {
                Rc::new(Member {
                    pool: pool_for(i),
                    outstanding: Cell::new(0),
                    consecutive_failures: Cell::new(0),
                    ejected_until: Cell::new(None),
                })
            })
            .collect();
        UpstreamGroup {
            name: cfg.name.clone(),
            members,
            balance: cfg.balance,
            health: cfg.health.clone(),
            next: Cell::new(0),
            rng: Cell::new(seed | 1),
        }
    }

    /// Every member, in config order.
    pub fn members(&self) -> &[Rc<Member>] {
        &self.members
    }

    /// Picks an available endpoint other than those in `exclude` (already tried for this
    /// request). None when every candidate is ejected or excluded.
    pub fn pick(&self, exclude: &[usize]) -> Option<(usize, InFlight)> {
        let now = crate::io::now();
        let n = self.members.len();
        let usable = |i: usize| !exclude.contains(&i) && self.members[i].available(now);
        let idx = match self.balance {
            Balance::RoundRobin => {
                let start = self.next.get();
                let found = (0..n).map(|k| (start + k) % n).find(|&i| usable(i))?;
                self.next.set(found + 1);
                found
            }
            Balance::LeastOutstanding => {
                // Power of two choices: two random candidates, the less loaded wins.
                let candidates: Vec<usize> = (0..n).filter(|&i| usable(i)).collect();
                match candidates.len() {
                    0 => return None,
                    1 => candidates[0],
                    len => {
                        let a = candidates[(self.random() % len as u64) as usize];
                        let mut b = candidates[(self.random() % len as u64) as usize];
                        if a == b {
                            b = candidates
                                [(candidates.iter().position(|&c| c == a).unwrap_or(0) + 1) % len];
                        }
                        if self.members[b].outstanding.get() < self.members[a].outstanding.get() {
                            b
                        } else {
                            a
                        }
                    }
                }
            }
        };
        let member = self.members[idx].clone();
        member.outstanding.set(member.outstanding.get() + 1);
        Some((idx, InFlight { member }))
    }

    /// xorshift64: cheap, shard-local, good enough to spread picks.
    fn random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x
    }

    /// Records a good exchange with member `idx`.
    pub fn report_success(&self, idx: usize) {
        self.members[idx].consecutive_failures.set(0);
    }

    /// Records a failure (connect error, reset, timeout) of member `idx`; ejects it at the
    /// threshold. Returns true if this failure ejected it.
    pub fn report_failure(&self, idx: usize) -> bool {
        let m = &self.members[idx];
        let n = m.consecutive_failures.get().saturating_add(1);
        m.consecutive_failures.set(n);
        if n >= self.health.fail_threshold && m.ejected_until.get().is_none() {
            m.ejected_until
                .set(Some(crate::io::now() + self.health.eject_for));
            tracing::warn!(
                upstream = %self.name,
                endpoint = %m.pool.endpoint(),
                failures = n,
                "endpoint ejected for {:?}",
                self.health.eject_for
            );
            return true;
        }
        false
    }

    /// How long until the earliest ejected endpoint comes back (for Retry-After hints).
    pub fn retry_after(&self) -> Option<Duration> {
        let now = crate::io::now();
        self.members
            .iter()
            .filter_map(|m| m.ejected_until.get())
            .map(|t| t.saturating_duration_since(now))
            .min()
    }
}
