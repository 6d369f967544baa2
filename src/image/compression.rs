//! Compressed image archives: `docker save IMG | gzip > img.tar.gz` and the other three formats
//! `docker load` takes (gzip, bzip2, xz, zstd), recognised by their magic bytes, never by the
//! file name.
//!
//! A compressed stream has no random access, so the [`Archive`](super::Archive) of one is read
//! in passes over the decompressed stream instead of by offset: one pass indexes the members and
//! keeps the small ones (manifests, configs) in memory, and each layer is then streamed by a
//! pass of its own that decompresses up to the layer and through it. Nothing is decompressed to
//! disk. The multi-stream forms are read whole (`pigz`/`cat a.gz b.gz`, several zstd frames,
//! `xz` blocks, `pbzip2`).

use std::io::{self, Read};

/// How the outer archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveCompression {
    None,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

impl ArchiveCompression {
    /// From the first bytes of the file (at least 10 for bzip2): gzip 1f 8b (RFC 1952), zstd
    /// 28 b5 2f fd (RFC 8878), xz fd '7zXZ' 00 (xz file format 2.2.1), bzip2 'BZh', a block size
    /// '1'..'9' and a block or end-of-stream magic.
    pub fn detect(head: &[u8]) -> ArchiveCompression {
        match head {
            [0x1f, 0x8b, ..] => ArchiveCompression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => ArchiveCompression::Zstd,
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => ArchiveCompression::Xz,
            // 'BZh', the block size, then a block's magic (pi) or the end of stream (sqrt pi).
            [b'B', b'Z', b'h', b'1'..=b'9', 0x31, 0x41, 0x59, 0x26, 0x53, 0x59, ..]
            | [b'B', b'Z', b'h', b'1'..=b'9', 0x17, 0x72, 0x45, 0x38, 0x50, 0x90, ..] => {
                ArchiveCompression::Bzip2
            }
            _ => ArchiveCompression::None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ArchiveCompression::None => "uncompressed",
            ArchiveCompression::Gzip => "gzip",
            ArchiveCompression::Zstd => "zstd",
            ArchiveCompression::Xz => "xz",
            ArchiveCompression::Bzip2 => "bzip2",
        }
    }

    /// The decompressed stream of `raw` (which starts at the file's first byte).
    pub fn decoder<'a, R: Read + Send + 'a>(self, raw: R) -> io::Result<Box<dyn Read + Send + 'a>> {
        let buffered = io::BufReader::with_capacity(256 << 10, raw);
        Ok(match self {
            ArchiveCompression::None => Box::new(buffered),
            ArchiveCompression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
            // zstd's reader continues across concatenated frames by itself.
            ArchiveCompression::Zstd => {
                Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?)
            }
            ArchiveCompression::Xz => {
                Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(buffered))
            }
            ArchiveCompression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(buffered)),
        })
    }
}

/// Reads and discards `n` bytes of `r`: how a pass reaches a member of a compressed archive.
pub fn skip(r: &mut dyn Read, n: u64) -> io::Result<()> {
    let skipped = io::copy(&mut r.take(n), &mut io::sink())?;
    if skipped < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the decompressed archive ended {} bytes before the member",
                n - skipped
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn compress(kind: ArchiveCompression, data: &[u8]) -> Vec<u8> {
        match kind {
            ArchiveCompression::None => data.to_vec(),
            ArchiveCompression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            ArchiveCompression::Zstd => zstd::encode_all(data, 3).unwrap(),
            ArchiveCompression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            ArchiveCompression::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
        }
    }

    const ALL: [ArchiveCompression; 5] = [
        ArchiveCompression::None,
        ArchiveCompression::Gzip,
        ArchiveCompression::Zstd,
        ArchiveCompression::Xz,
        ArchiveCompression::Bzip2,
    ];

    #[test]
    fn detected_by_magic_and_decoded_across_concatenated_streams() {
        let part = b"ustar? no, just bytes of a tar-like stream\n".repeat(100);
        for kind in ALL {
            // Two streams back to back, as pigz or `cat a.gz b.gz` make them.
            let mut file = compress(kind, &part);
            if kind != ArchiveCompression::None {
                file.extend(compress(kind, &part));
            }
            assert_eq!(ArchiveCompression::detect(&file), kind, "{}", kind.name());
            let mut out = Vec::new();
            kind.decoder(&file[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            let want = if kind == ArchiveCompression::None {
                part.clone()
            } else {
                [part.clone(), part.clone()].concat()
            };
            assert_eq!(out, want, "{}", kind.name());
        }
    }

    #[test]
    fn a_plain_tar_is_not_mistaken_for_compressed() {
        // A tar starts with a member name; "BZh" alone is not bzip2 without its block size.
        for head in [
            &b"manifest.json\0"[..],
            b"BZhx",
            b"BZh9-layer.tar\0",
            b"\x1f",
            b"",
        ] {
            assert_eq!(ArchiveCompression::detect(head), ArchiveCompression::None);
        }
    }

    #[test]
    fn skip_past_the_end_is_an_error() {
        let mut r: &[u8] = b"12345";
        assert!(skip(&mut r, 3).is_ok());
        assert!(skip(&mut r, 3).is_err());
    }
}
