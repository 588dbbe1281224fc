//! The PostgreSQL layout: a table per collection with typed columns for the indexed fields, the state
//! table holding the export cursor, and the table of collection declarations.

use std::collections::HashSet;

use cairn_store::{CollectionSpec, StoreSnapshot};
use serde_json::Value;
use tokio_postgres::GenericClient;

use crate::error::SyncError;

/// Declarations of the exported collections: `name text primary key, spec jsonb` (a `CollectionSpec`).
pub(crate) const COLLECTIONS_TABLE: &str = "cairn_sync_collections";
/// The export's durable cursor, one row per export name.
pub(crate) const STATE_TABLE: &str = "cairn_sync_state";
/// Records sampled to choose the type of an indexed field's column.
const TYPE_SAMPLE: usize = 1000;
/// The longest identifier PostgreSQL keeps (longer ones are truncated).
const MAX_IDENT: usize = 63;
/// Columns every collection table has; an indexed field's column is never named like one of them.
const FIXED_COLUMNS: [&str; 6] = ["id", "version", "seq", "doc", "updated_at", "created_at"];

/// `"name"`, with quotes doubled.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with quotes doubled.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `"schema"."table"`.
pub(crate) fn table_ref(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// The SQL type of an indexed field's column, chosen from the values the first records hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnType {
    BigInt,
    Double,
    Boolean,
    Text,
}

impl ColumnType {
    /// Integers that fit an `i64` → bigint; other numbers → double precision; booleans → boolean; anything
    /// else, mixed types or no values at all → text.
    fn infer<'a>(values: impl Iterator<Item = Option<&'a Value>>) -> Self {
        let mut seen = None;
        for v in values.flatten() {
            let t = match v {
                Value::Null => continue,
                Value::Number(n) if n.is_i64() => ColumnType::BigInt,
                Value::Number(_) => ColumnType::Double,
                Value::Bool(_) => ColumnType::Boolean,
                _ => return ColumnType::Text,
            };
            seen = Some(match (seen, t) {
                (None, t) => t,
                (Some(a), b) if a == b => a,
                (Some(ColumnType::BigInt | ColumnType::Double), ColumnType::BigInt | ColumnType::Double) => {
                    ColumnType::Double
                }
                _ => return ColumnType::Text,
            });
        }
        seen.unwrap_or(ColumnType::Text)
    }

    /// The generated column's expression over `doc`: a value of another JSON type becomes NULL (text
    /// columns take any value, non-strings as their JSON text).
    fn expression(self, path: &str) -> String {
        let segments: Vec<String> = path.split('.').map(quote_literal).collect();
        let p = format!("ARRAY[{}]::text[]", segments.join(","));
        match self {
            ColumnType::Text => format!("(doc #>> {p})"),
            ColumnType::BigInt => format!(
                "(CASE WHEN jsonb_typeof(doc #> {p}) = 'number' AND (doc #>> {p}) ~ '^-?[0-9]{{1,18}}$' \
                 THEN (doc #>> {p})::bigint END)"
            ),
            ColumnType::Double => {
                format!("(CASE WHEN jsonb_typeof(doc #> {p}) = 'number' THEN (doc #>> {p})::double precision END)")
            }
            ColumnType::Boolean => {
                format!("(CASE WHEN jsonb_typeof(doc #> {p}) = 'boolean' THEN (doc #>> {p})::boolean END)")
            }
        }
    }

    fn sql(self) -> &'static str {
        match self {
            ColumnType::BigInt => "bigint",
            ColumnType::Double => "double precision",
            ColumnType::Boolean => "boolean",
            ColumnType::Text => "text",
        }
    }
}

/// The column of an indexed field path: dots become `_`, other characters outside `[a-z0-9_]` become `_`
/// too, upper case is folded, and a name taken by a fixed column gets an `f_` prefix.
pub(crate) fn field_column(path: &str) -> String {
    let mut name: String = path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c.to_ascii_lowercase() } else { '_' })
        .collect();
    if name.is_empty() || FIXED_COLUMNS.contains(&name.as_str()) {
        name.insert_str(0, "f_");
    }
    truncate(name)
}

fn truncate(mut name: String) -> String {
    while name.len() > MAX_IDENT {
        name.pop();
    }
    name
}

/// A field path declared in an index, without its `-` (descending) mark, and whether it is descending.
fn declared_field(declared: &str) -> (&str, bool) {
    match declared.strip_prefix('-') {
        Some(path) => (path, true),
        None => (declared, false),
    }
}

