//! A small, fixed set of multiplexed connections over one or several endpoints.
//!
//! Calls take the connections round-robin. A slot whose connection died is reconnected
//! lazily, by the first call that picks it (others picking it meanwhile wait for that
//! one connect rather than starting their own). New connections go to the endpoints in
//! turn; an endpoint that refuses fails over to the next one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::{Instant, timeout_at};

use crate::config::{ClientConfig, Endpoint};
use crate::error::Error;
use crate::pipeline::{Connection, ServerInfo};
use crate::transport::Connector;

/// One connection slot.
#[derive(Default)]
struct Slot {
    /// The live connection, if any. A plain mutex: it is held only to clone an `Arc`.
    current: Mutex<Option<Arc<Connection>>>,
    /// Held while (re)connecting, so that one caller connects and the rest wait.
    connecting: tokio::sync::Mutex<()>,
}

impl Slot {
    fn live(&self) -> Option<Arc<Connection>> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().filter(|connection| connection.is_open()).cloned()
    }

    fn set(&self, connection: Arc<Connection>) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(connection);
    }
}

/// The client's connections.
pub(crate) struct Pool {
    endpoints: Vec<Endpoint>,
    connector: Connector,
    connect_timeout: Duration,
    slots: Vec<Slot>,
    /// Round-robin over slots.
    next_slot: AtomicUsize,
    /// The endpoint the next new connection tries first.
    next_endpoint: AtomicUsize,
    /// What the most recently connected proxy announced.
    server: Mutex<ServerInfo>,
}

impl Pool {
    /// Opens the first connection, so that a wrong address or a refusing proxy fails
    /// here rather than on the first call, and learns the proxy's limits. The other
    /// slots connect on first use.
    pub(crate) async fn connect(config: &ClientConfig) -> Result<Self, Error> {
        let mut pool = Self {
            endpoints: config.endpoints.clone(),
            connector: Connector::new(config)?,
            connect_timeout: config.connect_timeout,
            slots: (0..config.connections).map(|_| Slot::default()).collect(),
            next_slot: AtomicUsize::new(0),
            next_endpoint: AtomicUsize::new(0),
            server: Mutex::new(ServerInfo { max_frame: 0, max_in_flight: 0, server_version: String::new() }),
        };
        let deadline =
            Instant::now() + config.connect_timeout * u32::try_from(pool.endpoints.len()).unwrap_or(1);
        let first = pool.open(deadline).await?;
        *pool.server.get_mut().unwrap_or_else(PoisonError::into_inner) = first.server_info().clone();
        pool.slots[0].set(first);
        Ok(pool)
    }

    /// What the most recently connected proxy announced in HELLO.
    pub(crate) fn server_info(&self) -> ServerInfo {
        self.server.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A live connection, reconnecting the picked slot if its connection died.
    pub(crate) async fn get(&self, deadline: Instant) -> Result<Arc<Connection>, Error> {
        let index = self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let slot = &self.slots[index];
        if let Some(connection) = slot.live() {
            return Ok(connection);
        }
        // Boxed: the handshake futures are large, and every call's future would carry
        // them inline although almost every call takes the branch above.
        Box::pin(self.reconnect(slot, deadline)).await
    }

    /// Replaces `slot`'s dead connection, unless another caller already did.
    async fn reconnect(&self, slot: &Slot, deadline: Instant) -> Result<Arc<Connection>, Error> {
        let _connecting =
            timeout_at(deadline, slot.connecting.lock()).await.map_err(|_| Error::DeadlineExceeded)?;
        // Someone else may have reconnected while we waited.
        if let Some(connection) = slot.live() {
            return Ok(connection);
        }
        let connection = self.open(deadline).await?;
        *self.server.lock().unwrap_or_else(PoisonError::into_inner) = connection.server_info().clone();
        slot.set(Arc::clone(&connection));
        Ok(connection)
    }

    /// Connects to the endpoints in turn from the rotating start, returning the first
    /// that answers HELLO. Each try gets `connect_timeout`, cut short by `deadline`.
    async fn open(&self, deadline: Instant) -> Result<Arc<Connection>, Error> {
        let count = self.endpoints.len();
        let start = self.next_endpoint.load(Ordering::Relaxed);
        let mut last_error = None;
        for offset in 0..count {
            let index = (start + offset) % count;
            let endpoint = &self.endpoints[index];
            let now = Instant::now();
            if now >= deadline {
                return Err(last_error.unwrap_or(Error::DeadlineExceeded));
            }
            let try_until = deadline.min(now + self.connect_timeout);
            match self.connector.connect(endpoint, try_until).await {
                Ok(connection) => {
                    // Spread the next connection onto the following endpoint.
                    self.next_endpoint.store((index + 1) % count, Ordering::Relaxed);
                    return Ok(Arc::new(connection));
                }
                Err(error) => {
                    // A proxy that refused HELLO for good (FORBIDDEN, say) would refuse
                    // it everywhere; anything else (refused, unreachable, BUSY, a
                    // peer that does not speak the protocol) fails over.
                    if error.status().is_some_and(|status| !status.is_retryable()) {
                        return Err(error);
                    }
                    tracing::debug!(%endpoint, %error, "connect failed; trying the next endpoint");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or(Error::DeadlineExceeded))
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("endpoints", &self.endpoints)
            .field("connections", &self.slots.len())
            .finish_non_exhaustive()
    }
}
