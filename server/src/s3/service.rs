//! The S3 operations over the artifact store ([`s3s::S3`]): each method maps its input to one or a few
//! blocking artifact calls run on the blocking pool, and their answer to the operation's output. Who may
//! do what is decided before (role, [`super::auth`]) and here (project scope: [`Grant::check`] on the
//! bucket). Operations not implemented here answer `NotImplemented` (s3s's default).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use cairn_store::artifacts::{ArtifactError, BucketInfo, ListPage, ListRequest, ObjectMeta, PutOptions, MAX_KEY_LEN};
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::auth::Grant;
use super::body::{object_body, BodyReader, ExtraChecksums};
use super::errors::{invalid, task_failed, to_s3, unsupported};
use crate::backend::{ArtifactApi, ArtifactStore};

/// Most keys (and common prefixes) in one listing page, and the default.
pub const MAX_KEYS: usize = 1000;

/// The region Cairn answers as.
pub const REGION: &str = "us-east-1";

/// The S3 operations of one artifact store.
#[derive(Clone)]
pub struct ArtifactS3 {
    artifacts: ArtifactStore,
    /// Places among the blocking artifact tasks (a GET's stays taken until its body is sent).
    permits: Arc<Semaphore>,
    /// No tokens: requests carry no grant and may do everything.
    open: bool,
}

impl ArtifactS3 {
    /// The operations over `artifacts`, running at most `max_tasks` blocking calls at once.
    pub fn new(artifacts: ArtifactStore, max_tasks: usize, open: bool) -> Self {
        Self { artifacts, permits: Arc::new(Semaphore::new(max_tasks)), open }
    }

    /// A place among the blocking tasks, or `SlowDown` (503) at once when all are taken.
    fn permit(&self) -> S3Result<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            S3Error::with_message(S3ErrorCode::SlowDown, "the server is running its most artifact tasks; retry shortly")
        })
    }

    /// Runs `f` on the blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn ArtifactApi) -> S3Result<T> + Send + 'static,
    ) -> S3Result<T> {
        let permit = self.permit()?;
        let artifacts = self.artifacts.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&*artifacts)
        })
        .await
        .map_err(|e| task_failed(&e))?
    }

    /// The request's grant; in open mode, `NotImplemented` for an aws-chunked body, whose framing only a
    /// signature check decodes.
    fn grant<T>(&self, req: &S3Request<T>) -> S3Result<Grant> {
        if self.open {
            let streaming = req
                .headers
                .get("x-amz-content-sha256")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("STREAMING-"));
            if streaming {
                return Err(unsupported(
                    "aws-chunked bodies (x-amz-content-sha256: STREAMING-*) need signature checks, which are off \
                     without tokens; send the body unchunked (plain HTTP does), or configure tokens",
                ));
            }
        }
        Grant::of(req, self.open)
    }
}

/// The artifact error as an S3 error.
fn e(err: ArtifactError) -> S3Error {
    to_s3(err, None)
}

/// `AccessDenied` unless `grant` sees `bucket` (`NoSuchBucket` if there is none). Unscoped grants see every
/// bucket without a look-up.
fn visible(a: &dyn ArtifactApi, grant: &Grant, bucket: &str) -> S3Result<()> {
    if grant.project.is_some() {
        grant.check(&a.bucket(bucket).map_err(e)?)?;
    }
    Ok(())
}

fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

fn etag(value: &str) -> ETag {
    ETag::Strong(value.to_owned())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[allow(clippy::big_endian_bytes, reason = "S3 sends a CRC32C as its 4 big-endian bytes")]
fn crc32c_b64(crc: u32) -> String {
    b64(&crc.to_be_bytes())
}

/// A checksum header's digest: `N` bytes in base64, `InvalidArgument` otherwise.
fn digest<const N: usize>(header: &str, value: Option<&str>) -> S3Result<Option<[u8; N]>> {
    let Some(value) = value else { return Ok(None) };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| invalid(format!("{header} is not base64")))?;
    <[u8; N]>::try_from(bytes.as_slice())
        .map(Some)
        .map_err(|_| invalid(format!("{header} must be {N} bytes in base64")))
}

