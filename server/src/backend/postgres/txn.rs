//! What the PostgreSQL job queue and run metrics share for their transactions: a failure that is either the
//! call's own answer or a database error ([`Fail`]), retries of the transactions PostgreSQL aborts as
//! deadlock victims or serialization failures ([`retrying`]), and a transaction whose statements are
//! prepared once per connection ([`Tx`]). Each is generic over the call's error type ([`CallError`]:
//! `QueueError`, `MetricsError`).

use std::future::Future;
use std::marker::PhantomData;

use cairn_store::metrics::MetricsError;
use cairn_store::queue::QueueError;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row, Statement};

use super::pool::{Pooled, Statements};

/// Attempts of a transaction that PostgreSQL aborted as a deadlock victim or a serialization failure.
pub(crate) const ATTEMPTS: usize = 16;

/// The error type of a call: how a database failure, text the database cannot store, and giving up after
/// [`ATTEMPTS`] are told.
pub(crate) trait CallError: Sized + std::fmt::Display {
    /// The backend failed (`detail` names how).
    fn backend(detail: String) -> Self;
    /// The request cannot be stored as it is.
    fn invalid(detail: String) -> Self;
    /// Every one of `attempts` was aborted; `last` is the last abort's error.
    fn contended(attempts: usize, last: Option<Self>) -> Self;
}

impl CallError for QueueError {
    fn backend(detail: String) -> Self {
        QueueError::Backend(detail)
    }
    fn invalid(detail: String) -> Self {
        QueueError::Invalid(detail)
    }
    fn contended(attempts: usize, last: Option<Self>) -> Self {
        let detail = last.map(|e| e.to_string()).unwrap_or_default();
        QueueError::Contended(format!("{attempts} attempts failed: {detail}"))
    }
}

impl CallError for MetricsError {
    fn backend(detail: String) -> Self {
        MetricsError::Backend(detail)
    }
    fn invalid(detail: String) -> Self {
        MetricsError::Invalid(detail)
    }
    fn contended(attempts: usize, _last: Option<Self>) -> Self {
        MetricsError::Contention { attempts }
    }
}

/// A failure inside a call: the call's answer (a refusal, or a failure already mapped), returned as it is,
/// or a database error (retried when PostgreSQL says the transaction may succeed if run again).
#[derive(Debug)]
pub(crate) enum Fail<E> {
    /// The call's answer.
    Refused(E),
    /// The database's.
    Db(tokio_postgres::Error),
}

impl<E: CallError> Fail<E> {
    /// Data the call cannot read (a row it did not write).
    pub(crate) fn corrupt(detail: String) -> Self {
        Fail::Refused(E::backend(format!("postgres: {detail}")))
    }

    /// Whether running the transaction again may succeed.
    fn retryable(&self) -> bool {
        let retry = [SqlState::T_R_DEADLOCK_DETECTED, SqlState::T_R_SERIALIZATION_FAILURE];
        matches!(self, Fail::Db(e) if e.code().is_some_and(|c| retry.contains(c)))
    }

    /// The call's error.
    pub(crate) fn into_error(self) -> E {
        match self {
            Fail::Refused(e) => e,
            Fail::Db(e) => pg(e),
        }
    }
}

impl<E> From<tokio_postgres::Error> for Fail<E> {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<QueueError> for Fail<QueueError> {
    fn from(e: QueueError) -> Self {
        Fail::Refused(e)
    }
}

impl From<Fail<QueueError>> for QueueError {
    fn from(f: Fail<QueueError>) -> Self {
        f.into_error()
    }
}

impl From<MetricsError> for Fail<MetricsError> {
    fn from(e: MetricsError) -> Self {
        Fail::Refused(e)
    }
}

impl From<Fail<MetricsError>> for MetricsError {
    fn from(f: Fail<MetricsError>) -> Self {
        f.into_error()
    }
}

/// A PostgreSQL error as a call's error: text the database cannot store (`\u0000` in `jsonb`, a character
/// its encoding lacks) is an invalid request, anything else a failure of the backend.
pub(crate) fn pg<E: CallError>(e: tokio_postgres::Error) -> E {
    let detail = e.as_db_error().map_or_else(|| e.to_string(), |d| d.to_string());
    if e.code() == Some(&SqlState::UNTRANSLATABLE_CHARACTER) {
        return E::invalid(format!("PostgreSQL cannot store this text: {detail}"));
    }
    E::backend(format!("postgres: {detail}"))
}

/// Runs `attempt` until it succeeds, fails otherwise than a deadlock or serialization failure, or
/// [`ATTEMPTS`] have failed so ([`CallError::contended`]).
pub(crate) async fn retrying<T, E, F, Fut>(mut attempt: F) -> Result<T, E>
where
    E: CallError,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Fail<E>>>,
{
    let mut last = None;
    for _ in 0..ATTEMPTS {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(f) if f.retryable() => last = Some(f),
            Err(f) => return Err(f.into_error()),
        }
    }
    Err(E::contended(ATTEMPTS, last.map(Fail::into_error)))
}

/// A transaction on a pooled connection, its statements prepared once per connection. Dropped without
/// [`Tx::commit`], it rolls back.
pub(crate) struct Tx<'a, E> {
    tx: tokio_postgres::Transaction<'a>,
    statements: &'a mut Statements,
    error: PhantomData<fn() -> E>,
}

impl<'a, E> Tx<'a, E> {
    /// Begins a read-write transaction on `conn`.
    pub(crate) async fn begin(conn: &'a mut Pooled<'_>) -> Result<Tx<'a, E>, Fail<E>> {
        let (client, statements) = conn.split();
        let tx = client.transaction().await?;
        Ok(Tx { tx, statements, error: PhantomData })
    }

    /// Begins a read-only transaction on `conn` whose statements all read one snapshot.
    pub(crate) async fn snapshot(conn: &'a mut Pooled<'_>) -> Result<Tx<'a, E>, Fail<E>> {
        let (client, statements) = conn.split();
        let tx =
            client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
        Ok(Tx { tx, statements, error: PhantomData })
    }

    /// The statement `sql`, prepared on this connection the first time.
    pub(crate) async fn prepared(&mut self, sql: &str) -> Result<Statement, Fail<E>> {
        Ok(self.statements.get(&self.tx, sql).await?)
    }

    /// Runs `sql` and returns its rows.
    pub(crate) async fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Fail<E>> {
        let st = self.prepared(sql).await?;
        Ok(self.tx.query(&st, params).await?)
    }

    /// Runs `sql` and returns how many rows it changed.
    pub(crate) async fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Fail<E>> {
        let st = self.prepared(sql).await?;
        Ok(self.tx.execute(&st, params).await?)
    }

    /// Runs `sql`, planned for these parameters (an unnamed statement, not kept), and returns how many rows
    /// it changed.
    pub(crate) async fn execute_typed(
        &mut self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), tokio_postgres::types::Type)],
    ) -> Result<u64, Fail<E>> {
        Ok(self.tx.execute_typed(sql, params).await?)
    }

    /// Starts `COPY ... FROM STDIN` statement `sql`: the sink its rows are written to.
    pub(crate) async fn copy_in(&mut self, sql: &str) -> Result<tokio_postgres::CopyInSink<bytes::Bytes>, Fail<E>> {
        let st = self.prepared(sql).await?;
        Ok(self.tx.copy_in(&st).await?)
    }

    /// Commits.
    pub(crate) async fn commit(self) -> Result<(), Fail<E>> {
        Ok(self.tx.commit().await?)
    }
}
