//! The compiled filter cache: one file per (profile, caps, arch, kernel, compiler) key, checked
//! against its own sha256 on load, written atomically, so a start skips the profile compile.

use super::*;

pub(super) const CACHE_MAGIC: &[u8; 8] = b"RCSECBPF";
/// 3: 32-bit arguments compared on their low word (2: every argument on 64 bits; 1: seccompiler's
/// linear chains).
pub(super) const CACHE_FORMAT: u32 = 3;

/// Cache key: sha256 over the profile bytes, the sorted cap names, the arch,
/// the kernel release (minKernel) and this crate's version (compiler logic).
pub fn cache_key(
    profile_json: &[u8],
    caps: &CapsHashSet,
    arch: TargetArch,
) -> Result<String, SecurityError> {
    let release = kernel_release()?;
    Ok(cache_key_with_release(profile_json, caps, arch, &release))
}

pub(super) fn cache_key_with_release(
    profile_json: &[u8],
    caps: &CapsHashSet,
    arch: TargetArch,
    release: &str,
) -> String {
    let mut h = Sha256::new();
    let mut field = |label: &[u8], bytes: &[u8]| {
        h.update(label);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(b"profile", profile_json);
    field(
        b"caps",
        crate::security::caps::cap_names(caps).join(",").as_bytes(),
    );
    field(b"arch", arch_name(arch).as_bytes());
    field(b"kernel", release.as_bytes());
    field(b"version", env!("CARGO_PKG_VERSION").as_bytes());
    field(b"format", &CACHE_FORMAT.to_le_bytes());
    hex::encode(h.finalize())
}

pub(super) fn cache_path(cache_dir: &Path, key: &str) -> PathBuf {
    cache_dir.join(format!("seccomp-{key}.bpf"))
}

/// Serialize: magic, format, key, rule_count, default_action, programs,
/// then sha256 of all preceding bytes (detects truncation and corruption).
pub(super) fn encode_cache(key: &str, f: &CompiledFilter) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + f.bpf_instructions * 8);
    out.extend_from_slice(CACHE_MAGIC);
    out.extend_from_slice(&CACHE_FORMAT.to_le_bytes());
    out.extend_from_slice(key.as_bytes()); // 64 hex chars
    out.extend_from_slice(&(f.rule_count as u32).to_le_bytes());
    out.extend_from_slice(&(f.default_action.len() as u32).to_le_bytes());
    out.extend_from_slice(f.default_action.as_bytes());
    out.extend_from_slice(&(f.programs.len() as u32).to_le_bytes());
    for p in &f.programs {
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        for ins in p {
            out.extend_from_slice(&ins.code.to_le_bytes());
            out.push(ins.jt);
            out.push(ins.jf);
            out.extend_from_slice(&ins.k.to_le_bytes());
        }
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// Inverse of [`encode_cache`]; `None` on any inconsistency.
pub(super) fn decode_cache(key: &str, data: &[u8]) -> Option<CompiledFilter> {
    let body_len = data.len().checked_sub(32)?;
    let (body, sum) = data.split_at(body_len);
    if Sha256::digest(body).as_slice() != sum {
        return None;
    }
    let mut r = Reader { data: body };
    if r.take(8)? != CACHE_MAGIC || r.u32()? != CACHE_FORMAT || r.take(key.len())? != key.as_bytes()
    {
        return None;
    }
    let rule_count = r.u32()? as usize;
    let n = r.u32()? as usize;
    let default_action = String::from_utf8(r.take(n)?.to_vec()).ok()?;
    let nprogs = r.u32()? as usize;
    let mut programs = Vec::with_capacity(nprogs.min(64));
    let mut bpf_instructions = 0;
    for _ in 0..nprogs {
        let len = r.u32()? as usize;
        let raw = r.take(len.checked_mul(8)?)?;
        let prog: BpfProgram = raw
            .chunks_exact(8)
            .map(|c| sock_filter {
                code: u16::from_le_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        bpf_instructions += prog.len();
        programs.push(prog);
    }
    if !r.data.is_empty() {
        return None;
    }
    Some(CompiledFilter {
        programs,
        rule_count,
        default_action,
        bpf_instructions,
    })
}

struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (a, b) = self.data.split_at(n);
        self.data = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Write `data` to `path` atomically: a mode-0600 temp file in the same
/// directory, fsync, then rename(2) over the destination.
pub(super) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), SecurityError> {
    let err = |source| SecurityError::CacheWrite {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("seccomp");
    let tmp = dir.join(format!(".{file_name}.{}.{nanos}.tmp", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Compile with a cache in `cache_dir` (created with mode 0700 if missing).
/// Returns the filter and whether it came from the cache.
///
/// A hit costs one read plus a sha256 over the file; no JSON is parsed. A
/// missing, truncated or corrupt file is recompiled and rewritten. The cache
/// is an optimisation: a failure to *write* it is logged (warn) and the freshly
/// compiled filter is returned anyway; errors reading an existing file other
/// than "not found" are also logged and treated as a miss.
pub fn load_cached(
    cache_dir: &Path,
    profile_json: &[u8],
    caps: &CapsHashSet,
    arch: TargetArch,
) -> Result<(CompiledFilter, bool), SecurityError> {
    let key = cache_key(profile_json, caps, arch)?;
    let path = cache_path(cache_dir, &key);
    match fs::read(&path) {
        Ok(data) => match decode_cache(&key, &data) {
            Some(filter) => return Ok((filter, true)),
            None => tracing::debug!(path = %path.display(), "corrupt seccomp cache ignored"),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            let e = SecurityError::CacheRead {
                path: path.clone(),
                source,
            };
            tracing::warn!("{e}; recompiling");
        }
    }
    let filter = compile(profile_json, caps, arch)?;
    if let Err(e) = write_atomic(&path, &encode_cache(&key, &filter)) {
        tracing::warn!("{e}; continuing without cache");
    }
    Ok((filter, false))
}
