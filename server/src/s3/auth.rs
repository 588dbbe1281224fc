//! Access keys: each configured bearer token is an S3 key pair. The access key id is the token's `name`;
//! the secret access key is the token's SHA-256 in lowercase hex (what the configuration's `sha256` holds,
//! and what `cairn hash-token` prints). s3s checks the SigV4 signature with that secret ([`KeyTable`], through
//! [`Secrets`], as its [`S3Auth`]); then [`Grants`] (its [`S3Access`]) lets a `read` token do only reads (`Get*`, `Head*`,
//! `List*` operations) and hands the request's [`Grant`] to the operation, which holds project-scoped
//! tokens to their project's buckets.
//!
//! Without tokens (open mode) no key is checked: see [`super::S3Server`].

use std::collections::HashMap;
use std::sync::Arc;

use cairn_store::artifacts::BucketInfo;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Result};

use crate::{Role, TokenConfig};

/// What a request may do: the token's name, role and project scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The access key id (the token's name), `local` in open mode.
    pub name: String,
    /// The token's role.
    pub role: Role,
    /// The project the token is limited to.
    pub project: Option<String>,
}

impl Grant {
    /// Everything allowed: no tokens are configured.
    pub fn local() -> Self {
        Self { name: "local".into(), role: Role::Admin, project: None }
    }

    /// Whether this grant sees `bucket`: an unscoped token sees every bucket, a scoped one only its
    /// project's.
    pub fn sees(&self, bucket: &BucketInfo) -> bool {
        self.project.is_none() || self.project == bucket.project
    }

    /// `AccessDenied` unless this grant sees `bucket`.
    pub fn check(&self, bucket: &BucketInfo) -> Result<(), S3Error> {
        if self.sees(bucket) {
            return Ok(());
        }
        Err(S3Error::with_message(
            S3ErrorCode::AccessDenied,
            format!(
                "access key {} is limited to project {:?}; bucket {} is not that project's",
                self.name,
                self.project.as_deref().unwrap_or_default(),
                bucket.name
            ),
        ))
    }

    /// The grant of a request: the one [`Grants`] attached, or [`Grant::local`] in open mode.
    pub fn of<T>(req: &S3Request<T>, open: bool) -> S3Result<Grant> {
        match req.extensions.get::<Grant>() {
            Some(g) => Ok(g.clone()),
            None if open => Ok(Grant::local()),
            None => Err(s3_error!(AccessDenied, "a signed request is needed")),
        }
    }
}

/// The key pairs of the configured tokens, by access key id.
#[derive(Debug, Default)]
pub struct KeyTable {
    keys: HashMap<String, (SecretKey, Grant)>,
}

impl KeyTable {
    /// The key pairs of `tokens`. A token whose name cannot be an access key id (empty, or with
    /// whitespace, `/`, `,` or `=`, which SigV4's `Credential` cannot carry) or whose name another token
    /// has too gets no S3 access; each such token is logged.
    pub fn new(tokens: &[TokenConfig]) -> Self {
        let mut keys = HashMap::new();
        let mut taken = std::collections::HashSet::new();
        for t in tokens {
            let usable =
                !t.name.is_empty() && t.name.chars().all(|c| c.is_ascii_graphic() && !matches!(c, '/' | ',' | '='));
            if !usable {
                tracing::warn!(token = %t.name, "this token's name cannot be an S3 access key id: it has no S3 access");
                continue;
            }
            if !taken.insert(t.name.clone()) {
                keys.remove(&t.name);
                tracing::warn!(token = %t.name, "several tokens have this name: none of them has S3 access");
                continue;
            }
            let grant = Grant { name: t.name.clone(), role: t.role, project: t.project.clone() };
            keys.insert(t.name.clone(), (SecretKey::from(t.sha256.to_ascii_lowercase()), grant));
        }
        Self { keys }
    }

    /// The grant of an access key id.
    pub fn grant(&self, access_key: &str) -> Option<&Grant> {
        self.keys.get(access_key).map(|(_, g)| g)
    }
}

/// The secrets of the key table, for s3s's signature checks.
#[derive(Debug)]
pub struct Secrets(pub Arc<KeyTable>);

#[async_trait::async_trait]
impl S3Auth for Secrets {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.keys.get(access_key) {
            Some((secret, _)) => Ok(secret.clone()),
            None => Err(s3_error!(InvalidAccessKeyId, "no token is named {access_key:?}")),
        }
    }
}

/// The role an S3 operation needs: `read` for `Get*`, `Head*` and `List*`, `write` for the rest.
pub fn needed_role(operation: &str) -> Role {
    if ["Get", "Head", "List"].iter().any(|p| operation.starts_with(p)) {
        Role::Read
    } else {
        Role::Write
    }
}

/// The role check of every signed request, and its [`Grant`] for the operation.
#[derive(Debug)]
pub struct Grants(pub Arc<KeyTable>);

#[async_trait::async_trait]
impl S3Access for Grants {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(credentials) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "a signed request is needed: tokens are configured"));
        };
        let Some(grant) = self.0.grant(&credentials.access_key).cloned() else {
            return Err(s3_error!(InvalidAccessKeyId));
        };
        let op = cx.s3_op().name();
        let needed = needed_role(op);
        if grant.role < needed {
            return Err(S3Error::with_message(
                S3ErrorCode::AccessDenied,
                format!("access key {} has role {:?}; {op} needs {needed:?}", grant.name, grant.role),
            ));
        }
        cx.extensions_mut().insert(grant);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, role: Role, project: Option<&str>) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            sha256: crate::hash_token(name).to_uppercase(),
            role,
            project: project.map(Into::into),
        }
    }

    #[tokio::test]
    async fn keys_are_token_names_and_secrets_their_hashes() {
        let table = Secrets(Arc::new(KeyTable::new(&[
            token("ci", Role::Write, None),
            token("vision", Role::Read, Some("vision")),
            token("has space", Role::Admin, None),
            token("twice", Role::Admin, None),
            token("twice", Role::Read, None),
        ])));
        let secret = table.get_secret_key("ci").await.unwrap();
        assert_eq!(secret.expose(), crate::hash_token("ci"));
        assert_eq!(table.0.grant("vision").unwrap().project.as_deref(), Some("vision"));
        for absent in ["has space", "twice", "nobody"] {
            assert!(table.get_secret_key(absent).await.is_err(), "{absent}");
        }
        assert_eq!(needed_role("GetObject"), Role::Read);
        assert_eq!(needed_role("ListObjectsV2"), Role::Read);
        assert_eq!(needed_role("HeadBucket"), Role::Read);
        assert_eq!(needed_role("PutObject"), Role::Write);
        assert_eq!(needed_role("DeleteObjects"), Role::Write);
        assert_eq!(needed_role("CreateBucket"), Role::Write);
    }

    #[test]
    fn a_scoped_grant_sees_only_its_project() {
        let bucket = |project: Option<&str>| BucketInfo {
            name: "b".into(),
            project: project.map(Into::into),
            created_ms: 0,
            retention_days: None,
            stats: cairn_store::artifacts::BucketStats::default(),
        };
        let scoped = Grant { name: "v".into(), role: Role::Write, project: Some("vision".into()) };
        assert!(scoped.check(&bucket(Some("vision"))).is_ok());
        assert_eq!(scoped.check(&bucket(Some("nlp"))).unwrap_err().code(), &S3ErrorCode::AccessDenied);
        assert!(!scoped.sees(&bucket(None)));
        assert!(Grant::local().sees(&bucket(Some("nlp"))));
    }
}
