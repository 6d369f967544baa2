//! Streaming one layer out of the archive: decompress (detected by magic bytes) and verify.
//!
//! ```text
//! member bytes ─▶ blob hash ─▶ buffer ─▶ gunzip / unzstd / plain ─▶ diff_id hash ─▶ tar reader
//! ```
//! The consumer reads the tar stream; [`LayerStream::finish`] then drains both streams to their very
//! end (a tar reader stops at the zero blocks, but the digests cover trailing bytes too) and checks
//! the blob digest and size and the diff_id.

use super::archive::{Archive, MemberReader};
use super::compression::ArchiveCompression;
use super::digest::HashingReader;
use super::{Digest, ImageError, LayerSource};
use std::io::{self, BufRead, BufReader, Read};

const BUFFER: usize = 256 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

type Compressed<'a> = BufReader<HashingReader<MemberReader<'a>>>;

enum Decoder<'a> {
    Plain(Compressed<'a>),
    Gzip(flate2::bufread::GzDecoder<Compressed<'a>>),
    Zstd(zstd::stream::read::Decoder<'static, Compressed<'a>>),
}

impl Read for Decoder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
        }
    }
}

impl<'a> Decoder<'a> {
    fn into_compressed(self) -> Compressed<'a> {
        match self {
            Decoder::Plain(r) => r,
            Decoder::Gzip(r) => r.into_inner(),
            Decoder::Zstd(r) => r.finish(),
        }
    }
}

/// What a fully read layer turned out to be.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerVerified {
    pub compression: Compression,
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    pub stored_size: u64,
}

/// The uncompressed tar stream of one layer, verified on [`finish`](LayerStream::finish).
pub struct LayerStream<'a> {
    stream: HashingReader<Decoder<'a>>,
    compression: Compression,
    source: LayerSource,
    archive: String,
    index: usize,
}

impl<'a> LayerStream<'a> {
    /// Opens layer `index` (0-based, bottom first) of an image in `archive`.
    pub fn open(
        archive: &'a Archive,
        source: &LayerSource,
        index: usize,
    ) -> Result<LayerStream<'a>, ImageError> {
        let member = archive.open_member(&source.member)?;
        let mut buffered = BufReader::with_capacity(BUFFER, HashingReader::new(member));
        let read_err = |e: io::Error| ImageError::Read {
            archive: archive.display().to_string(),
            member: source.member.clone(),
            source: e,
        };
        let head = buffered.fill_buf().map_err(read_err)?;
        // A layer is plain, gzip or zstd (the image spec's media types); anything else is read
        // as a plain tar and fails as one.
        let compression = match ArchiveCompression::detect(head) {
            ArchiveCompression::Gzip => Compression::Gzip,
            ArchiveCompression::Zstd => Compression::Zstd,
            _ => Compression::None,
        };
        let decoder = match compression {
            Compression::None => Decoder::Plain(buffered),
            Compression::Gzip => Decoder::Gzip(flate2::bufread::GzDecoder::new(buffered)),
            Compression::Zstd => {
                Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(buffered).map_err(read_err)?)
            }
        };
        // An uncompressed layer's bytes are its blob's bytes: hash them once, on the blob side.
        let stream = match compression {
            Compression::None => HashingReader::counting(decoder),
            _ => HashingReader::new(decoder),
        };
        Ok(LayerStream {
            stream,
            compression,
            source: source.clone(),
            archive: archive.display().to_string(),
            index,
        })
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Uncompressed bytes consumed so far (for progress).
    pub fn position(&self) -> u64 {
        self.stream.count()
    }

    /// Reads both streams to the end and checks every digest and size the image promised.
    pub fn finish(self) -> Result<LayerVerified, ImageError> {
        let LayerStream {
            stream,
            compression,
            source,
            archive,
            index,
        } = self;
        let read_err = |e: io::Error| ImageError::Read {
            archive: archive.clone(),
            member: source.member.clone(),
            source: e,
        };
        let mismatch =
            |what: &'static str, expected: String, actual: String| ImageError::Mismatch {
                archive: archive.clone(),
                index: index + 1,
                member: source.member.clone(),
                what,
                expected,
                actual,
            };
        let (diff_id, uncompressed_size, decoder) = stream.finish().map_err(read_err)?;
        // The compressed side may hold bytes after the end of the compressed stream; they are part
        // of the blob and of its digest.
        let (blob_digest, stored_size, _) = decoder
            .into_compressed()
            .into_inner()
            .finish()
            .map_err(read_err)?;
        let blob_digest = blob_digest.expect("the blob side always hashes");
        let diff_id = diff_id.unwrap_or_else(|| blob_digest.clone());
        if let Some((digest, size)) = &source.blob {
            if let Some(size) = size {
                if *size != stored_size {
                    return Err(mismatch(
                        "blob size",
                        size.to_string(),
                        stored_size.to_string(),
                    ));
                }
            }
            if *digest != blob_digest {
                return Err(mismatch(
                    "blob digest",
                    digest.to_string(),
                    blob_digest.to_string(),
                ));
            }
        }
        if diff_id != source.diff_id {
            return Err(mismatch(
                "diff_id",
                source.diff_id.to_string(),
                diff_id.to_string(),
            ));
        }
        Ok(LayerVerified {
            compression,
            diff_id,
            uncompressed_size,
            stored_size,
        })
    }
}

impl Read for LayerStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}
