//! Connecting: one client whose connection runs on its own task.

use tokio_postgres::{Client, NoTls};

use crate::error::SyncError;

/// Connects to `url` (a `postgres://` URL or a key=value connection string) without TLS; the connection
/// is driven by a spawned task that ends when the client is dropped.
pub(crate) async fn connect(url: &str) -> Result<Client, SyncError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}
