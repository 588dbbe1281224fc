//! [`ObjectUri`]: how a record names an object of the artifact store, `s3://bucket/key`, the form S3 tools
//! print and take. A run, job or model version keeps the URIs of its artifacts (checkpoints, logs,
//! datasets); the URI is checked when parsed (bucket name and key as the artifact store accepts them).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::names::{check_bucket, check_key};
use super::ArtifactError;

/// The scheme of an object URI.
const SCHEME: &str = "s3://";

/// An object of the artifact store named as `s3://bucket/key` (the key may hold `/`). Serialized as that
/// string; parsing refuses a malformed URI, a bucket name S3 would refuse and an invalid key with
/// [`ArtifactError::Invalid`], [`ArtifactError::InvalidBucketName`] or [`ArtifactError::InvalidKey`].
///
/// ```
/// use cairn_store::artifacts::ObjectUri;
///
/// let uri: ObjectUri = "s3://checkpoints/run-7/epoch-3.pt".parse().unwrap();
/// assert_eq!((uri.bucket(), uri.key()), ("checkpoints", "run-7/epoch-3.pt"));
/// assert_eq!(uri.to_string(), "s3://checkpoints/run-7/epoch-3.pt");
/// assert!("s3://checkpoints/".parse::<ObjectUri>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectUri {
    bucket: String,
    key: String,
}

impl ObjectUri {
    /// The URI of `key` in `bucket`, both checked.
    pub fn new(bucket: &str, key: &str) -> Result<Self, ArtifactError> {
        check_bucket(bucket)?;
        check_key(key)?;
        Ok(Self { bucket: bucket.to_owned(), key: key.to_owned() })
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The object's key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl FromStr for ObjectUri {
    type Err = ArtifactError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| ArtifactError::Invalid(format!("{s:?} is not an object URI (s3://bucket/key)")))?;
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| ArtifactError::Invalid(format!("{s:?} names no key (s3://bucket/key)")))?;
        Self::new(bucket, key)
    }
}

impl fmt::Display for ObjectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.bucket, self.key)
    }
}

impl Serialize for ObjectUri {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ObjectUri {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_print_and_refuse_what_the_store_would() {
        let uri: ObjectUri = "s3://datasets/imagenet/train/shard-00001.tar".parse().unwrap();
        assert_eq!((uri.bucket(), uri.key()), ("datasets", "imagenet/train/shard-00001.tar"));
        assert_eq!(uri.to_string(), "s3://datasets/imagenet/train/shard-00001.tar");
        assert_eq!(serde_json::to_value(&uri).unwrap(), "s3://datasets/imagenet/train/shard-00001.tar");
        let back: ObjectUri = serde_json::from_str("\"s3://datasets/imagenet/train/shard-00001.tar\"").unwrap();
        assert_eq!(back, uri);
        for bad in
            ["datasets/x", "https://datasets/x", "s3://datasets", "s3://datasets/", "s3://Bad_Bucket/x", "s3:///x"]
        {
            assert!(bad.parse::<ObjectUri>().is_err(), "{bad}");
        }
        let err = serde_json::from_str::<ObjectUri>("\"s3://datasets\"").unwrap_err();
        assert!(err.to_string().contains("names no key"), "{err}");
        assert!(ObjectUri::new("ckpt", &"k".repeat(super::super::MAX_KEY_LEN + 1)).is_err());
    }
}
