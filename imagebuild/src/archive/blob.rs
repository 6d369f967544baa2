//! Layer blobs: each layer source hashed (diff_id) and, for the OCI formats,
//! compressed (digest), streaming on-disk layers through a temp file; and the
//! blob paths of an OCI layout.

use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::{MemberBody, MT_LAYER_GZIP, MT_LAYER_TAR, MT_LAYER_ZSTD};
use crate::{sha256_digest, BuildError, Compression, LayerSource};

/// Temp file removed on drop (compressed copies of on-disk layers).
pub(super) struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn temp_path(dir: Option<&Path>) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    dir.map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!(
            "rcrun-imagebuild-{}-{}-{}.blob",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            nanos
        ))
}

/// Hashes and counts what passes through to `inner`.
struct HashWriter<W> {
    inner: W,
    h: Sha256,
    n: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.h.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Copies `r` through the compressor into `w`; returns (diff_id, raw length, w).
fn compress_stream<R: Read, W: Write>(
    mut r: R,
    w: W,
    comp: Compression,
) -> io::Result<(String, u64, W)> {
    enum Enc<W: Write> {
        Plain(W),
        Gz(flate2::write::GzEncoder<W>),
        Zs(zstd::stream::write::Encoder<'static, W>),
    }
    let mut enc = match comp {
        Compression::None => Enc::Plain(w),
        // GzEncoder writes mtime 0 in the gzip header: reproducible digests.
        Compression::Gzip => Enc::Gz(flate2::write::GzEncoder::new(
            w,
            flate2::Compression::default(),
        )),
        Compression::Zstd => Enc::Zs(zstd::stream::write::Encoder::new(w, 3)?),
    };
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
        match &mut enc {
            Enc::Plain(w) => w.write_all(&buf[..k])?,
            Enc::Gz(w) => w.write_all(&buf[..k])?,
            Enc::Zs(w) => w.write_all(&buf[..k])?,
        }
    }
    let w = match enc {
        Enc::Plain(w) => w,
        Enc::Gz(w) => w.finish()?,
        Enc::Zs(w) => w.finish()?,
    };
    Ok((format!("sha256:{}", hex::encode(h.finalize())), n, w))
}

/// A prepared layer blob.
#[derive(Debug)]
pub(super) struct Blob {
    pub(super) diff_id: String,
    pub(super) digest: String,
    pub(super) size: u64,
    pub(super) media_type: &'static str,
    pub(super) body: MemberBody,
}

fn layer_media_type(c: Compression) -> &'static str {
    match c {
        Compression::None => MT_LAYER_TAR,
        Compression::Gzip => MT_LAYER_GZIP,
        Compression::Zstd => MT_LAYER_ZSTD,
    }
}

pub(super) fn prepare_layer(
    src: &LayerSource,
    comp: Compression,
    temps: &mut Vec<TempFile>,
    tmpdir: Option<&Path>,
) -> Result<Blob, BuildError> {
    let mt = layer_media_type(comp);
    match src {
        LayerSource::Bytes(b) => {
            let diff_id = sha256_digest(b);
            if comp == Compression::None {
                return Ok(Blob {
                    digest: diff_id.clone(),
                    diff_id,
                    size: b.len() as u64,
                    media_type: mt,
                    body: MemberBody::Bytes(b.clone()),
                });
            }
            let (_, _, out) = compress_stream(&b[..], Vec::new(), comp)
                .map_err(|e| BuildError::stream("compressing layer", e))?;
            Ok(Blob {
                diff_id,
                digest: sha256_digest(&out),
                size: out.len() as u64,
                media_type: mt,
                body: MemberBody::Bytes(out),
            })
        }
        LayerSource::File(p) => {
            let f = fs::File::open(p).map_err(|e| BuildError::io("opening layer", p, e))?;
            if comp == Compression::None {
                let (diff_id, len) = crate::sha256_reader(io::BufReader::new(f))
                    .map_err(|e| BuildError::io("hashing layer", p, e))?;
                return Ok(Blob {
                    digest: diff_id.clone(),
                    diff_id,
                    size: len,
                    media_type: mt,
                    body: MemberBody::File {
                        path: p.clone(),
                        len,
                    },
                });
            }
            let tmp = temp_path(tmpdir);
            let out = fs::File::create(&tmp)
                .map_err(|e| BuildError::io("creating temp blob", &tmp, e))?;
            temps.push(TempFile(tmp.clone()));
            let hw = HashWriter {
                inner: BufWriter::new(out),
                h: Sha256::new(),
                n: 0,
            };
            let (diff_id, _, mut hw) = compress_stream(f, hw, comp)
                .map_err(|e| BuildError::io("compressing layer", p, e))?;
            hw.flush()
                .map_err(|e| BuildError::io("writing temp blob", &tmp, e))?;
            let digest = format!("sha256:{}", hex::encode(hw.h.finalize()));
            Ok(Blob {
                diff_id,
                digest,
                size: hw.n,
                media_type: mt,
                body: MemberBody::File {
                    path: tmp,
                    len: hw.n,
                },
            })
        }
    }
}

pub(super) fn hexpart(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

pub(super) fn blob_path(digest: &str) -> String {
    // Deliberately no validation: forged digests become forged paths.
    match digest.split_once(':') {
        Some((alg, h)) => format!("blobs/{alg}/{h}"),
        None => format!("blobs/sha256/{digest}"),
    }
}
