//! Queries and claims as SQL: the embedded store's plan decides the index, hence the order (the equality
//! fields, then the index's other fields in their declared direction, then the id, all reversed when the
//! plan scans backwards); keyset pagination with an opaque cursor holding the last row's sort keys.

use cairn_store::{CollectionSpec, Query, ReadError, Stored};
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::schema::{declared_field, fnv, Names};
use crate::problem::ApiError;

/// A statement parameter.
pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

/// The columns of a record, in the order [`stored`] reads them.
pub(crate) const RECORD_COLUMNS: &str = "id, version, seq, doc, \
     (extract(epoch FROM coalesce(created_at, updated_at)) * 1000)::int8, \
     (extract(epoch FROM updated_at) * 1000)::int8";

/// The record in the first six columns of `row` ([`RECORD_COLUMNS`]).
pub(crate) fn stored(row: &Row) -> Result<Stored<Value>, tokio_postgres::Error> {
    let version: i64 = row.try_get(1)?;
    let seq: i64 = row.try_get(2)?;
    Ok(Stored {
        id: row.try_get(0)?,
        version: version.max(0) as u64,
        seq: seq.max(0) as u64,
        doc: row.try_get(3)?,
        created_at_ms: row.try_get(4)?,
        updated_at_ms: row.try_get(5)?,
    })
}

/// The order of a query's results, as the embedded store's plan gives it.
#[derive(Debug, Clone)]
pub(crate) struct Order {
    /// Sort-key expressions after the equality fields, each with whether it ascends.
    keys: Vec<(String, bool)>,
    /// Whether the id (last) ascends.
    id_ascending: bool,
    /// Which scan a cursor belongs to: the index and the values of its equality fields.
    fingerprint: u64,
}

/// Where a page ended: the last row's sort keys and id.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Position {
    keys: Vec<Vec<u8>>,
    id: String,
}

const CURSOR_FORMAT: u8 = 1;

fn bad_cursor() -> ApiError {
    ApiError::from(ReadError::InvalidQuery("the cursor does not belong to this query".into()))
}

