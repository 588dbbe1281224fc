//! A fresh database in the test run's PostgreSQL cluster, for the suites of the PostgreSQL backend's
//! parts (`artifacts_postgres.rs`, `queue_postgres.rs`, `run_metrics_postgres.rs`).

/// A fresh database and its cluster (kept alive with it). Called on a multi-threaded runtime: creating the
/// database blocks.
pub fn database() -> (cairn_pgcluster::Postgres, String) {
    let pg = cairn_pgcluster::Postgres::shared();
    let url = tokio::task::block_in_place(|| pg.database());
    (pg, url)
}
