//! The state one shard owns besides its request-path state ([`ShardLocal`]): which driver it
//! runs, the live gateway, and the count of open client connections against its share of the
//! connection limit.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::gateway::Live;
use crate::io::{Driver, LocalEvent};
use crate::local::ShardLocal;

/// Everything one shard owns. Lives in an `Rc` on the shard's thread; never shared across threads.
pub struct Shard {
    /// Shard index, 0-based.
    pub id: usize,
    /// The driver this shard runs.
    pub driver: Driver,
    /// Counters, drain signal, access log, spare buffers: what every request shares.
    local: Rc<ShardLocal>,
    /// The live config, routes and pools; replaced whole on reload, in-flight requests keep theirs.
    gateway: Rc<Live>,
    /// Open client connections on this shard.
    open_conns: Cell<usize>,
    /// This shard's share of the client connection limit: `limits.max_connections`, lowered to
    /// keep a reserve of fds for backends under `RLIMIT_NOFILE` (see `fds::client_conn_limit`).
    conn_limit: usize,
    /// Set when a connection closes while the accept loop waits below the limit.
    below_limit: RefCell<Option<LocalEvent>>,
}

impl Shard {
    /// Shard `id` on `driver`, serving `gateway`, holding at most `conn_limit` clients.
    pub fn new(
        id: usize,
        driver: Driver,
        local: ShardLocal,
        gateway: Live,
        conn_limit: usize,
    ) -> Shard {
        Shard {
            id,
            driver,
            local: Rc::new(local),
            gateway: Rc::new(gateway),
            open_conns: Cell::new(0),
            conn_limit,
            below_limit: RefCell::new(None),
        }
    }

    /// The request-path state every connection of this shard holds.
    pub fn local(&self) -> &Rc<ShardLocal> {
        &self.local
    }

    /// The gateway new requests use (replaced on reload).
    pub fn gateway(&self) -> &Rc<Live> {
        &self.gateway
    }

    /// Number of open client connections on this shard.
    pub fn open_connections(&self) -> usize {
        self.open_conns.get()
    }

    /// Client slots left under the shard's connection limit.
    pub fn headroom(&self) -> usize {
        self.conn_limit.saturating_sub(self.open_conns.get())
    }

    /// Registers `ev` to be set when the next connection closes.
    pub fn wake_below_limit(&self, ev: LocalEvent) {
        *self.below_limit.borrow_mut() = Some(ev);
    }

    /// A client connection was accepted and is being served.
    pub fn conn_opened(&self) {
        self.open_conns.set(self.open_conns.get() + 1);
        self.local.metrics().conn_opened();
    }

    /// A client connection closed.
    pub fn conn_closed(&self) {
        self.open_conns.set(self.open_conns.get().saturating_sub(1));
        self.local.metrics().conn_closed();
        if let Some(ev) = self.below_limit.borrow_mut().take() {
            ev.set();
        }
    }
}
