//! A fixed-size pool of PostgreSQL connections: at most `size` open at once, opened on demand, a broken one
//! dropped and replaced by the next checkout.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, NoTls};

use super::internal;
use crate::problem::ApiError;

/// Connections to one database.
pub(crate) struct Pool {
    url: String,
    idle: Mutex<Vec<Client>>,
    slots: Arc<Semaphore>,
}

impl Pool {
    /// A pool of at most `size` connections to `url` (none opened yet).
    pub(crate) fn new(url: &str, size: usize) -> Self {
        Self { url: url.to_owned(), idle: Mutex::new(Vec::new()), slots: Arc::new(Semaphore::new(size.max(1))) }
    }

    /// A new connection, outside the pool (its driver runs on a task of its own).
    pub(crate) async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres connection ended");
            }
        });
        Ok(client)
    }

    /// A connection, waiting for one to be free.
    pub(crate) async fn get(&self) -> Result<Pooled<'_>, ApiError> {
        let slot = self.slots.clone().acquire_owned().await.map_err(internal)?;
        let idle = self.idle.lock().map_err(internal)?.pop();
        let client = match idle {
            Some(c) if !c.is_closed() => c,
            _ => Self::connect(&self.url).await.map_err(super::db_error)?,
        };
        Ok(Pooled { pool: self, client: Some(client), _slot: slot })
    }
}

/// A connection checked out of the pool; back in it when dropped (unless it broke).
pub(crate) struct Pooled<'a> {
    pool: &'a Pool,
    client: Option<Client>,
    _slot: OwnedSemaphorePermit,
}

impl Deref for Pooled<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client.as_ref().unwrap_or_else(|| unreachable!("a pooled connection is present until dropped"))
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().unwrap_or_else(|| unreachable!("a pooled connection is present until dropped"))
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take().filter(|c| !c.is_closed()) {
            if let Ok(mut idle) = self.pool.idle.lock() {
                idle.push(c);
            }
        }
    }
}
