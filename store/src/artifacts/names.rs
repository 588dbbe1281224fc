//! Bucket names, object keys, and the record ids the artifact store files them under.

use super::ArtifactError;

/// The collection of buckets (id: the bucket's name).
pub const BUCKETS: &str = "_artifact_buckets";
/// The collection of objects (id: the bucket's name, `/`, the key).
pub const OBJECTS: &str = "_artifact_objects";
/// The collection of multipart uploads in progress (id: the upload id).
pub const UPLOADS: &str = "_artifact_uploads";
/// The collection of uploaded parts (id: the upload id, `/`, the part number in 5 digits).
pub const PARTS: &str = "_artifact_parts";

/// Whether `collection` is one of the artifact store's own, whose records only the artifact store writes
/// (a record written there by other means could point an object at another's bytes).
pub fn is_artifact_collection(collection: &str) -> bool {
    [BUCKETS, OBJECTS, UPLOADS, PARTS].contains(&collection)
}

/// Longest object key: a record id holds the bucket name, a `/` and the key in at most 512 bytes.
pub const MAX_KEY_LEN: usize = 512 - 64;

/// Checks a bucket name against S3's rules: [`ArtifactError::InvalidBucketName`] otherwise.
pub fn check_bucket(name: &str) -> Result<(), ArtifactError> {
    let b = name.as_bytes();
    let ok = (3..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(ArtifactError::InvalidBucketName(name.to_owned()))
    }
}

/// Checks an object key: 1 to [`MAX_KEY_LEN`] bytes of UTF-8 without control characters
/// ([`ArtifactError::InvalidKey`] otherwise).
pub fn check_key(key: &str) -> Result<(), ArtifactError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ArtifactError::InvalidKey(format!("a key has 1 to {MAX_KEY_LEN} bytes, not {}", key.len())));
    }
    if key.chars().any(char::is_control) {
        return Err(ArtifactError::InvalidKey(format!("{key:?} holds a control character")));
    }
    Ok(())
}

/// The id of an object's record: bucket names hold no `/`, so ids sort by bucket, then by key.
pub(crate) fn object_id(bucket: &str, key: &str) -> String {
    format!("{bucket}/{key}")
}

/// The id of a part's record: the upload's id, then the part number, zero-padded to sort by number.
pub(crate) fn part_id(upload_id: &str, part_number: u32) -> String {
    format!("{upload_id}/{part_number:05}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3() {
        for ok in ["abc", "my-bucket.2", "a".repeat(63).as_str()] {
            assert!(check_bucket(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", "Abc", "-abc", "abc-", "a..b", "a_b", "a/b", &"a".repeat(64)] {
            assert!(matches!(check_bucket(bad), Err(ArtifactError::InvalidBucketName(_))), "{bad}");
        }
    }

    #[test]
    fn keys_are_bounded_and_printable() {
        assert!(check_key("a/b/c.txt").is_ok());
        assert!(check_key(&"k".repeat(MAX_KEY_LEN)).is_ok());
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
        assert!(check_key("a\nb").is_err());
    }
}
