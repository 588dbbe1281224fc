//! PostgreSQL: one table per collection, bulk loads through binary `COPY`, incremental upserts from the
//! change feed, the resume cursor kept in PostgreSQL, and import back into collections; metrics in a table
//! of points, brought up to date series by series.

mod connect;
mod export;
mod import;
mod metrics;
mod schema;
mod stage;

pub use export::{export_postgres, PgExportOptions, PgExportReport};
pub use import::{import_postgres, import_postgres_table, PgImportReport, TableMapping};

pub(crate) use connect::connect;
pub(crate) use metrics::remote_digests;
pub(crate) use schema::{table_ref, COLLECTIONS_TABLE};
