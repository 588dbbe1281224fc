//! PostgreSQL: one table per collection, bulk loads through binary `COPY`, incremental upserts from the
//! change feed, the resume cursor kept in PostgreSQL, and import back into collections.

mod connect;
mod export;
mod import;
mod schema;
mod stage;

pub use export::{export_postgres, PgExportOptions, PgExportReport};
pub use import::{import_postgres, import_postgres_table, PgImportReport, TableMapping};

pub(crate) use connect::connect;
pub(crate) use schema::{table_ref, COLLECTIONS_TABLE};