/// Creates the state and declarations tables if missing.
pub(crate) async fn ensure_meta(client: &impl GenericClient, schema: &str) -> Result<(), SyncError> {
    let sql = format!(
        "CREATE SCHEMA IF NOT EXISTS {schema_q};
         CREATE TABLE IF NOT EXISTS {state} (
             name text PRIMARY KEY,
             phase text NOT NULL,
             snapshot_seq bigint NOT NULL,
             bulk_collection text,
             bulk_last_id text,
             cursor bigint NOT NULL,
             updated_at timestamptz NOT NULL DEFAULT now()
         );
         CREATE TABLE IF NOT EXISTS {colls} (name text PRIMARY KEY, spec jsonb NOT NULL);",
        schema_q = quote_ident(schema),
        state = table_ref(schema, STATE_TABLE),
        colls = table_ref(schema, COLLECTIONS_TABLE),
    );
    client.batch_execute(&sql).await?;
    Ok(())
}

/// Creates (or completes) the table of collection `spec`: the fixed columns, a generated column per
/// indexed field (typed from a sample of `sample`'s records), an index per declared index, and its
/// declaration in `cairn_sync_collections`.
pub(crate) async fn ensure_table(
    client: &impl GenericClient,
    schema: &str,
    spec: &CollectionSpec,
    sample: &StoreSnapshot,
) -> Result<(), SyncError> {
    let table = table_ref(schema, &spec.name);
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS {table} (
             id text PRIMARY KEY,
             version bigint NOT NULL,
             seq bigint NOT NULL,
             doc jsonb NOT NULL,
             updated_at timestamptz NOT NULL
         );
         ALTER TABLE {table} ADD COLUMN IF NOT EXISTS created_at timestamptz;\n"
    );
    let records: Vec<_> = sample.records(&spec.name, None)?.take(TYPE_SAMPLE).collect::<Result<_, _>>()?;
    let mut columns = HashSet::new();
    for index in &spec.indexes {
        for declared in &index.fields {
            let (path, _) = declared_field(declared);
            let column = field_column(path);
            if !columns.insert(column.clone()) {
                continue;
            }
            let ty = ColumnType::infer(records.iter().map(|r| lookup(&r.doc, path)));
            sql.push_str(&format!(
                "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {} {} GENERATED ALWAYS AS {} STORED;\n",
                quote_ident(&column),
                ty.sql(),
                ty.expression(path)
            ));
        }
    }
    for index in &spec.indexes {
        let cols: Vec<String> = index
            .fields
            .iter()
            .map(|declared| {
                let (path, descending) = declared_field(declared);
                let dir = if descending { " DESC" } else { "" };
                format!("{}{dir}", quote_ident(&field_column(path)))
            })
            .collect();
        let name = truncate(format!("{}__{}", spec.name, index.name));
        sql.push_str(&format!("CREATE INDEX IF NOT EXISTS {} ON {table} ({});\n", quote_ident(&name), cols.join(", ")));
    }
    client.batch_execute(&sql).await?;
    let spec_json = serde_json::to_value(spec).map_err(|e| SyncError::invalid(e.to_string()))?;
    client
        .execute(
            &format!(
                "INSERT INTO {} (name, spec) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET spec = EXCLUDED.spec",
                table_ref(schema, COLLECTIONS_TABLE)
            ),
            &[&spec.name, &tokio_postgres::types::Json(&spec_json)],
        )
        .await?;
    Ok(())
}

/// `doc[a][b]…` for the dot path `a.b…`, as the collections' indexes resolve it.
fn lookup<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, seg| v.as_object()?.get(seg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn column_types_follow_the_values() {
        let infer = |vals: &[Value]| ColumnType::infer(vals.iter().map(Some));
        assert_eq!(infer(&[json!(1), json!(null), json!(-5)]), ColumnType::BigInt);
        assert_eq!(infer(&[json!(1), json!(2.5)]), ColumnType::Double);
        assert_eq!(infer(&[json!(true)]), ColumnType::Boolean);
        assert_eq!(infer(&[json!("a"), json!(1)]), ColumnType::Text);
        assert_eq!(infer(&[json!(1), json!(true)]), ColumnType::Text);
        assert_eq!(infer(&[]), ColumnType::Text);
        assert_eq!(ColumnType::infer([None, None].into_iter()), ColumnType::Text);
    }

    #[test]
    fn column_names_are_safe_and_never_fixed_names() {
        assert_eq!(field_column("resources.gpus"), "resources_gpus");
        assert_eq!(field_column("Status"), "status");
        assert_eq!(field_column("id"), "f_id");
        assert_eq!(field_column("a\"b"), "a_b");
        assert_eq!(field_column(&"x".repeat(100)).len(), MAX_IDENT);
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(ColumnType::Text.expression("a.b'c"), "(doc #>> ARRAY['a','b''c']::text[])");
    }
}
