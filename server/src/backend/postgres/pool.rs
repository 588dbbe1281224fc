//! A fixed-size pool of PostgreSQL connections: at most `size` open at once, opened on demand, a broken one
//! dropped and replaced by the next checkout. Each connection keeps its prepared statements, so that a
//! statement is parsed and planned once per connection, then each use is one round trip.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, GenericClient, NoTls, Statement};

/// Prepared statements kept per connection; past this many the cache starts over.
const MAX_STATEMENTS: usize = 512;

/// The statements prepared on one connection, by text.
#[derive(Default)]
pub(crate) struct Statements(HashMap<String, Statement>);

impl Statements {
    /// The statement `sql`, prepared on `client` (the connection these statements belong to, or a
    /// transaction of it) the first time.
    pub(crate) async fn get(
        &mut self,
        client: &impl GenericClient,
        sql: &str,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(st) = self.0.get(sql) {
            return Ok(st.clone());
        }
        let st = client.prepare(sql).await?;
        if self.0.len() >= MAX_STATEMENTS {
            self.0.clear();
        }
        self.0.insert(sql.to_owned(), st.clone());
        Ok(st)
    }
}

struct Conn {
    client: Client,
    statements: Statements,
}

use super::internal;
use crate::problem::ApiError;

/// Connections to one database.
pub(crate) struct Pool {
    url: String,
    idle: Mutex<Vec<Conn>>,
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
        let conn = match idle {
            Some(c) if !c.client.is_closed() => c,
            _ => Conn {
                client: Self::connect(&self.url).await.map_err(super::db_error)?,
                statements: Statements::default(),
            },
        };
        Ok(Pooled { pool: self, conn: Some(conn), _slot: slot })
    }
}

/// A connection checked out of the pool; back in it when dropped (unless it broke).
pub(crate) struct Pooled<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    _slot: OwnedSemaphorePermit,
}

impl Pooled<'_> {
    /// The connection and its prepared statements, borrowed apart (a transaction borrows the connection).
    pub(crate) fn split(&mut self) -> (&mut Client, &mut Statements) {
        let conn = self.conn.as_mut().unwrap_or_else(|| unreachable!("a pooled connection is present until dropped"));
        (&mut conn.client, &mut conn.statements)
    }

    /// Runs `sql` (prepared once per connection) and returns its rows.
    pub(crate) async fn query_cached(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let (client, statements) = self.split();
        let st = statements.get(&*client, sql).await?;
        client.query(&st, params).await
    }
}

impl Deref for Pooled<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.conn
            .as_ref()
            .map(|c| &c.client)
            .unwrap_or_else(|| unreachable!("a pooled connection is present until dropped"))
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.conn
            .as_mut()
            .map(|c| &mut c.client)
            .unwrap_or_else(|| unreachable!("a pooled connection is present until dropped"))
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take().filter(|c| !c.client.is_closed()) {
            if let Ok(mut idle) = self.pool.idle.lock() {
                idle.push(c);
            }
        }
    }
}