/// The SHA-256 of a request's body that s3s verifies as it streams the body: the `x-amz-content-sha256` of a
/// request signed with SigV4 in its `Authorization` header, when it is a hex digest (not `UNSIGNED-PAYLOAD`
/// nor a streaming mode). s3s's body then fails instead of ending if the bytes differ, so the artifact
/// store need not hash them again ([`PutOptions::verified_sha256`]). `None` in open mode, where nothing is
/// verified, and for presigned or SigV2 requests, whose payload is not.
fn signed_payload_sha256(open: bool, headers: &hyper::HeaderMap) -> Option<[u8; 32]> {
    if open {
        return None;
    }
    let text = |name| headers.get(name).and_then(|v: &hyper::header::HeaderValue| v.to_str().ok());
    if !text(hyper::header::AUTHORIZATION.as_str()).is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 ")) {
        return None;
    }
    let hex_digest = text("x-amz-content-sha256")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut out).ok()?;
    Some(out)
}

#[allow(clippy::big_endian_bytes, reason = "S3 sends a CRC32C as its 4 big-endian bytes")]
fn crc32c(value: Option<&str>) -> S3Result<Option<u32>> {
    Ok(digest::<4>("x-amz-checksum-crc32c", value)?.map(u32::from_be_bytes))
}

fn metadata(meta: Option<Metadata>) -> BTreeMap<String, String> {
    meta.map(|m| m.into_iter().collect()).unwrap_or_default()
}

fn metadata_out(meta: &BTreeMap<String, String>) -> Option<Metadata> {
    (!meta.is_empty()).then(|| meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// What every upload sends: its media type, metadata and the checksums the artifact store verifies.
struct Upload<'a> {
    content_type: Option<ContentType>,
    metadata: Option<Metadata>,
    md5: Option<&'a str>,
    sha256: Option<&'a str>,
    crc32c: Option<&'a str>,
}

impl Upload<'_> {
    fn options(self) -> S3Result<PutOptions> {
        Ok(PutOptions {
            content_type: self.content_type,
            metadata: metadata(self.metadata),
            expected_md5: digest::<16>("Content-MD5", self.md5)?,
            expected_sha256: digest::<32>("x-amz-checksum-sha256", self.sha256)?,
            expected_crc32c: crc32c(self.crc32c)?,
            verified_sha256: None,
        })
    }
}

/// Whether `condition` (`If-Match` / `If-None-Match`) names `tag` (or is `*`).
fn names(condition: &ETagCondition, tag: &str) -> bool {
    condition.is_any() || condition.as_etag().is_some_and(|t| t.value() == tag)
}

/// The checks of `If-Match` (412 unless it names the object) and `If-None-Match` (304 if it does).
fn check_conditions(
    meta: &ObjectMeta,
    if_match: Option<&ETagCondition>,
    if_none: Option<&ETagCondition>,
) -> S3Result<()> {
    if if_match.is_some_and(|c| !names(c, &meta.etag)) {
        return Err(s3_error!(PreconditionFailed, "If-Match does not name the object's ETag"));
    }
    if if_none.is_some_and(|c| names(c, &meta.etag)) {
        return Err(S3Error::new(S3ErrorCode::NotModified));
    }
    Ok(())
}

/// The number of keys a listing asks for: `None` (1000) or 0 to 1000; more are capped at 1000.
fn max_keys(n: Option<i32>) -> S3Result<usize> {
    match n {
        None => Ok(MAX_KEYS),
        Some(n) if n < 0 => Err(invalid("max-keys must not be negative")),
        Some(n) => Ok(usize::try_from(n).unwrap_or(MAX_KEYS).min(MAX_KEYS)),
    }
}

/// A page of a listing; `max_keys` 0 answers an empty page after checking the bucket.
fn list_page(a: &dyn ArtifactApi, grant: &Grant, bucket: &str, req: ListRequest) -> S3Result<ListPage> {
    if grant.project.is_some() || req.max_keys == 0 {
        let info = a.bucket(bucket).map_err(e)?;
        grant.check(&info)?;
    }
    if req.max_keys == 0 {
        return Ok(ListPage::default());
    }
    a.list_objects(bucket, &req).map_err(e)
}

