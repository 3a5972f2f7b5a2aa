//! Per-identity quotas: open connections, requests in flight, and a request rate
//! (`[quotas]`). Not to be confused with the protocol limits on fields (`[limits]`).
//!
//! Every connection of one identity (see
//! [`Identity::principal`](crate::access::identity::Identity::principal)) shares one
//! `IdentityQuota`. Over a quota the answer is BUSY with a retry-after at once;
//! nothing queues. The rate is a GCRA token bucket on one atomic, so checking it
//! takes no lock.
//!
//! The quotas can be replaced while serving ([`QuotaRegistry::replace`]): each
//! identity's rate bucket and in-flight slots are rebuilt from the new settings on its
//! next request (the bucket starts full, slots held under the old settings are not
//! counted against the new ones), and `max_connections` applies to the next connection.
//! Connections that were opened while no quota was configured stay unlimited.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::QuotaConfig;

/// The quotas of every identity seen, created on first connection and forgotten when
/// its last connection closes.
#[derive(Debug)]
pub struct QuotaRegistry {
    settings: Arc<ArcSwap<Settings>>,
    epoch: Instant,
    identities: Mutex<HashMap<String, Weak<IdentityQuota>>>,
}

/// One generation of the `[quotas]` settings.
#[derive(Debug)]
struct Settings {
    generation: u64,
    config: QuotaConfig,
}

impl QuotaRegistry {
    /// A registry applying `config`.
    pub fn new(config: QuotaConfig) -> Self {
        Self {
            settings: Arc::new(ArcSwap::from_pointee(Settings { generation: 0, config })),
            epoch: Instant::now(),
            identities: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the settings (a config reload); see the module docs for when each
    /// quota takes effect.
    pub fn replace(&self, config: QuotaConfig) {
        let generation = self.settings.load().generation + 1;
        self.settings.store(Arc::new(Settings { generation, config }));
    }

    /// Whether any quota is configured at all.
    pub fn enabled(&self) -> bool {
        self.settings.load().config.enabled()
    }

    /// Admits a new connection of `principal`, or says how long to wait if it already
    /// has `max_connections` open. The returned handle counts as one open connection
    /// until dropped.
    pub fn connect(&self, principal: &str) -> Result<ConnectionQuota, Duration> {
        let quota = {
            let mut identities = self.identities.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(existing) = identities.get(principal).and_then(Weak::upgrade) {
                existing
            } else {
                identities.retain(|_, weak| weak.strong_count() > 0);
                let settings = self.settings.load();
                let limits = RequestLimits::new(&settings, self.epoch);
                let fresh = Arc::new(IdentityQuota {
                    connections: AtomicU32::new(0),
                    settings: Arc::clone(&self.settings),
                    epoch: self.epoch,
                    limits: ArcSwap::from_pointee(limits),
                });
                identities.insert(principal.to_owned(), Arc::downgrade(&fresh));
                fresh
            }
        };
        let settings = self.settings.load();
        let max = settings.config.max_connections;
        let admitted = quota.connections.fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
            (max == 0 || open < max).then_some(open + 1)
        });
        match admitted {
            Ok(_) => Ok(ConnectionQuota { quota }),
            Err(_) => Err(settings.config.retry_after),
        }
    }
}

/// One identity's counters.
#[derive(Debug)]
struct IdentityQuota {
    connections: AtomicU32,
    settings: Arc<ArcSwap<Settings>>,
    epoch: Instant,
    limits: ArcSwap<RequestLimits>,
}

/// An identity's per-request limits, built from one generation of the settings.
#[derive(Debug)]
struct RequestLimits {
    generation: u64,
    in_flight: Option<Arc<Semaphore>>,
    rate: Option<Gcra>,
    retry_after: Duration,
}

impl RequestLimits {
    fn new(settings: &Settings, epoch: Instant) -> Self {
        let config = &settings.config;
        Self {
            generation: settings.generation,
            in_flight: (config.max_in_flight > 0)
                .then(|| Arc::new(Semaphore::new(config.max_in_flight as usize))),
            rate: (config.rate > 0.0).then(|| Gcra::new(config.rate, config.burst, epoch)),
            retry_after: config.retry_after,
        }
    }
}