impl Order {
    /// The order of `query` over a collection declared as `spec`: 400 for what the embedded store refuses.
    pub(crate) fn of(names: &Names, spec: &CollectionSpec, query: &Query) -> Result<Self, ApiError> {
        let plan = query.plan(spec)?;
        let index = plan.index.as_ref().and_then(|n| spec.indexes.iter().find(|i| i.name == *n));
        let mut fp: Vec<Vec<u8>> = vec![plan.index.clone().unwrap_or_default().into_bytes()];
        for f in &plan.equality {
            let v = query.equalities().iter().find(|(e, _)| e == f).map(|e| &e.1);
            fp.push(serde_json::to_vec(&v).unwrap_or_default());
        }
        let parts: Vec<&[u8]> = fp.iter().map(Vec::as_slice).collect();
        let keys = index
            .map(|i| {
                i.fields
                    .iter()
                    .skip(plan.equality.len())
                    .map(|declared| {
                        let (path, descending) = declared_field(declared);
                        (names.key_expr(path), descending == plan.reverse_scan)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self { keys, id_ascending: !plan.reverse_scan, fingerprint: fnv(&parts) })
    }

    /// The cursor continuing after `pos`: hex of format byte, fingerprint (u64 LE), key count, each key
    /// (u32 LE length, bytes), then the id's bytes.
    pub(crate) fn cursor(&self, pos: &Position) -> String {
        let mut out = vec![CURSOR_FORMAT];
        out.extend_from_slice(&self.fingerprint.to_le_bytes());
        out.push(pos.keys.len() as u8);
        for k in &pos.keys {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
        }
        out.extend_from_slice(pos.id.as_bytes());
        hex::encode(out)
    }

    /// The position a cursor of this order names: 400 if it is malformed or another query's.
    pub(crate) fn decode(&self, cursor: &str) -> Result<Position, ApiError> {
        let bytes = hex::decode(cursor).map_err(|_| bad_cursor())?;
        let (head, mut rest) = bytes.split_at_checked(10).ok_or_else(bad_cursor)?;
        let fp = head.get(1..9).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        if head.first() != Some(&CURSOR_FORMAT)
            || fp != Some(self.fingerprint)
            || head.get(9).map(|n| usize::from(*n)) != Some(self.keys.len())
        {
            return Err(bad_cursor());
        }
        let mut keys = Vec::with_capacity(self.keys.len());
        for _ in 0..self.keys.len() {
            let (len, tail) = rest.split_at_checked(4).ok_or_else(bad_cursor)?;
            let len = u32::from_le_bytes(len.try_into().map_err(|_| bad_cursor())?) as usize;
            let (key, tail) = tail.split_at_checked(len).ok_or_else(bad_cursor)?;
            keys.push(key.to_vec());
            rest = tail;
        }
        let id = String::from_utf8(rest.to_vec()).map_err(|_| bad_cursor())?;
        if id.is_empty() {
            return Err(bad_cursor());
        }
        Ok(Position { keys, id })
    }

    /// The position of a row selected by [`select`] (its sort keys follow the record's columns).
    pub(crate) fn position(&self, row: &Row) -> Result<Position, tokio_postgres::Error> {
        let keys = (0..self.keys.len()).map(|i| row.try_get(6 + i)).collect::<Result<_, _>>()?;
        Ok(Position { keys, id: row.try_get(0)? })
    }

    /// `ORDER BY` of the order.
    fn order_by(&self) -> String {
        let dir = |asc: bool| if asc { "ASC" } else { "DESC" };
        let mut parts: Vec<String> = self.keys.iter().map(|(e, asc)| format!("{e} {}", dir(*asc))).collect();
        parts.push(format!("id COLLATE \"C\" {}", dir(self.id_ascending)));
        parts.join(", ")
    }

    /// The condition of rows after `pos` in this order, with its parameters pushed on `params`.
    fn after(&self, pos: &Position, params: &mut Vec<Param>) -> String {
        let mut cols: Vec<(String, bool)> = self.keys.clone();
        cols.push(("id COLLATE \"C\"".to_owned(), self.id_ascending));
        let mut values = Vec::with_capacity(cols.len());
        for k in &pos.keys {
            params.push(Box::new(k.clone()));
            values.push(format!("${}::bytea", params.len()));
        }
        params.push(Box::new(pos.id.clone()));
        values.push(format!("${}::text COLLATE \"C\"", params.len()));
        let cmp = |asc: bool| if asc { ">" } else { "<" };
        if cols.iter().all(|c| c.1 == self.id_ascending) {
            let left: Vec<&str> = cols.iter().map(|c| c.0.as_str()).collect();
            return format!("(({}) {} ({}))", left.join(", "), cmp(self.id_ascending), values.join(", "));
        }
        // Mixed directions: the lexicographic condition spelled out, and the first key's bound, which an
        // index scan can start from.
        let mut alternatives = Vec::with_capacity(cols.len());
        for i in 0..cols.len() {
            let mut terms: Vec<String> = (0..i).map(|j| format!("{} = {}", cols[j].0, values[j])).collect();
            terms.push(format!("{} {} {}", cols[i].0, cmp(cols[i].1), values[i]));
            alternatives.push(format!("({})", terms.join(" AND ")));
        }
        format!("({} {}= {}) AND ({})", cols[0].0, cmp(cols[0].1), values[0], alternatives.join(" OR "))
    }
}

/// `SELECT` of the records of `collection` matching `query`'s equalities, in `order`, after `after`, at
/// most `limit`; `FOR UPDATE SKIP LOCKED` when `lock`. Each row: the record's columns, then its sort keys.
/// The `WHERE` clause of `query`'s equalities (empty without any), their parameters pushed on `params`.
fn equalities(names: &Names, query: &Query, params: &mut Vec<Param>) -> Vec<String> {
    let mut conditions = Vec::new();
    for (field, value) in query.equalities() {
        params.push(Box::new(value.clone()));
        conditions.push(format!("{} = {}", names.key_expr(field), names.key_param(params.len())));
    }
    conditions
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

/// `SELECT count(*)` of the records matching `query`'s equalities.
pub(crate) fn count(names: &Names, collection: &str, query: &Query) -> (String, Vec<Param>) {
    let mut params: Vec<Param> = Vec::new();
    let wh = where_clause(&equalities(names, query, &mut params));
    (format!("SELECT count(*) FROM {}{wh}", names.table(collection)), params)
}

/// The documents of the records matching `query`'s equalities, for conditions checked on each row.
pub(crate) fn filtered_docs(names: &Names, collection: &str, query: &Query) -> (String, Vec<Param>) {
    let mut params: Vec<Param> = Vec::new();
    let wh = where_clause(&equalities(names, query, &mut params));
    (format!("SELECT doc FROM {}{wh}", names.table(collection)), params)
}

pub(crate) fn select(
    names: &Names,
    collection: &str,
    query: &Query,
    order: &Order,
    after: Option<&Position>,
    limit: usize,
    lock: bool,
) -> (String, Vec<Param>) {
    let mut params: Vec<Param> = Vec::new();
    let mut conditions = equalities(names, query, &mut params);
    if let Some(pos) = after {
        conditions.push(order.after(pos, &mut params));
    }
    let mut cols = RECORD_COLUMNS.to_owned();
    for (expr, _) in &order.keys {
        cols.push_str(", ");
        cols.push_str(expr);
    }
    let wh = where_clause(&conditions);
    params.push(Box::new(limit as i64));
    let sql = format!(
        "SELECT {cols} FROM {}{wh} ORDER BY {} LIMIT ${}{}",
        names.table(collection),
        order.order_by(),
        params.len(),
        if lock { " FOR UPDATE SKIP LOCKED" } else { "" }
    );
    (sql, params)
}

/// The parameters as the driver takes them.
pub(crate) fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_store::IndexSpec;

    #[test]
    fn cursors_round_trip_and_refuse_other_queries() {
        let names = Names::new("public");
        let spec = CollectionSpec::new("jobs", vec![IndexSpec::new("sp", &["status", "-priority"])]);
        let q = Query::new().eq("status", "PENDING").order_by("priority").descending();
        let order = Order::of(&names, &spec, &q).unwrap();
        assert_eq!(order.keys.len(), 1);
        assert!(!order.keys[0].1, "descending priorities: their sort keys in descending byte order");
        assert!(order.id_ascending, "ids ascend: the index is scanned forwards");
        let pos = Position { keys: vec![vec![0x30, 1, 2]], id: "j-1".into() };
        assert_eq!(order.decode(&order.cursor(&pos)).unwrap(), pos);
        let other = Order::of(&names, &spec, &Query::new().eq("status", "DONE").order_by("priority")).unwrap();
        assert_eq!(other.decode(&order.cursor(&pos)).unwrap_err().status.as_u16(), 400);
        for bad in ["zz", "", "01", &order.cursor(&pos)[..24]] {
            assert_eq!(order.decode(bad).unwrap_err().status.as_u16(), 400, "{bad}");
        }
        let unordered = Query::new().order_by("nothing");
        assert_eq!(Order::of(&names, &spec, &unordered).unwrap_err().status.as_u16(), 400);
        let (sql, params) = select(&names, "jobs", &q, &order, Some(&pos), 10, false);
        assert_eq!(params.len(), 4, "{sql}");
        assert!(sql.contains("ORDER BY") && sql.contains("COLLATE \"C\""), "{sql}");
    }
}