fn object_entry(m: &ObjectMeta) -> Object {
    Object {
        key: Some(m.key.clone()),
        e_tag: Some(etag(&m.etag)),
        size: Some(i64::try_from(m.size).unwrap_or(i64::MAX)),
        last_modified: Some(timestamp(m.last_modified_ms)),
        storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
        ..Object::default()
    }
}

fn common_prefixes(prefixes: Vec<String>) -> Option<CommonPrefixList> {
    Some(prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(p) }).collect())
}

/// The continuation token of a listing: the key to start after, in URL-safe base64.
fn encode_token(start_after: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(start_after)
}

fn decode_token(token: &str) -> S3Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| invalid("the continuation token provided is incorrect"))
}

/// `KeyTooLongError` for a key to be written that is longer than the artifact store keeps.
fn check_key_len(key: &str) -> S3Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(S3Error::with_message(
            S3ErrorCode::KeyTooLongError,
            format!("keys have at most {MAX_KEY_LEN} bytes; this one has {}", key.len()),
        ));
    }
    Ok(())
}

fn size(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn part_number(n: i32) -> S3Result<u32> {
    u32::try_from(n).map_err(|_| invalid("part numbers are 1 to 10000"))
}

#[async_trait::async_trait]
impl S3 for ArtifactS3 {
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let grant = self.grant(&req)?;
        let input = req.input;
        let constraint = input.create_bucket_configuration.and_then(|c| c.location_constraint);
        if let Some(c) = constraint.filter(|c| !c.as_str().is_empty() && c.as_str() != REGION) {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidLocationConstraint,
                format!("Cairn's buckets are in {REGION}, not {}", c.as_str()),
            ));
        }
        let bucket = input.bucket;
        let name = bucket.clone();
        self.run(move |a| match a.create_bucket(&name, grant.project.as_deref()) {
            Ok(_) => Ok(()),
            Err(ArtifactError::BucketExists(_)) => {
                let existing = a.bucket(&name).map_err(e)?;
                let code = if grant.sees(&existing) {
                    S3ErrorCode::BucketAlreadyOwnedByYou
                } else {
                    S3ErrorCode::BucketAlreadyExists
                };
                Err(S3Error::with_message(code, format!("bucket {name} already exists")))
            }
            Err(other) => Err(e(other)),
        })
        .await?;
        Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{bucket}")) }))
    }

    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let grant = self.grant(&req)?;
        let prefix = req.input.prefix;
        let buckets: Vec<BucketInfo> = self.run(|a| a.list_buckets().map_err(e)).await?;
        let buckets = buckets
            .into_iter()
            .filter(|b| grant.sees(b) && prefix.as_deref().is_none_or(|p| b.name.starts_with(p)))
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: Some(timestamp(b.created_ms)),
                bucket_region: Some(REGION.to_owned()),
            })
            .collect();
        let owner = Owner { display_name: Some(grant.name.clone()), id: Some(grant.name) };
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner),
            prefix,
            ..Default::default()
        }))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        let grant = self.grant(&req)?;
        let bucket = req.input.bucket;
        self.run(move |a| grant.check(&a.bucket(&bucket).map_err(e)?)).await?;
        Ok(S3Response::new(HeadBucketOutput { bucket_region: Some(REGION.to_owned()), ..Default::default() }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let grant = self.grant(&req)?;
        let bucket = req.input.bucket;
        self.run(move |a| grant.check(&a.bucket(&bucket).map_err(e)?)).await?;
        // us-east-1 is the empty constraint.
        Ok(S3Response::new(GetBucketLocationOutput { location_constraint: None }))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        let grant = self.grant(&req)?;
        let bucket = req.input.bucket;
        self.run(move |a| {
            visible(a, &grant, &bucket)?;
            a.delete_bucket(&bucket).map_err(e)
        })
        .await?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let grant = self.grant(&req)?;
        let verified_sha256 = signed_payload_sha256(self.open, &req.headers);
        let input = req.input;
        if input.if_match.is_some() || input.if_none_match.is_some() {
            return Err(unsupported("conditional writes (If-Match, If-None-Match on PUT) are not supported"));
        }
        check_key_len(&input.key)?;
        let opts = PutOptions {
            verified_sha256,
            ..Upload {
                content_type: input.content_type,
                metadata: input.metadata,
                md5: input.content_md5.as_deref(),
                sha256: input.checksum_sha256.as_deref(),
                crc32c: input.checksum_crc32c.as_deref(),
            }
            .options()?
        };
        let sums = ExtraChecksums {
            crc32: input.checksum_crc32,
            crc64nvme: input.checksum_crc64nvme,
            sha1: input.checksum_sha1,
            ..ExtraChecksums::default()
        };
        let (mut body, failure) = BodyReader::new(input.body, &sums)?;
        let (bucket, key) = (input.bucket, input.key);
        let meta = self
            .run(move |a| {
                visible(a, &grant, &bucket)?;
                a.put_object(&bucket, &key, opts, &mut body).map_err(|err| to_s3(err, failure.take()))
            })
            .await?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&meta.etag)),
            checksum_sha256: Some(b64(&meta.sha256)),
            checksum_crc32c: meta.crc32c.map(crc32c_b64),
            size: Some(size(meta.size)),
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let grant = self.grant(&req)?;
        let input = req.input;
        if input.part_number.is_some() {
            return Err(unsupported("GetObject by partNumber is not supported"));
        }
        if input.version_id.is_some() {
            return Err(unsupported("buckets are not versioned"));
        }
        let checksums = input.checksum_mode.as_ref().is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
        let (bucket, key, range) = (input.bucket, input.key, input.range);
        let (if_match, if_none) = (input.if_match, input.if_none_match);
        let permit = self.permit()?;
        let artifacts = self.artifacts.clone();
        let (meta, reader, span, permit) = tokio::task::spawn_blocking(move || {
            let a: &dyn ArtifactApi = &*artifacts;
            visible(a, &grant, &bucket)?;
            let head = a.head_object(&bucket, &key).map_err(e)?;
            check_conditions(&head, if_match.as_ref(), if_none.as_ref())?;
            let span = match range {
                None => None,
                Some(r) => Some(r.check(head.size).map_err(|_| {
                    S3Error::with_message(
                        S3ErrorCode::InvalidRange,
                        format!("range not satisfiable: the object has {} bytes", head.size),
                    )
                })?),
            };
            let (meta, reader) = a.get_object(&bucket, &key, span.clone()).map_err(e)?;
            if meta.version != head.version && span.is_some() {
                // Overwritten between the two reads: the range was resolved against the old size.
                return Err(S3Error::with_message(
                    S3ErrorCode::InternalError,
                    "the object was overwritten while it was read; retry",
                ));
            }
            Ok::<_, S3Error>((meta, reader, span, permit))
        })
        .await
        .map_err(|e| task_failed(&e))??;
        let length = reader.len();
        let body = object_body(reader, permit);
        let whole = span.is_none();
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            content_length: Some(size(length)),
            content_range: span.map(|r| format!("bytes {}-{}/{}", r.start, r.end.saturating_sub(1), meta.size)),
            accept_ranges: Some("bytes".to_owned()),
            e_tag: Some(etag(&meta.etag)),
            last_modified: Some(timestamp(meta.last_modified_ms)),
            content_type: meta.content_type.clone(),
            metadata: metadata_out(&meta.metadata),
            checksum_sha256: (checksums && whole).then(|| b64(&meta.sha256)),
            checksum_crc32c: meta.crc32c.filter(|_| checksums && whole).map(crc32c_b64),
            ..Default::default()
        }))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let grant = self.grant(&req)?;
        let input = req.input;
        if input.part_number.is_some() {
            return Err(unsupported("HeadObject by partNumber is not supported"));
        }
        if input.version_id.is_some() {
            return Err(unsupported("buckets are not versioned"));
        }
        let checksums = input.checksum_mode.as_ref().is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
        let (bucket, key) = (input.bucket, input.key);
        let (if_match, if_none) = (input.if_match, input.if_none_match);
        let meta = self
            .run(move |a| {
                visible(a, &grant, &bucket)?;
                let meta = a.head_object(&bucket, &key).map_err(e)?;
                check_conditions(&meta, if_match.as_ref(), if_none.as_ref())?;
                Ok(meta)
            })
            .await?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(size(meta.size)),
            accept_ranges: Some("bytes".to_owned()),
            e_tag: Some(etag(&meta.etag)),
            last_modified: Some(timestamp(meta.last_modified_ms)),
            content_type: meta.content_type.clone(),
            metadata: metadata_out(&meta.metadata),
            checksum_sha256: checksums.then(|| b64(&meta.sha256)),
            checksum_crc32c: meta.crc32c.filter(|_| checksums).map(crc32c_b64),
            ..Default::default()
        }))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let grant = self.grant(&req)?;
        let input = req.input;
        if input.version_id.is_some() {
            return Err(unsupported("buckets are not versioned"));
        }
        let (bucket, key) = (input.bucket, input.key);
        self.run(move |a| {
            visible(a, &grant, &bucket)?;
            a.delete_object(&bucket, &key).map_err(e)
        })
        .await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let grant = self.grant(&req)?;
        let input = req.input;
        let quiet = input.delete.quiet.unwrap_or(false);
        let objects = input.delete.objects;
        if objects.len() > MAX_KEYS {
            return Err(s3_error!(MalformedXML, "at most {MAX_KEYS} keys may be deleted at once"));
        }
        let bucket = input.bucket;
        let (deleted, errors) = self
            .run(move |a| {
                let info = a.bucket(&bucket).map_err(e)?;
                grant.check(&info)?;
                let (mut deleted, mut errors) = (Vec::new(), Vec::new());
                for o in objects {
                    if o.version_id.is_some() {
                        errors.push(Error {
                            code: Some("NotImplemented".to_owned()),
                            key: Some(o.key),
                            message: Some("buckets are not versioned".to_owned()),
                            version_id: o.version_id,
                        });
                        continue;
                    }
                    match a.delete_object(&bucket, &o.key) {
                        Ok(_) => deleted.push(DeletedObject { key: Some(o.key), ..Default::default() }),
                        Err(err) => {
                            let err = e(err);
                            errors.push(Error {
                                code: Some(err.code().as_str().to_owned()),
                                key: Some(o.key),
                                message: err.message().map(str::to_owned),
                                version_id: None,
                            });
                        }
                    }
                }
                Ok((deleted, errors))
            })
            .await?;
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: (!quiet).then_some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let grant = self.grant(&req)?;
        let input = req.input;
        let (src_bucket, src_key) = match input.copy_source {
            CopySource::Bucket { bucket, key, version_id } => {
                if version_id.is_some() {
                    return Err(unsupported("buckets are not versioned"));
                }
                (bucket.into_string(), key.into_string())
            }
            _ => return Err(unsupported("copies from access points and outposts are not supported")),
        };
        let replace = match input.metadata_directive.as_ref().map(MetadataDirective::as_str) {
            None | Some(MetadataDirective::COPY) => None,
            Some(MetadataDirective::REPLACE) => Some(PutOptions {
                content_type: input.content_type,
                metadata: metadata(input.metadata),
                ..PutOptions::default()
            }),
            Some(other) => return Err(invalid(format!("unknown x-amz-metadata-directive {other}"))),
        };
        let (dst_bucket, dst_key) = (input.bucket, input.key);
        check_key_len(&dst_key)?;
        if replace.is_none() && src_bucket == dst_bucket && src_key == dst_key {
            return Err(s3_error!(
                InvalidRequest,
                "this copy request is illegal because it is trying to copy an object to itself without changing the \
                 object's metadata"
            ));
        }
        let (if_match, if_none) = (input.copy_source_if_match, input.copy_source_if_none_match);
        let meta = self
            .run(move |a| {
                visible(a, &grant, &src_bucket)?;
                if dst_bucket != src_bucket {
                    visible(a, &grant, &dst_bucket)?;
                }
                if if_match.is_some() || if_none.is_some() {
                    let src = a.head_object(&src_bucket, &src_key).map_err(e)?;
                    if if_match.as_ref().is_some_and(|c| !names(c, &src.etag))
                        || if_none.as_ref().is_some_and(|c| names(c, &src.etag))
                    {
                        return Err(s3_error!(
                            PreconditionFailed,
                            "the copy source's ETag does not meet the conditions"
                        ));
                    }
                }
                a.copy_object(&src_bucket, &src_key, &dst_bucket, &dst_key, replace).map_err(e)
            })
            .await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&meta.etag)),
                last_modified: Some(timestamp(meta.last_modified_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let grant = self.grant(&req)?;
        let input = req.input;
        let max = max_keys(input.max_keys)?;
        let start_after = match &input.continuation_token {
            Some(token) => Some(decode_token(token)?),
            None => input.start_after.clone().filter(|s| !s.is_empty()),
        };
        let list = ListRequest {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone().filter(|d| !d.is_empty()),
            start_after,
            max_keys: max,
        };
        let bucket = input.bucket.clone();
        let page = self.run(move |a| list_page(a, &grant, &bucket, list)).await?;
        let key_count = page.objects.len() + page.common_prefixes.len();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(input.prefix.unwrap_or_default()),
            delimiter: input.delimiter,
            max_keys: Some(i32::try_from(max).unwrap_or(i32::MAX)),
            key_count: Some(i32::try_from(key_count).unwrap_or(i32::MAX)),
            continuation_token: input.continuation_token,
            start_after: input.start_after,
            is_truncated: Some(page.truncated),
            next_continuation_token: page.next_start_after.filter(|_| page.truncated).map(|s| encode_token(&s)),
            contents: Some(page.objects.iter().map(object_entry).collect()),
            common_prefixes: common_prefixes(page.common_prefixes),
            ..Default::default()
        }))
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let grant = self.grant(&req)?;
        let input = req.input;
        let max = max_keys(input.max_keys)?;
        let list = ListRequest {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone().filter(|d| !d.is_empty()),
            start_after: input.marker.clone().filter(|s| !s.is_empty()),
            max_keys: max,
        };
        let bucket = input.bucket.clone();
        let page = self.run(move |a| list_page(a, &grant, &bucket, list)).await?;
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(input.prefix.unwrap_or_default()),
            delimiter: input.delimiter,
            marker: input.marker,
            max_keys: Some(i32::try_from(max).unwrap_or(i32::MAX)),
            is_truncated: Some(page.truncated),
            next_marker: page.next_start_after.filter(|_| page.truncated),
            contents: Some(page.objects.iter().map(object_entry).collect()),
            common_prefixes: common_prefixes(page.common_prefixes),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let grant = self.grant(&req)?;
        let input = req.input;
        check_key_len(&input.key)?;
        let opts = PutOptions {
            content_type: input.content_type,
            metadata: metadata(input.metadata),
            ..PutOptions::default()
        };
        let (bucket, key) = (input.bucket, input.key);
        let (b, k) = (bucket.clone(), key.clone());
        let upload_id = self
            .run(move |a| {
                visible(a, &grant, &b)?;
                a.create_multipart(&b, &k, opts).map_err(e)
            })
            .await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(bucket),
            key: Some(key),
            upload_id: Some(upload_id),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let grant = self.grant(&req)?;
        let input = req.input;
        let number = part_number(input.part_number)?;
        if !(1..=10_000).contains(&number) {
            return Err(invalid("part numbers are 1 to 10000"));
        }
        // The artifact store takes a part's bytes unchecked: every checksum sent is verified here.
        let sums = ExtraChecksums {
            crc32: input.checksum_crc32,
            crc32c: input.checksum_crc32c,
            crc64nvme: input.checksum_crc64nvme,
            sha1: input.checksum_sha1,
            sha256: input.checksum_sha256,
            md5: input.content_md5,
        };
        let (mut body, failure) = BodyReader::new(input.body, &sums)?;
        let (bucket, key, upload_id) = (input.bucket, input.key, input.upload_id);
        let part = self
            .run(move |a| {
                visible(a, &grant, &bucket)?;
                a.upload_part(&bucket, &key, &upload_id, number, &mut body).map_err(|err| to_s3(err, failure.take()))
            })
            .await?;
        Ok(S3Response::new(UploadPartOutput { e_tag: Some(etag(&part.etag)), ..Default::default() }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let grant = self.grant(&req)?;
        let input = req.input;
        let listed = input.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        if listed.is_empty() {
            return Err(s3_error!(MalformedXML, "a completion must list at least one part"));
        }
        let mut parts = Vec::with_capacity(listed.len());
        for p in listed {
            let (Some(number), Some(tag)) = (p.part_number, p.e_tag) else {
                return Err(s3_error!(InvalidPart, "each part needs its PartNumber and ETag"));
            };
            parts.push((part_number(number)?, tag.value().to_owned()));
        }
        let (bucket, key, upload_id) = (input.bucket, input.key, input.upload_id);
        let (b, k) = (bucket.clone(), key.clone());
        let meta = self
            .run(move |a| {
                visible(a, &grant, &b)?;
                a.complete_multipart(&b, &k, &upload_id, &parts).map_err(e)
            })
            .await?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(bucket.clone()),
            key: Some(key.clone()),
            location: Some(format!("/{bucket}/{key}")),
            e_tag: Some(etag(&meta.etag)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let grant = self.grant(&req)?;
        let input = req.input;
        let (bucket, key, upload_id) = (input.bucket, input.key, input.upload_id);
        self.run(move |a| {
            visible(a, &grant, &bucket)?;
            a.abort_multipart(&bucket, &key, &upload_id).map_err(e)
        })
        .await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let grant = self.grant(&req)?;
        let input = req.input;
        let max = max_keys(input.max_parts)?;
        let marker = input.part_number_marker.map(part_number).transpose()?.unwrap_or(0);
        let (bucket, key, upload_id) = (input.bucket, input.key, input.upload_id);
        let (b, k, u) = (bucket.clone(), key.clone(), upload_id.clone());
        let all = self
            .run(move |a| {
                visible(a, &grant, &b)?;
                a.list_parts(&b, &k, &u).map_err(e)
            })
            .await?;
        let mut after: Vec<_> = all.into_iter().filter(|p| p.part_number > marker).collect();
        let truncated = after.len() > max;
        after.truncate(max);
        let next = after.last().filter(|_| truncated).map(|p| i32::try_from(p.part_number).unwrap_or(i32::MAX));
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(bucket),
            key: Some(key),
            upload_id: Some(upload_id),
            max_parts: Some(i32::try_from(max).unwrap_or(i32::MAX)),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            is_truncated: Some(truncated),
            parts: Some(
                after
                    .into_iter()
                    .map(|p| Part {
                        part_number: Some(i32::try_from(p.part_number).unwrap_or(i32::MAX)),
                        e_tag: Some(etag(&p.etag)),
                        size: Some(size(p.size)),
                        last_modified: Some(timestamp(p.last_modified_ms)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let grant = self.grant(&req)?;
        let input = req.input;
        let max = max_keys(input.max_uploads)?;
        let b = input.bucket.clone();
        let mut uploads = self
            .run(move |a| {
                visible(a, &grant, &b)?;
                a.list_uploads(&b).map_err(e)
            })
            .await?;
        uploads.sort_by(|x, y| (&x.key, &x.upload_id).cmp(&(&y.key, &y.upload_id)));
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let key_marker = input.key_marker.clone().unwrap_or_default();
        let id_marker = input.upload_id_marker.clone().unwrap_or_default();
        let mut listed = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut truncated = false;
        let mut last: Option<(String, String)> = None;
        for u in uploads {
            if !u.key.starts_with(&prefix) {
                continue;
            }
            let after_marker = u.key.as_str() > key_marker.as_str()
                || (u.key == key_marker && !id_marker.is_empty() && u.upload_id.as_str() > id_marker.as_str());
            if !key_marker.is_empty() && !after_marker {
                continue;
            }
            let rolled = delimiter
                .as_deref()
                .and_then(|d| u.key[prefix.len()..].find(d).map(|i| u.key[..prefix.len() + i + d.len()].to_owned()));
            if let Some(p) = &rolled {
                if prefixes.last() == Some(p) {
                    continue;
                }
            }
            if listed.len() + prefixes.len() == max {
                truncated = true;
                break;
            }
            last = Some((u.key.clone(), u.upload_id.clone()));
            match rolled {
                Some(p) => prefixes.push(p),
                None => listed.push(MultipartUpload {
                    key: Some(u.key),
                    upload_id: Some(u.upload_id),
                    initiated: Some(timestamp(u.initiated_ms)),
                    storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                    ..Default::default()
                }),
            }
        }
        let (next_key, next_id) = match last.filter(|_| truncated) {
            Some((k, id)) => (Some(k), Some(id)),
            None => (None, None),
        };
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            delimiter: input.delimiter,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(i32::try_from(max).unwrap_or(i32::MAX)),
            is_truncated: Some(truncated),
            next_key_marker: next_key,
            next_upload_id_marker: next_id,
            uploads: Some(listed),
            common_prefixes: common_prefixes(prefixes),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        for key in ["", "a", "photos/2024/ü.jpg", "x\u{7f}y"] {
            assert_eq!(decode_token(&encode_token(key)).unwrap(), key);
        }
        assert_eq!(decode_token("***").unwrap_err().code(), &S3ErrorCode::InvalidArgument);
        assert_eq!(max_keys(None).unwrap(), 1000);
        assert_eq!(max_keys(Some(5000)).unwrap(), 1000);
        assert_eq!(max_keys(Some(0)).unwrap(), 0);
        assert!(max_keys(Some(-1)).is_err());
    }

    #[test]
    fn only_a_sigv4_signed_payload_digest_counts_as_verified() {
        let digest = "ab".repeat(32);
        let headers = |auth: &str, sha: &str| {
            let mut h = hyper::HeaderMap::new();
            h.insert(hyper::header::AUTHORIZATION, auth.parse().unwrap());
            h.insert("x-amz-content-sha256", sha.parse().unwrap());
            h
        };
        let signed = headers("AWS4-HMAC-SHA256 Credential=k/20261205/us-east-1/s3/aws4_request", &digest);
        assert_eq!(signed_payload_sha256(false, &signed), Some([0xab; 32]));
        assert_eq!(signed_payload_sha256(true, &signed), None, "open mode checks no signature");
        let v2 = headers("AWS k:signature", &digest);
        assert_eq!(signed_payload_sha256(false, &v2), None, "SigV2 does not cover the payload");
        let unsigned = headers("AWS4-HMAC-SHA256 Credential=k", "UNSIGNED-PAYLOAD");
        assert_eq!(signed_payload_sha256(false, &unsigned), None);
        let streaming = headers("AWS4-HMAC-SHA256 Credential=k", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD");
        assert_eq!(signed_payload_sha256(false, &streaming), None);
        assert_eq!(signed_payload_sha256(false, &hyper::HeaderMap::new()), None, "presigned or anonymous");
    }

    #[test]
    fn checksum_headers_are_decoded_and_checked() {
        assert_eq!(crc32c(Some("AAAAAQ==")).unwrap(), Some(1));
        assert_eq!(crc32c_b64(1), "AAAAAQ==");
        assert!(crc32c(Some("AAAA")).is_err(), "3 bytes");
        assert!(digest::<32>("x-amz-checksum-sha256", Some("not base64!")).is_err());
        let sha = b64(&[7u8; 32]);
        assert_eq!(digest::<32>("x-amz-checksum-sha256", Some(&sha)).unwrap(), Some([7u8; 32]));
    }
}
