//! What names, ids and declarations the store accepts.

use crate::error::Invalid;
use crate::keys;
use crate::record::CollectionSpec;

/// Collection, index and consumer names: ASCII letters, digits, `_` and `-`, 1 to 64 bytes.
pub(crate) fn validate_name(what: &str, name: &str) -> Result<(), Invalid> {
    let ok =
        (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!("{what} name {name:?} must be 1-64 ASCII letters, digits, '_' or '-'")))
    }
}

/// Ids: 1 to 512 bytes of UTF-8 without control characters.
pub(crate) fn validate_id(id: &str) -> Result<(), Invalid> {
    if id.is_empty() || id.len() > 512 || id.chars().any(char::is_control) {
        return Err(Invalid(format!("id {id:?} must be 1-512 bytes without control characters")));
    }
    Ok(())
}

/// Checks a declaration's names and index fields.
pub(crate) fn validate_spec(spec: &CollectionSpec) -> Result<(), Invalid> {
    validate_name("collection", &spec.name)?;
    for (i, index) in spec.indexes.iter().enumerate() {
        validate_name("index", &index.name)?;
        if index.fields.is_empty() || index.fields.iter().any(|f| keys::index_field(f).0.is_empty()) {
            return Err(Invalid(format!("index {} needs at least one non-empty field path", index.name)));
        }
        if spec.indexes.iter().skip(i + 1).any(|o| o.name == index.name) {
            return Err(Invalid(format!("index {} declared twice", index.name)));
        }
    }
    Ok(())
}
