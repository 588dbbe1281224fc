//! The S3 error code of each way an artifact call can fail. Client mistakes keep their S3 code and the
//! store's message; storage failures are `InternalError` with a generic message, and are logged.

use cairn_store::artifacts::ArtifactError;
use s3s::{S3Error, S3ErrorCode};

/// The S3 error a failed artifact call answers with. `body` is the failure the request body's stream
/// reported, if any: an error s3s raised while decoding it (a chunk signature that does not match, say)
/// keeps its own code.
pub fn to_s3(err: ArtifactError, body: Option<S3Error>) -> S3Error {
    let msg = err.to_string();
    let code = match err {
        ArtifactError::NoSuchBucket(_) => S3ErrorCode::NoSuchBucket,
        ArtifactError::BucketExists(_) => S3ErrorCode::BucketAlreadyOwnedByYou,
        ArtifactError::BucketNotEmpty(_) => S3ErrorCode::BucketNotEmpty,
        ArtifactError::InvalidBucketName(_) => S3ErrorCode::InvalidBucketName,
        ArtifactError::NoSuchKey { .. } => S3ErrorCode::NoSuchKey,
        ArtifactError::InvalidKey(_) | ArtifactError::Invalid(_) => S3ErrorCode::InvalidArgument,
        ArtifactError::InvalidRange { .. } => S3ErrorCode::InvalidRange,
        ArtifactError::NoSuchUpload(_) => S3ErrorCode::NoSuchUpload,
        ArtifactError::InvalidPart(_) => S3ErrorCode::InvalidPart,
        ArtifactError::InvalidPartOrder => S3ErrorCode::InvalidPartOrder,
        ArtifactError::EntityTooSmall { .. } => S3ErrorCode::EntityTooSmall,
        ArtifactError::BadDigest(_) => S3ErrorCode::BadDigest,
        ArtifactError::Read(_) => match body {
            Some(e) => return e,
            None => S3ErrorCode::IncompleteBody,
        },
        other => {
            tracing::error!(error = %other, "artifact store failed");
            return S3Error::with_message(
                S3ErrorCode::InternalError,
                "the artifact store failed; see the server's log",
            );
        }
    };
    S3Error::with_message(code, msg)
}

/// `InternalError` for a blocking task that panicked or was cancelled.
pub fn task_failed(err: &tokio::task::JoinError) -> S3Error {
    tracing::error!(error = %err, "artifact task failed");
    S3Error::with_message(S3ErrorCode::InternalError, "the artifact task failed; see the server's log")
}

/// `InvalidArgument` with `msg`.
pub fn invalid(msg: impl Into<String>) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, msg.into())
}

/// `NotImplemented` with `msg`: a feature of S3 that Cairn does not have.
pub fn unsupported(msg: impl Into<String>) -> S3Error {
    S3Error::with_message(S3ErrorCode::NotImplemented, msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_error_keeps_its_code() {
        let cases = [
            (ArtifactError::NoSuchBucket("b".into()), S3ErrorCode::NoSuchBucket),
            (ArtifactError::BucketExists("b".into()), S3ErrorCode::BucketAlreadyOwnedByYou),
            (ArtifactError::BucketNotEmpty("b".into()), S3ErrorCode::BucketNotEmpty),
            (ArtifactError::InvalidBucketName("B".into()), S3ErrorCode::InvalidBucketName),
            (ArtifactError::NoSuchKey { bucket: "b".into(), key: "k".into() }, S3ErrorCode::NoSuchKey),
            (ArtifactError::InvalidKey("k".into()), S3ErrorCode::InvalidArgument),
            (ArtifactError::InvalidRange { size: 3 }, S3ErrorCode::InvalidRange),
            (ArtifactError::NoSuchUpload("u".into()), S3ErrorCode::NoSuchUpload),
            (ArtifactError::InvalidPart("1".into()), S3ErrorCode::InvalidPart),
            (ArtifactError::InvalidPartOrder, S3ErrorCode::InvalidPartOrder),
            (ArtifactError::EntityTooSmall { part: 1 }, S3ErrorCode::EntityTooSmall),
            (ArtifactError::BadDigest("sha256".into()), S3ErrorCode::BadDigest),
            (ArtifactError::Invalid("x".into()), S3ErrorCode::InvalidArgument),
            (ArtifactError::Read(std::io::Error::other("cut")), S3ErrorCode::IncompleteBody),
        ];
        for (err, code) in cases {
            assert_eq!(to_s3(err, None).code(), &code);
        }
        let body = S3Error::new(S3ErrorCode::SignatureDoesNotMatch);
        let err = to_s3(ArtifactError::Read(std::io::Error::other("bad chunk")), Some(body));
        assert_eq!(err.code(), &S3ErrorCode::SignatureDoesNotMatch);
    }
}