impl IdentityQuota {
    /// The limits of the current settings, rebuilt on the first request after a reload.
    fn limits(&self) -> Arc<RequestLimits> {
        let limits = self.limits.load_full();
        let settings = self.settings.load();
        if limits.generation == settings.generation {
            return limits;
        }
        let fresh = Arc::new(RequestLimits::new(&settings, self.epoch));
        // Another request may have rebuilt them first: keep whichever got in.
        let previous = self.limits.compare_and_swap(&limits, Arc::clone(&fresh));
        if Arc::ptr_eq(&previous, &limits) { fresh } else { arc_swap::Guard::into_inner(previous) }
    }
}

/// A connection's share of its identity's quota; dropping it closes the connection's
/// slot.
#[derive(Debug)]
pub struct ConnectionQuota {
    quota: Arc<IdentityQuota>,
}

impl ConnectionQuota {
    /// Admits one request: takes a token and an in-flight slot (held until the
    /// response is written), or says how long to wait.
    pub fn admit(&self, now: Instant) -> Result<Option<OwnedSemaphorePermit>, Duration> {
        let limits = self.quota.limits();
        if let Some(rate) = &limits.rate {
            rate.take(now)?;
        }
        match &limits.in_flight {
            None => Ok(None),
            Some(semaphore) => {
                Arc::clone(semaphore).try_acquire_owned().map(Some).map_err(|_| limits.retry_after)
            }
        }
    }
}

impl Drop for ConnectionQuota {
    fn drop(&mut self) {
        self.quota.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Generic cell rate algorithm: one request per `interval` sustained, `burst` at once.
/// The state is the theoretical arrival time of the next request, in nanoseconds since
/// `epoch`.
#[derive(Debug)]
struct Gcra {
    epoch: Instant,
    interval: u64,
    tolerance: u64,
    tat: AtomicU64,
}

impl Gcra {
    fn new(rate: f64, burst: u32, epoch: Instant) -> Self {
        let interval = (1e9 / rate).max(1.0) as u64;
        Self { epoch, interval, tolerance: interval * u64::from(burst.max(1) - 1), tat: AtomicU64::new(0) }
    }

    fn take(&self, now: Instant) -> Result<(), Duration> {
        let now = u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let start = tat.max(now);
            if start - now > self.tolerance {
                // At least 1 ms, so a client honouring it does not spin.
                return Err(Duration::from_nanos(start - now - self.tolerance).max(Duration::from_millis(1)));
            }
            match self.tat.compare_exchange_weak(
                tat,
                start + self.interval,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_connections: u32, max_in_flight: u32, rate: f64, burst: u32) -> QuotaConfig {
        QuotaConfig { max_connections, max_in_flight, rate, burst, ..QuotaConfig::default() }
    }

    #[test]
    fn connections_are_counted_per_identity() {
        let registry = QuotaRegistry::new(config(2, 0, 0.0, 1));
        let a1 = registry.connect("a").unwrap();
        let _a2 = registry.connect("a").unwrap();
        assert!(registry.connect("a").is_err());
        let _b = registry.connect("b").unwrap();
        drop(a1);
        registry.connect("a").unwrap();
    }

    #[test]
    fn the_bucket_allows_the_burst_then_the_rate() {
        let epoch = Instant::now();
        let gcra = Gcra::new(10.0, 3, epoch);
        let now = epoch + Duration::from_secs(1);
        for _ in 0..3 {
            gcra.take(now).unwrap();
        }
        let wait = gcra.take(now).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
        gcra.take(now + Duration::from_millis(100)).unwrap();
    }

    #[test]
    fn replaced_quotas_apply_to_open_connections() {
        let registry = QuotaRegistry::new(config(0, 1, 0.0, 1));
        let connection = registry.connect("a").unwrap();
        let _slot = connection.admit(Instant::now()).unwrap();
        assert!(connection.admit(Instant::now()).is_err());
        registry.replace(config(1, 3, 0.0, 1));
        let _second = connection.admit(Instant::now()).unwrap();
        let _third = connection.admit(Instant::now()).unwrap();
        assert!(registry.connect("a").is_err(), "max_connections = 1 now, and one is open");
    }

    #[test]
    fn in_flight_slots_come_back() {
        let registry = QuotaRegistry::new(config(0, 1, 0.0, 1));
        let connection = registry.connect("a").unwrap();
        let slot = connection.admit(Instant::now()).unwrap();
        assert!(connection.admit(Instant::now()).is_err());
        drop(slot);
        assert!(connection.admit(Instant::now()).is_ok());
    }
}
