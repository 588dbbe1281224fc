//! Reads: one record, and one page of a query (its SQL, order and cursor in `query`).

use cairn_store::{Page, Query, Stored};
use serde_json::Value;

use super::query::{self, refs, stored, Order, RECORD_COLUMNS};
use super::{db_error, Inner};
use crate::backend::Scope;
use crate::problem::ApiError;

impl Inner {
    pub(crate) async fn get(&self, scope: &Scope, collection: &str, id: &str) -> Result<Stored<Value>, ApiError> {
        self.spec(collection).await?;
        let mut client = self.pool.get().await?;
        let sql = format!("SELECT {RECORD_COLUMNS} FROM {} WHERE id = $1", self.names.table(collection));
        let row = client.query_cached(&sql, &[&id]).await.map_err(db_error)?.into_iter().next();
        match row.map(|r| stored(&r)).transpose().map_err(db_error)? {
            Some(s) if scope.sees(&s.doc) => Ok(s),
            _ => Err(Scope::hidden(collection, id)),
        }
    }

    /// How many records match the equalities of `query` (conditions beyond equalities, which the HTTP API
    /// does not send, are checked on each row).
    pub(crate) async fn count(&self, collection: &str, query: &Query) -> Result<u64, ApiError> {
        let spec = self.spec(collection).await?;
        query.plan(&spec)?;
        let client = self.pool.get().await?;
        let (sql, params) = query::count(&self.names, collection, query);
        if !query.has_other_conditions() {
            let row = client.query_one(&sql, &refs(&params)).await.map_err(db_error)?;
            let n: i64 = row.try_get(0).map_err(db_error)?;
            return Ok(n.max(0) as u64);
        }
        let (sql, params) = query::filtered_docs(&self.names, collection, query);
        let rows = client.query(&sql, &refs(&params)).await.map_err(db_error)?;
        let mut n = 0u64;
        for row in &rows {
            let doc: Value = row.try_get(0).map_err(db_error)?;
            n += u64::from(query.matches(&doc));
        }
        Ok(n)
    }

    pub(crate) async fn query(&self, collection: &str, query: &Query) -> Result<Page<Value>, ApiError> {
        let spec = self.spec(collection).await?;
        let order = Order::of(&self.names, &spec, query)?;
        let size = query.page_size()?;
        let mut after = query.cursor().map(|c| order.decode(c)).transpose()?;
        // Conditions beyond equalities (not sent by the HTTP API) are checked on each row.
        let checked = query.has_other_conditions();
        let batch = if checked { size.saturating_mul(2).max(64) } else { size + 1 };
        let mut client = self.pool.get().await?;
        let mut records = Vec::with_capacity(size);
        let mut last = None;
        let mut more = false;
        'scan: loop {
            let (sql, params) = query::select(&self.names, collection, query, &order, after.as_ref(), batch, false);
            let rows = client.query_cached(&sql, &refs(&params)).await.map_err(db_error)?;
            for row in &rows {
                let s = stored(row).map_err(db_error)?;
                let pos = order.position(row).map_err(db_error)?;
                if checked && !query.matches(&s.doc) {
                    after = Some(pos);
                    continue;
                }
                if records.len() == size {
                    more = true;
                    break 'scan;
                }
                records.push(s);
                last = Some(pos.clone());
                after = Some(pos);
            }
            if rows.len() < batch {
                break;
            }
        }
        let next_cursor = if more { last.map(|p| order.cursor(&p)) } else { None };
        Ok(Page { records, next_cursor })
    }
}
