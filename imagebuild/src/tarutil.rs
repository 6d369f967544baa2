//! Low-level tar header writing.
//!
//! `tar::Builder::append_data` sanitises paths (it refuses `..` and strips a
//! leading `/`), which is right for normal use but makes hostile test archives
//! impossible. Everything here writes the name bytes exactly as given.

use std::io::{self, Read, Write};

use tar::{EntryType, Header};

/// How names longer than the 100-byte ustar `name` field are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LongNames {
    /// What Go's `archive/tar` (docker, buildah) does: split into the ustar
    /// `prefix` + `name` fields when possible, else a PAX `path` record.
    #[default]
    Auto,
    /// Always a PAX `path` / `linkpath` record.
    Pax,
    /// GNU `././@LongLink` entries (type `L` / `K`), like GNU tar.
    Gnu,
}

/// One entry to write, with no validation of `path` / `link`.
#[derive(Debug, Clone)]
pub struct RawEntry<'a> {
    pub path: &'a [u8],
    pub link: Option<&'a [u8]>,
    pub kind: EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Extra PAX records (e.g. `SCHILY.xattr.user.foo`) written in an `x`
    /// header before the entry.
    pub pax: &'a [(String, Vec<u8>)],
}

impl<'a> RawEntry<'a> {
    pub fn new(path: &'a [u8], kind: EntryType, mode: u32) -> Self {
        RawEntry {
            path,
            link: None,
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            dev_major: 0,
            dev_minor: 0,
            pax: &[],
        }
    }
}

/// Encodes PAX records: each is `"<len> <key>=<value>\n"` where `<len>` counts
/// the whole record including its own digits.
pub fn pax_records(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = k.len() + v.len() + 3; // ' ' '=' '\n'
                                          // The length prefix counts its own digits: iterate to the fixed point.
        let mut len = body + 1;
        loop {
            let next = body + len.to_string().len();
            if next == len {
                break;
            }
            len = next;
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

fn copy_field(dst: &mut [u8], src: &[u8]) {
    let n = src.len().min(dst.len());
    dst[..n].copy_from_slice(&src[..n]);
    for b in &mut dst[n..] {
        *b = 0;
    }
}

/// Finds a split of `path` into ustar `prefix` (<=155) / `name` (<=100) at a
/// `/`, as Go does.
fn ustar_split(path: &[u8]) -> Option<usize> {
    if path.len() > 256 {
        return None;
    }
    // Like Go's splitUSTARPath: the last '/' that keeps the prefix within
    // 155 bytes and leaves a non-empty name of at most 100.
    (1..path.len().min(156))
        .rev()
        .find(|&i| path[i] == b'/' && path.len() - i - 1 <= 100 && path.len() - i - 1 > 0)
}

fn append_gnu_long<W: Write>(
    b: &mut tar::Builder<W>,
    kind: EntryType,
    value: &[u8],
) -> io::Result<()> {
    let mut h = Header::new_gnu();
    copy_field(&mut h.as_old_mut().name, b"././@LongLink");
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    let mut data = value.to_vec();
    data.push(0);
    h.set_size(data.len() as u64);
    h.set_entry_type(kind);
    h.set_cksum();
    b.append(&h, &data[..])
}

/// Writes a PAX extended header (`x`) with the given records.
pub fn append_pax<W: Write>(
    b: &mut tar::Builder<W>,
    for_path: &[u8],
    records: &[(String, Vec<u8>)],
) -> io::Result<()> {
    let data = pax_records(records);
    let base = for_path
        .rsplit(|&c| c == b'/')
        .find(|s| !s.is_empty())
        .unwrap_or(b"x");
    let mut name = b"PaxHeaders.0/".to_vec();
    name.extend_from_slice(base);
    let mut h = Header::new_ustar();
    copy_field(&mut h.as_old_mut().name, &name);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    h.set_entry_type(EntryType::XHeader);
    h.set_cksum();
    b.append(&h, &data[..])
}

/// Appends one entry, writing `path`/`link` verbatim (long ones via prefix,
/// PAX or GNU records according to `long`), then `data` (must be `e.size`
/// bytes).
pub fn append_raw<W: Write, R: Read>(
    b: &mut tar::Builder<W>,
    e: &RawEntry<'_>,
    long: LongNames,
    data: R,
) -> io::Result<()> {
    let mut h = if long == LongNames::Gnu {
        Header::new_gnu()
    } else {
        Header::new_ustar()
    };
    let mut pax: Vec<(String, Vec<u8>)> = e.pax.to_vec();
    let mut prefix: Option<usize> = None;

    if e.path.len() > 100 {
        match long {
            LongNames::Gnu => append_gnu_long(b, EntryType::GNULongName, e.path)?,
            LongNames::Auto => match ustar_split(e.path) {
                Some(i) => prefix = Some(i),
                None => pax.push(("path".into(), e.path.to_vec())),
            },
            LongNames::Pax => pax.push(("path".into(), e.path.to_vec())),
        }
    }
    if let Some(link) = e.link {
        if link.len() > 100 {
            match long {
                LongNames::Gnu => append_gnu_long(b, EntryType::GNULongLink, link)?,
                _ => pax.push(("linkpath".into(), link.to_vec())),
            }
        }
    }
    if !pax.is_empty() {
        append_pax(b, e.path, &pax)?;
    }

    match prefix {
        Some(i) => {
            copy_field(&mut h.as_old_mut().name, &e.path[i + 1..]);
            if let Some(u) = h.as_ustar_mut() {
                copy_field(&mut u.prefix, &e.path[..i]);
            }
        }
        // Truncated name for long paths: readers use the PAX/GNU record.
        None => copy_field(&mut h.as_old_mut().name, e.path),
    }
    if let Some(link) = e.link {
        copy_field(&mut h.as_old_mut().linkname, link);
    }
    h.set_mode(e.mode);
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_mtime(e.mtime);
    h.set_size(e.size);
    h.set_entry_type(e.kind);
    if matches!(e.kind, EntryType::Char | EntryType::Block) {
        h.set_device_major(e.dev_major)?;
        h.set_device_minor(e.dev_minor)?;
    }
    h.set_cksum();
    b.append(&h, data)
}
