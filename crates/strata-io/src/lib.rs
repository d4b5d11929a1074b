//! Small helpers every strata stage needs when it writes files or reports, kept in one
//! place so each behaves the same everywhere:
//!
//! - [`atomic`]: write a file through a temporary file in the same folder and a rename, so
//!   a crash or a full disk never leaves a half-written file under the final name.
//! - [`hash`]: the 64-bit FNV-1a hash used for fingerprints and seed mixing. Its values are
//!   stored in manifests and provenance, so it must never change.
//! - [`base64`]: standard base64 (RFC 4648, padded) for images embedded in HTML reports.
//! - [`html`]: escaping text for HTML element content and attribute values.
//! - [`lock`]: one writer per output folder (an advisory lock released when the process ends).
//!
//! No stage-specific types live here; errors are plain [`std::io::Error`]s that each
//! crate wraps in its own error with the path and what it was doing.

pub mod atomic;
pub mod hash;
pub mod html;
pub mod lock;

/// Standard base64 (RFC 4648 alphabet, with padding).
pub mod base64 {
    use base64::Engine as _;

    /// Encodes `bytes` as standard padded base64.
    pub fn encode(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn rfc4648_vectors() {
            // RFC 4648 §10.
            for (i, o) in [
                ("", ""),
                ("f", "Zg=="),
                ("fo", "Zm8="),
                ("foo", "Zm9v"),
                ("foob", "Zm9vYg=="),
                ("fooba", "Zm9vYmE="),
                ("foobar", "Zm9vYmFy"),
            ] {
                assert_eq!(super::encode(i.as_bytes()), o);
            }
        }
    }
}
