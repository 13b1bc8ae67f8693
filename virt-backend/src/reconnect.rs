//! A libvirt connection that is reopened when the daemon behind it goes
//! away, for example when libvirtd restarts.
//!
//! libvirt never reopens a connection by itself: once the daemon has gone,
//! every call on the old connection fails, even after the daemon is back.
//! [`ReconnectingConnection`] notices this from `virConnectIsAlive` after a
//! failed call, opens a new connection to the same URI and keeps it beside
//! the old ones, so that a `&Connection` handed out earlier stays valid.
//! Each reopening keeps one closed connection object until the manager is
//! dropped, which is a small, bounded cost per daemon restart.

use std::sync::OnceLock;

use berth_core::error::error_chain;
use berth_core::{Error, Result};
use tracing::{info, warn};

use crate::handle::Connection;
use crate::manager::connect;

/// Whether an operation may run again after the connection was reopened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// The operation only reads, or running it twice has the effect of
    /// running it once (list, destroy).
    Once,
    /// The operation may have changed something before the connection was
    /// lost (create), so it fails and the caller decides.
    Never,
}

/// One connection and, once it was found closed, its replacement.
struct Generation {
    connection: Connection,
    next: OnceLock<Box<Generation>>,
}

impl Generation {
    fn new(connection: Connection) -> Self {
        Self {
            connection,
            next: OnceLock::new(),
        }
    }
}

/// A connection to one URI that is reopened when it is found closed.
pub(crate) struct ReconnectingConnection {
    uri: String,
    first: Generation,
}

impl ReconnectingConnection {
    /// Wraps `connection`, which was opened at `uri`.
    pub(crate) fn new(uri: &str, connection: Connection) -> Self {
        Self {
            uri: uri.to_owned(),
            first: Generation::new(connection),
        }
    }

    fn newest(&self) -> &Generation {
        let mut generation = &self.first;
        while let Some(next) = generation.next.get() {
            generation = next;
        }
        generation
    }

    /// Returns the newest connection.
    pub(crate) fn current(&self) -> &Connection {
        &self.newest().connection
    }

    /// Opens a new connection unless the newest one is alive, which it is
    /// when another thread has reopened it already.
    fn reopen(&self) -> Result<()> {
        let newest = self.newest();
        if is_alive(&newest.connection) {
            return Ok(());
        }
        let fresh = connect(&self.uri)?;
        // When another thread appended its connection first, `set` fails and
        // drops `fresh`, which closes it, and that thread's one is used.
        if newest.next.set(Box::new(Generation::new(fresh))).is_ok() {
            info!(uri = self.uri.as_str(), "reopened the libvirt connection");
        }
        Ok(())
    }

    /// Runs `operation`, which reaches libvirt through [`Self::current`].
    /// A connection found closed before the start is reopened first. When
    /// the operation fails and the connection is closed afterwards, the
    /// connection is reopened, and the operation runs once more if `retry`
    /// allows it. Errors of a lost connection name the URI.
    pub(crate) fn run<T>(
        &self,
        action: &str,
        retry: Retry,
        operation: impl Fn() -> Result<T>,
    ) -> Result<T> {
        let uri = self.uri.as_str();
        if !is_alive(self.current()) {
            info!(uri, "the libvirt connection is closed; reopening it");
            self.reopen().map_err(|error| Error::Backend {
                context: format!(
                    "{action} failed: the connection to libvirt at {uri} is closed and reopening it failed"
                ),
                source: Box::new(error),
            })?;
        }

        let error = match operation() {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if is_alive(self.current()) {
            return Err(error);
        }
        warn!(uri, error = %error_chain(&error), "{action} failed because the libvirt connection was lost; reopening it");
        if let Err(reopen_error) = self.reopen() {
            return Err(Error::Backend {
                context: format!(
                    "{action} failed: the connection to libvirt at {uri} was lost, and reopening it failed: {}",
                    error_chain(&reopen_error)
                ),
                source: Box::new(error),
            });
        }
        match retry {
            Retry::Once => {
                info!(uri, "retrying {action} on the reopened libvirt connection");
                operation()
            }
            Retry::Never => Err(Error::Backend {
                context: format!(
                    "{action} failed: the connection to libvirt at {uri} was lost; it has been reopened, so a new call can succeed"
                ),
                source: Box::new(error),
            }),
        }
    }
}

fn is_alive(connection: &Connection) -> bool {
    connection.is_alive().unwrap_or(false)
}
