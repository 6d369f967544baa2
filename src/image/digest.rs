//! Content digests (`sha256:<64 lowercase hex>`), parsed strictly.
//!
//! Every digest read from an archive is untrusted: a value like `sha256:../../etc/passwd` must never
//! become a path (CVE-2024-3727). Parsing here is the only way to obtain a [`Digest`], so a `Digest`
//! is always safe to use as a file name.

use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Read};

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`; anything else is refused.
    pub fn parse(s: &str) -> Option<Digest> {
        let hex = s.strip_prefix("sha256:")?;
        Self::from_hex(hex)
    }

    /// Accepts a bare 64-character lowercase hex string (as used in docker-save file names).
    pub fn from_hex(hex: &str) -> Option<Digest> {
        let ok = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Digest {
            hex: hex.to_string(),
        })
    }

    pub fn of_bytes(data: &[u8]) -> Digest {
        Digest {
            hex: hex::encode(Sha256::digest(data)),
        }
    }

    pub fn from_hasher(hasher: Sha256) -> Digest {
        Digest {
            hex: hex::encode(hasher.finalize()),
        }
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, the way docker prints image ids.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(s: String) -> Result<Digest, String> {
        Digest::parse(&s).ok_or_else(|| format!("invalid digest {s:?}"))
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

/// A reader that hashes and counts everything read through it (or only counts, see
/// [`HashingReader::counting`]).
pub struct HashingReader<R> {
    inner: R,
    hasher: Option<Sha256>,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Some(Sha256::new()),
            count: 0,
        }
    }

    /// Counts without hashing: for a stream whose bytes another reader already hashes (an
    /// uncompressed layer, whose diff_id is its blob digest).
    pub fn counting(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: None,
            count: 0,
        }
    }

    /// Reads the rest of the stream (a tar reader stops at the end-of-archive blocks, but the
    /// diff_id covers every byte, trailing padding included) and returns the digest and length.
    /// The digest is `None` for a [`counting`](HashingReader::counting) reader.
    pub fn finish(mut self) -> io::Result<(Option<Digest>, u64, R)> {
        // Drain with a large buffer: fewer read calls on the rest of a big layer.
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match self.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((self.hasher.map(Digest::from_hasher), self.count, self.inner))
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_strict_sha256() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(Digest::parse(&good).is_some());
        for bad in [
            "sha256:../../etc/passwd".to_string(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha512:{}", "a".repeat(64)),
            "a".repeat(64),
            String::new(),
        ] {
            assert!(Digest::parse(&bad).is_none(), "{bad} accepted");
        }
    }

    #[test]
    fn hashing_reader_counts_trailing_bytes() {
        let data = b"hello world";
        let mut r = HashingReader::new(&data[..]);
        let mut first = [0u8; 5];
        r.read_exact(&mut first).unwrap();
        let (d, n, _) = r.finish().unwrap();
        assert_eq!(n, 11);
        assert_eq!(d, Some(Digest::of_bytes(data)));
    }

    #[test]
    fn counting_reader_only_counts() {
        let data = b"hello world";
        let (d, n, _) = HashingReader::counting(&data[..]).finish().unwrap();
        assert_eq!((d, n), (None, 11));
    }
}
