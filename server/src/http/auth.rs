//! Bearer tokens: configured as SHA-256 hashes, each with a role and optionally a project scope. The
//! middleware resolves the `Authorization` header to a [`Principal`] that handlers check.

use std::collections::HashMap;
use std::future::Future;

use axum::extract::Request;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::problem::ApiError;

/// What a token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read records, queries, collections and the change feed; without a project scope, stats and metrics.
    Read,
    /// Also write records, claim and run transactions.
    Write,
    /// Also declare collections and indexes.
    Admin,
}

/// One bearer token, as configured: never the token itself, only its SHA-256.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs.
    pub name: String,
    /// SHA-256 of the token, 64 hex digits (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
    /// What the token may do.
    pub role: Role,
    /// If set, the token sees and writes only records whose `project` field is this.
    #[serde(default)]
    pub project: Option<String>,
}

/// A configured token, checked.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    name: String,
    role: Role,
    project: Option<String>,
}

impl TokenEntry {
    /// Checks a configured token: its hash must be 64 hex digits.
    fn from_config(t: &TokenConfig) -> Result<(Self, [u8; 32]), String> {
        let hash = parse_hash(&t.sha256).ok_or("sha256 must be 64 hex digits")?;
        if t.project.as_deref().is_some_and(str::is_empty) {
            return Err("project must not be empty".into());
        }
        Ok((Self { name: t.name.clone(), role: t.role, project: t.project.clone() }, hash))
    }
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The SHA-256 of a token, as hex (what the configuration holds).
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The configured tokens, by hash.
#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], TokenEntry>,
}

impl Tokens {
    /// The table of `configs`: each must be valid, and no token configured twice.
    pub fn new(configs: &[TokenConfig]) -> Result<Self, String> {
        let mut by_hash = HashMap::new();
        for (i, t) in configs.iter().enumerate() {
            let (entry, hash) = TokenEntry::from_config(t).map_err(|e| format!("tokens[{i}] ({}): {e}", t.name))?;
            if by_hash.insert(hash, entry).is_some() {
                return Err(format!("token {} is configured twice", t.name));
            }
        }
        Ok(Self { by_hash })
    }

    /// Whether authentication is on.
    pub fn enabled(&self) -> bool {
        !self.by_hash.is_empty()
    }

    fn lookup(&self, token: &str) -> Option<&TokenEntry> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash.get(&digest)
    }
}

/// Who is asking: the role granted (none without a token) and the project scope.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's name, `anonymous` without one, `local` when authentication is off.
    pub name: String,
    role: Option<Role>,
    project: Option<String>,
}

impl Principal {
    /// Everything allowed: authentication is off.
    fn local() -> Self {
        Self { name: "local".into(), role: Some(Role::Admin), project: None }
    }

    /// A write-role principal limited to `project`, for unit tests.
    #[cfg(test)]
    pub fn for_tests(project: Option<&str>) -> Self {
        Self { name: "test".into(), role: Some(Role::Write), project: project.map(Into::into) }
    }

    /// Fails with 401 without a token, 403 if the token's role is below `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        match self.role {
            None => Err(ApiError::unauthorized("this route needs a bearer token")),
            Some(have) if have < role => {
                Err(ApiError::forbidden(format!("token {} has role {have:?}; this route needs {role:?}", self.name)))
            }
            Some(_) => Ok(()),
        }
    }

    /// As [`require`](Self::require), and also 403 for a token limited to a project: for routes that show
    /// figures of, or act on, the whole database.
    pub fn require_unscoped(&self, role: Role) -> Result<(), ApiError> {
        self.require(role)?;
        match &self.project {
            Some(p) => Err(ApiError::forbidden(format!(
                "token {} is limited to project {p:?}; this route shows the whole database",
                self.name
            ))),
            None => Ok(()),
        }
    }

    /// The project the token is limited to.
    pub fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }

    /// Whether a document is visible to this principal (its `project` field is the scope, if any).
    pub fn sees(&self, doc: &Value) -> bool {
        self.project.as_deref().is_none_or(|p| doc.get("project").and_then(Value::as_str) == Some(p))
    }

    /// What this principal may see and write, as the storage backend checks it.
    pub fn scope(&self) -> crate::backend::Scope {
        crate::backend::Scope { name: self.name.clone(), project: self.project.clone() }
    }

    /// Checks that a document to be written names this principal's project: 403 otherwise.
    pub fn may_write(&self, doc: &Value) -> Result<(), ApiError> {
        match &self.project {
            Some(p) if !self.sees(doc) => Err(ApiError::forbidden(format!(
                "token {} may only write documents with \"project\": {p:?}",
                self.name
            ))),
            _ => Ok(()),
        }
    }
}

/// Middleware: resolves the bearer token (401 for an unknown or malformed one) into a [`Principal`]
/// request extension.
/// `inner` answers the request (this is one of the middlewares the router runs as one layer).
pub async fn authenticate<F: Future<Output = Response>>(
    tokens: &Tokens,
    mut req: Request,
    inner: impl FnOnce(Request) -> F,
) -> Response {
    let principal = if !tokens.enabled() {
        Principal::local()
    } else {
        match req.headers().get(axum::http::header::AUTHORIZATION) {
            None => Principal { name: "anonymous".into(), role: None, project: None },
            Some(value) => {
                let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
                match token.and_then(|t| tokens.lookup(t)) {
                    Some(entry) => {
                        Principal { name: entry.name.clone(), role: Some(entry.role), project: entry.project.clone() }
                    }
                    None => {
                        return axum::response::IntoResponse::into_response(ApiError::unauthorized(
                            "unknown or malformed bearer token",
                        ))
                    }
                }
            }
        }
    };
    req.extensions_mut().insert(principal);
    inner(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(token: &str, role: Role, project: Option<&str>) -> TokenConfig {
        TokenConfig { name: token.into(), sha256: hash_token(token), role, project: project.map(Into::into) }
    }

    #[test]
    fn tokens_are_looked_up_by_hash_and_roles_order() {
        let tokens = Tokens::new(&[config("s3cret", Role::Write, Some("p1"))]).unwrap();
        assert!(tokens.enabled());
        let e = tokens.lookup("s3cret").unwrap();
        assert_eq!((e.role, e.project.as_deref()), (Role::Write, Some("p1")));
        assert!(tokens.lookup("s3cret ").is_none());
        assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(Tokens::new(&[config("a", Role::Read, None), config("a", Role::Admin, None)]).is_err());
        let p = Principal { name: "t".into(), role: Some(Role::Write), project: Some("p1".into()) };
        assert!(p.require(Role::Read).is_ok() && p.require(Role::Write).is_ok());
        assert_eq!(p.require(Role::Admin).unwrap_err().status.as_u16(), 403);
        assert!(p.sees(&serde_json::json!({"project": "p1"})) && !p.sees(&serde_json::json!({"project": "p2"})));
        assert!(!p.sees(&serde_json::json!({})));
        let anon = Principal { name: "anonymous".into(), role: None, project: None };
        assert_eq!(anon.require(Role::Read).unwrap_err().status.as_u16(), 401);
    }
}
