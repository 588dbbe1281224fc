//! What every HTTP test checks of an answer's body, in-process (`inproc`) or over a socket (`common`): an
//! error is a problem document (`application/problem+json` with `type`, `title`, `status` and `detail`),
//! and a body is JSON or empty.

use serde_json::Value;

/// The body of an answer of `status` with content type `ctype`: its JSON (`Value::Null` when empty),
/// after checking that an error is a problem document.
pub fn checked_body(status: u16, ctype: Option<&str>, bytes: &[u8]) -> Value {
    if status >= 400 {
        assert_eq!(ctype, Some("application/problem+json"), "error {status} without a problem document");
    }
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
    };
    if status >= 400 {
        assert_eq!(body["status"], status, "{body}");
        assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(), "{body}");
    }
    body
}
