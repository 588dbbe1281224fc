//! Claims: the first candidates of each query in the query's order, locked with `FOR UPDATE SKIP LOCKED`
//! (so concurrent claims, on any server, take different records), the first the scope sees edited with
//! `apply_claim` and committed as any write.

use cairn_store::{CollectionError, Query, Stored};
use serde_json::{Map, Value};

use super::query::{self, refs, stored, Order};
use super::write::{self, Fail, ATTEMPTS};
use super::{Inner, CLAIM_CANDIDATES};
use crate::backend::{apply_claim, Scope};
use crate::problem::ApiError;

impl Inner {
    pub(crate) async fn claim(
        &self,
        scope: &Scope,
        collection: &str,
        queries: &[Query],
        set: &Map<String, Value>,
    ) -> Result<Option<Stored<Value>>, ApiError> {
        let spec = self.spec(collection).await?;
        let orders = queries.iter().map(|q| Order::of(&self.names, &spec, q)).collect::<Result<Vec<_>, _>>()?;
        for _ in 0..ATTEMPTS {
            match self.claim_once(scope, collection, queries, &orders, set).await {
                Ok(claimed) => return Ok(claimed),
                Err(Fail::Api(e)) => return Err(e),
                Err(Fail::Retry) => continue,
            }
        }
        Err(ApiError::from(CollectionError::Contended { collection: collection.to_owned() }))
    }

    pub(crate) async fn claim_once(
        &self,
        scope: &Scope,
        collection: &str,
        queries: &[Query],
        orders: &[Order],
        set: &Map<String, Value>,
    ) -> Result<Option<Stored<Value>>, Fail> {
        let mut pooled = self.pool.get().await?;
        let (client, statements) = pooled.split();
        let tx = client.transaction().await?;
        let mut refused = None;
        for (q, order) in queries.iter().zip(orders) {
            let (sql, params) = query::select(&self.names, collection, q, order, None, CLAIM_CANDIDATES, true);
            let st = statements.get(&tx, &sql).await?;
            let rows = tx.query(&st, &refs(&params)).await?;
            for row in &rows {
                let current = stored(row)?;
                if !q.matches(&current.doc) {
                    continue;
                }
                let mut doc = current.doc.clone();
                match apply_claim(scope, &mut doc, set) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        refused = Some(e);
                        continue;
                    }
                }
                let at_ms = write::now_ms();
                let staged = write::Staged::update(collection, &current.id, Some(current.clone()), Some(doc.clone()));
                let seq = write::stamp(&tx, statements, &self.names, &[staged], at_ms).await?;
                tx.commit().await?;
                self.note_sequence(seq);
                return Ok(Some(Stored {
                    id: current.id,
                    version: current.version + 1,
                    seq,
                    created_at_ms: current.created_at_ms,
                    updated_at_ms: at_ms,
                    doc,
                }));
            }
        }
        match refused {
            Some(e) => Err(Fail::Api(e)),
            None => Ok(None),
        }
    }
}
