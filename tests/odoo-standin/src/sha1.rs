//! SHA-1 as Odoo uses it to name filestore files (lower-case hex of the content's digest).

/// Lower-case hex SHA-1 of `data`.
pub fn hex_digest(data: &[u8]) -> String {
    sha1_smol::Sha1::from(data).digest().to_string()
}

/// The raw 20-byte SHA-1 of `data`.
pub fn raw_digest(data: &[u8]) -> [u8; 20] {
    sha1_smol::Sha1::from(data).digest().bytes()
}

#[cfg(test)]
mod tests {
    use super::hex_digest;

    #[test]
    fn known_vectors() {
        assert_eq!(hex_digest(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex_digest(b"abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
