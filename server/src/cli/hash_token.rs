//! `cairn hash-token`: the SHA-256 of a bearer token, as the server's configuration wants it.

use std::io::BufRead;

use super::Failure;

/// Reads a token from the first line of stdin (so it stays out of shell history) and prints its hash.
pub fn run() -> Result<(), Failure> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| Failure::new("cannot read the token from stdin", e))?;
    let token = line.trim_end_matches(['\r', '\n']);
    if token.is_empty() {
        return Err(Failure::new("hash-token", "give the token on stdin"));
    }
    println!("{}", cairn_server::hash_token(token));
    Ok(())
}
