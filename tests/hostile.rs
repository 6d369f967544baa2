//! Hostile image archives, built in code, fed to the real `rcrun unpack` as root and as a plain
//! user. For every case the host must be untouched (a canary directory next to the store, with a
//! sentinel whose content, mode, mtime and xattrs are compared, and absolute paths outside the
//! case dir that must not appear) and the outcome must be a clear error (exit 125, naming the
//! archive member and what is wrong, no layer and no temp dir left in the store) or a
//! neutralised entry (the layer is installed and the entry is confined to it).

mod common;
use common::*;

use rcrun_imagebuild::{
    layer_tar, write_archive, write_archive_to_file, ConfigSpec, Doc, Entry, Format, ImageSpec,
    LayerSpec, MemberBody, Tamper, WriteOptions,
};
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// From a layer's `fs` dir up to the case dir holding the canary: only reachable by escaping.
/// `rcrun unpack CASE/out` extracts into a scratch store inside `out`:
/// `out/.rcrun-unpack-PID/tmp/<x>/fs` while extracting, `…/layers/<tag>/<hex>/fs` after.
const UP_TO_CASE: &str = "../../../../../";
const UP_TO_CASE_FINAL: &str = "../../../../../../";

fn spec(layers: Vec<LayerSpec>) -> ImageSpec {
    ImageSpec {
        tags: vec!["hostile:1".into()],
        config: ConfigSpec {
            cmd: Some(vec!["/bin/sh".into()]),
            ..Default::default()
        },
        layers,
        ..Default::default()
    }
}

fn one_layer(entries: &[Entry]) -> ImageSpec {
    spec(vec![LayerSpec::entries(entries, "hostile").unwrap()])
}

fn benign() -> Vec<Entry> {
    vec![
        Entry::dir("etc", 0o755),
        Entry::file("etc/hostname", 0o644, vec![b'h'; 2000]),
    ]
}

fn xattr_names(path: &Path) -> Vec<String> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: `c` is NUL-terminated and `buf` is valid for `buf.len()` bytes.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return Vec::new();
    }
    buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Everything about the case dir outside the store, the output and the image.
fn snapshot(case: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, top: bool, out: &mut BTreeMap<PathBuf, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            if top && ["store", "out", "image.tar"].contains(&name.to_str().unwrap_or("")) {
                continue;
            }
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let content = if m.is_file() {
                sha256(&std::fs::read(&p).unwrap())
            } else if m.file_type().is_symlink() {
                std::fs::read_link(&p).unwrap().display().to_string()
            } else {
                String::new()
            };
            out.insert(
                p.clone(),
                format!(
                    "{:?} mode={:o} uid={} size={} mtime={}.{} ctime={}.{} {content} xattrs={:?}",
                    m.file_type(),
                    m.mode(),
                    m.uid(),
                    m.size(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ctime(),
                    m.ctime_nsec(),
                    xattr_names(&p)
                ),
            );
            if m.is_dir() {
                walk(&p, false, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(case, true, &mut out);
    out
}

/// The canary: `case/canary/sentinel`, owned by whoever runs rcrun so an escape *could* change it.
fn plant_canary(case: &Path, who: Who) -> PathBuf {
    let canary = case.join("canary");
    std::fs::create_dir(&canary).unwrap();
    std::fs::write(canary.join("sentinel"), b"sentinel\n").unwrap();
    std::fs::set_permissions(
        canary.join("sentinel"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let old = nix::sys::time::TimeSpec::new(1_000_000, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &canary.join("sentinel"),
        &old,
        &old,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    if who == Who::User && nix::unistd::geteuid().is_root() {
        let u = test_user().unwrap();
        for p in [canary.clone(), canary.join("sentinel")] {
            nix::unistd::chown(&p, Some(u.uid), Some(u.gid)).unwrap();
        }
    }
    canary
}

/// Absolute paths outside the case dir that hostile entries aim at; none may appear.
fn evil_abs() -> String {
    format!("/tmp/rcrun-evil-{}", std::process::id())
}

enum Expect {
    /// Exit 125; stderr contains every string.
    Fail(Vec<String>),
    /// Success; the check runs on the unpacked tree (its stderr at hand).
    Ok(Box<dyn Fn(&Path, Who, &str)>),
}

struct Case {
    name: &'static str,
    /// Builds the archive at the given path; gets the canary's absolute path.
    build: Box<dyn Fn(&Path, &Path)>,
    expect: Expect,
}

fn fail(parts: &[&str]) -> Expect {
    Expect::Fail(parts.iter().map(|s| s.to_string()).collect())
}

fn layer_case(
    name: &'static str,
    entries: impl Fn(&str) -> Vec<Entry> + 'static,
    expect: Expect,
) -> Case {
    Case {
        name,
        build: Box::new(move |path, canary| {
            let img = one_layer(&entries(canary.to_str().unwrap()));
            write_archive_to_file(path, &[img], Format::DockerLegacy, &WriteOptions::default())
                .unwrap();
        }),
        expect,
    }
}

fn archive_case(
    name: &'static str,
    format: Format,
    images: impl Fn() -> Vec<ImageSpec> + 'static,
    opts: impl Fn() -> WriteOptions + 'static,
    expect: Expect,
) -> Case {
    Case {
        name,
        build: Box::new(move |path, _| {
            write_archive_to_file(path, &images(), format, &opts()).unwrap();
        }),
        expect,
    }
}

fn tamper(t: Vec<Tamper>) -> impl Fn() -> WriteOptions {
    move || WriteOptions {
        tamper: t.clone(),
        ..Default::default()
    }
}

fn single() -> Vec<ImageSpec> {
    vec![one_layer(&benign())]
}

fn check_file(fs: &Path, rel: &str) -> std::fs::Metadata {
    std::fs::symlink_metadata(fs.join(rel))
        .unwrap_or_else(|e| panic!("{rel} missing from the layer: {e}"))
}

fn layer_cases() -> Vec<Case> {
    let evil = evil_abs();
    let e2 = evil.clone();
    let e3 = evil.clone();
    let e4 = evil.clone();
    vec![
        layer_case(
            "absolute-path",
            move |_| vec![Entry::file(format!("{e2}/abs"), 0o644, "x")],
            Expect::Ok(Box::new(move |fs, _, _| {
                assert!(check_file(fs, &format!("{}/abs", &e3[1..])).is_file());
            })),
        ),
        layer_case(
            "dotdot-path",
            |_| vec![Entry::file(format!("{UP_TO_CASE}canary/pwned"), 0o644, "x")],
            fail(&["canary/pwned", "'..'", "layer 1 ("]),
        ),
        layer_case(
            "dotdot-inside-path",
            |_| vec![Entry::file("a/../../../../../../canary/pwned", 0o644, "x")],
            fail(&["'..'", "layer.tar"]),
        ),
        layer_case(
            "symlink-abs-then-write-through",
            |c| {
                vec![
                    Entry::symlink("link", c),
                    Entry::file("link/x", 0o644, "pwned"),
                ]
            },
            fail(&["link/x", "symlink", "layer.tar"]),
        ),
        layer_case(
            "symlink-dotdot-then-deep-write",
            |_| {
                vec![
                    Entry::symlink("link", "../.."),
                    Entry::file("link/a/b", 0o644, "pwned"),
                ]
            },
            fail(&["link/a/b", "symlink"]),
        ),
        layer_case(
            "symlink-to-canary-relative-then-write",
            |_| {
                vec![
                    Entry::symlink("link", format!("{UP_TO_CASE}canary")),
                    Entry::file("link/sentinel", 0o644, "pwned"),
                ]
            },
            fail(&["link/sentinel", "symlink"]),
        ),
        layer_case(
            "symlink-named-dot",
            |c| {
                vec![
                    Entry::symlink(".", c),
                    Entry::file("sentinel", 0o644, "pwned"),
                ]
            },
            fail(&["layer root", "layer.tar"]),
        ),
        layer_case(
            "symlink-named-dot-slash",
            |c| vec![Entry::symlink("./", c), Entry::file("x", 0o644, "pwned")],
            fail(&["layer root"]),
        ),
        layer_case(
            "symlink-then-dir-then-chmod",
            |c| {
                vec![
                    Entry::symlink("d", c),
                    Entry::dir("d", 0o777),
                    Entry::file("d/sentinel", 0o777, "pwned"),
                ]
            },
            Expect::Ok(Box::new(|fs, _, _| {
                let m = check_file(fs, "d");
                assert!(m.is_dir(), "d must have become a directory");
                assert_eq!(m.mode() & 0o7777, 0o777);
                assert_eq!(std::fs::read(fs.join("d/sentinel")).unwrap(), b"pwned");
            })),
        ),
        layer_case(
            "symlink-to-file-then-regular-file",
            |c| {
                vec![
                    Entry::symlink("s", format!("{c}/sentinel")),
                    Entry::file("s", 0o4777, "pwned"),
                ]
            },
            Expect::Ok(Box::new(|fs, _, _| {
                assert!(check_file(fs, "s").is_file());
            })),
        ),
        layer_case(
            "symlink-cycle-then-write",
            |_| {
                vec![
                    Entry::symlink("a", "b"),
                    Entry::symlink("b", "a"),
                    Entry::file("a/x", 0o644, "x"),
                ]
            },
            fail(&["a/x", "symlink"]),
        ),
        layer_case(
            "hardlink-absolute",
            |c| vec![Entry::hardlink("h", format!("{c}/sentinel"))],
            fail(&["\"h\"", "hardlink target", "not a file extracted earlier"]),
        ),
        layer_case(
            "hardlink-dotdot",
            |_| vec![Entry::hardlink("h", format!("{UP_TO_CASE}canary/sentinel"))],
            fail(&["hardlink target", "'..'"]),
        ),
        layer_case(
            "hardlink-through-symlinked-dir",
            |c| vec![Entry::symlink("l", c), Entry::hardlink("h", "l/sentinel")],
            fail(&["hardlink target", "not a file extracted earlier"]),
        ),
        layer_case(
            "hardlink-to-symlink-pointing-out",
            |c| {
                vec![
                    Entry::symlink("l", format!("{c}/sentinel")),
                    Entry::hardlink("h", "l"),
                ]
            },
            // A hard link to a symlink is the symlink itself: harmless inside the layer.
            Expect::Ok(Box::new(|fs, _, _| {
                assert!(check_file(fs, "h").file_type().is_symlink());
            })),
        ),
        layer_case(
            "whiteout-dot",
            |_| vec![Entry::whiteout(".")],
            fail(&[".wh..", "whiteout"]),
        ),
        layer_case(
            "whiteout-empty",
            |_| vec![Entry::whiteout("")],
            fail(&[".wh.", "empty"]),
        ),
        layer_case(
            "whiteout-under-symlink",
            |c| vec![Entry::symlink("w", c), Entry::whiteout("w/sentinel")],
            fail(&["w/.wh.sentinel", "symlink"]),
        ),
        layer_case(
            "opaque-under-symlink",
            |c| vec![Entry::symlink("w", c), Entry::opaque("w")],
            fail(&["w/.wh..wh..opq", "symlink"]),
        ),
        layer_case(
            "whiteout-dotdot",
            |_| vec![Entry::whiteout(format!("{UP_TO_CASE}canary/sentinel"))],
            fail(&["'..'"]),
        ),
        layer_case(
            "forged-overlay-xattrs",
            |_| {
                vec![
                    Entry::dir("d", 0o755)
                        .xattr("user.overlay.opaque", "y")
                        .xattr("trusted.overlay.opaque", "y"),
                    Entry::file("d/f", 0o644, "x")
                        .xattr("trusted.overlay.redirect", "/etc")
                        .xattr("user.overlay.redirect", "/etc")
                        .xattr("user.overlay.whiteout", "y")
                        .xattr("trusted.overlay.metacopy", "")
                        .xattr("user.rcrun-test", "kept"),
                ]
            },
            Expect::Ok(Box::new(|fs, _, _| {
                assert_eq!(xattr_names(&fs.join("d")), Vec::<String>::new());
                assert_eq!(
                    xattr_names(&fs.join("d/f")),
                    vec!["user.rcrun-test".to_string()]
                );
            })),
        ),
        layer_case(
            "devices-and-fifo",
            |_| {
                vec![
                    Entry::dir("dev", 0o755),
                    Entry::CharDev {
                        path: "dev/null".into(),
                        major: 1,
                        minor: 3,
                        mode: 0o666,
                    },
                    Entry::BlockDev {
                        path: "dev/loop0".into(),
                        major: 7,
                        minor: 0,
                        mode: 0o660,
                    },
                    Entry::Fifo {
                        path: "dev/pipe".into(),
                        mode: 0o600,
                    },
                ]
            },
            Expect::Ok(Box::new(|fs, who, stderr| {
                assert!(check_file(fs, "dev/pipe").file_type().is_fifo());
                let skipped = if stderr.contains("2 device node(s) skipped") {
                    2
                } else {
                    0
                };
                if who == Who::Root {
                    let m = check_file(fs, "dev/null");
                    assert!(m.file_type().is_char_device());
                    assert_eq!(m.rdev(), nix::sys::stat::makedev(1, 3));
                    assert!(check_file(fs, "dev/loop0").file_type().is_block_device());
                    assert_eq!(skipped, 0);
                } else {
                    assert!(!fs.join("dev/null").exists());
                    assert!(!fs.join("dev/loop0").exists());
                    assert_eq!(skipped, 2, "rootless counts the skipped devices");
                }
            })),
        ),
        layer_case(
            "pax-path-dotdot",
            |_| {
                vec![Entry::file("innocent", 0o644, "x").with_pax(vec![(
                    "path".into(),
                    format!("{UP_TO_CASE}canary/pwned").into_bytes(),
                )])]
            },
            fail(&["canary/pwned", "'..'"]),
        ),
        layer_case(
            "pax-path-absolute",
            move |_| {
                vec![Entry::file("innocent", 0o644, "x")
                    .with_pax(vec![("path".into(), format!("{e4}/pax").into_bytes())])]
            },
            Expect::Ok(Box::new(|fs, _, _| {
                assert!(
                    !fs.join("innocent").exists(),
                    "the PAX path overrides the name"
                );
            })),
        ),
        layer_case(
            "pax-linkpath-symlink-then-write",
            |c| {
                vec![
                    Entry::symlink("l", "harmless")
                        .with_pax(vec![("linkpath".into(), c.as_bytes().to_vec())]),
                    Entry::file("l/sentinel", 0o644, "pwned"),
                ]
            },
            fail(&["l/sentinel", "symlink"]),
        ),
        layer_case(
            "pax-size-smuggling",
            |_| {
                // Header says 0 bytes, PAX says 512: the 512 bytes (which look like a header
                // for "hidden") are file data, exactly as the diff_id-checked reader sees them.
                let mut hidden = tar::Header::new_ustar();
                hidden.set_path("hidden").unwrap();
                hidden.set_size(0);
                hidden.set_mode(0o644);
                hidden.set_entry_type(tar::EntryType::Regular);
                hidden.set_cksum();
                let mut h = tar::Header::new_ustar();
                h.set_path("smuggle").unwrap();
                h.set_size(0);
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_cksum();
                vec![Entry::Raw {
                    header: h,
                    data: hidden.as_bytes().to_vec(),
                }
                .with_pax(vec![("size".into(), b"512".to_vec())])]
            },
            Expect::Ok(Box::new(|fs, _, _| {
                assert_eq!(check_file(fs, "smuggle").size(), 512);
                assert!(!fs.join("hidden").exists());
            })),
        ),
        layer_case(
            "huge-gnu-longname",
            |_| {
                let mut h = tar::Header::new_gnu();
                h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
                let mut data = vec![b'a'; 2 << 20];
                data.push(0);
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::GNULongName);
                h.set_cksum();
                vec![Entry::Raw { header: h, data }, Entry::file("x", 0o644, "x")]
            },
            fail(&["GNU long name ('L')", "1048576", "layer.tar"]),
        ),
    ]
}

fn archive_cases() -> Vec<Case> {
    use Format::*;
    vec![
        archive_case(
            "manifest-layer-dotdot",
            DockerLegacy,
            single,
            tamper(vec![Tamper::LayerPath {
                image: 0,
                layer: 0,
                value: "../escape/layer.tar".into(),
            }]),
            fail(&[
                "manifest.json",
                "outside the archive",
                "../escape/layer.tar",
            ]),
        ),
        archive_case(
            "manifest-layer-absolute",
            DockerLegacy,
            single,
            tamper(vec![Tamper::LayerPath {
                image: 0,
                layer: 0,
                value: "/etc/passwd".into(),
            }]),
            fail(&["manifest.json", "outside the archive", "/etc/passwd"]),
        ),
        archive_case(
            "manifest-config-dotdot",
            DockerLegacy,
            single,
            || WriteOptions {
                edit_json: Some(Box::new(|d, v| {
                    if *d == Doc::DockerManifest {
                        v[0]["Config"] = "../../config.json".into();
                    }
                })),
                ..Default::default()
            },
            fail(&["manifest.json", "outside the archive", "../../config.json"]),
        ),
        archive_case(
            "manifest-config-absolute",
            DockerLegacy,
            single,
            || WriteOptions {
                edit_json: Some(Box::new(|d, v| {
                    if *d == Doc::DockerManifest {
                        v[0]["Config"] = "/etc/passwd".into();
                    }
                })),
                ..Default::default()
            },
            fail(&["manifest.json", "outside the archive", "/etc/passwd"]),
        ),
        archive_case(
            "layer-digest-traversal",
            OciArchive,
            single,
            tamper(vec![Tamper::LayerDigest {
                image: 0,
                layer: 0,
                value: "sha256:../../etc/passwd".into(),
            }]),
            fail(&["invalid digest", "sha256:../../etc/passwd", "blobs/sha256/"]),
        ),
        archive_case(
            "config-digest-traversal",
            OciArchive,
            single,
            tamper(vec![Tamper::ConfigDigest {
                image: 0,
                value: "sha256:../../../etc/shadow".into(),
            }]),
            fail(&["invalid digest", "sha256:../../../etc/shadow"]),
        ),
        archive_case(
            "diff-id-uppercase",
            DockerLegacy,
            single,
            tamper(vec![Tamper::DiffId {
                image: 0,
                layer: 0,
                value: format!("sha256:{}", "A".repeat(64)),
            }]),
            fail(&["invalid digest", ".json"]),
        ),
        archive_case(
            "diff-id-short",
            OciArchive,
            single,
            tamper(vec![Tamper::DiffId {
                image: 0,
                layer: 0,
                value: format!("sha256:{}", "a".repeat(63)),
            }]),
            fail(&["invalid digest", "blobs/sha256/"]),
        ),
        archive_case(
            "blob-symlink-dotdot",
            DockerLegacy,
            single,
            tamper(vec![Tamper::BlobSymlink {
                image: 0,
                layer: 0,
                target: "../../../../etc/passwd".into(),
            }]),
            fail(&["layer.tar", "outside the archive"]),
        ),
        archive_case(
            "blob-symlink-absolute",
            DockerLegacy,
            single,
            tamper(vec![Tamper::BlobSymlink {
                image: 0,
                layer: 0,
                target: "/etc/passwd".into(),
            }]),
            fail(&["layer.tar", "outside the archive", "/etc/passwd"]),
        ),
        archive_case(
            "blob-symlink-cycle",
            DockerLegacy,
            single,
            tamper(vec![Tamper::BlobSymlink {
                image: 0,
                layer: 0,
                target: "layer.tar".into(),
            }]),
            fail(&["layer.tar", "symlink loop"]),
        ),
        archive_case(
            "truncated-layer",
            DockerLegacy,
            single,
            tamper(vec![Tamper::TruncateLayer {
                image: 0,
                layer: 0,
                len: 1100,
            }]),
            fail(&["layer 1 (", "layer.tar"]),
        ),
        archive_case(
            "truncated-archive",
            DockerLegacy,
            single,
            tamper(vec![Tamper::TruncateArchive { len: 3000 }]),
            fail(&["truncated"]),
        ),
        archive_case(
            "missing-layer-blob",
            DockerLegacy,
            single,
            tamper(vec![Tamper::OmitLayerBlob { image: 0, layer: 0 }]),
            fail(&["layer.tar", "missing"]),
        ),
        archive_case(
            "config-null-docker",
            DockerLegacy,
            single,
            tamper(vec![Tamper::ConfigNull { image: 0 }]),
            fail(&["manifest.json", "null"]),
        ),
        archive_case(
            "config-null-oci",
            OciArchive,
            single,
            tamper(vec![Tamper::ConfigNull { image: 0 }]),
            fail(&["blobs/sha256/"]),
        ),
        archive_case(
            "config-document-null",
            DockerLegacy,
            single,
            || WriteOptions {
                edit_json: Some(Box::new(|d, v| {
                    if matches!(d, Doc::Config { .. }) {
                        *v = serde_json::Value::Null;
                    }
                })),
                ..Default::default()
            },
            fail(&[".json", "not a JSON object"]),
        ),
        archive_case(
            "index-json-null",
            OciArchive,
            single,
            || WriteOptions {
                edit_json: Some(Box::new(|d, v| {
                    if *d == Doc::Index {
                        *v = serde_json::Value::Null;
                    }
                })),
                ..Default::default()
            },
            fail(&["index.json"]),
        ),
        archive_case(
            "manifest-invalid-json",
            DockerLegacy,
            single,
            || WriteOptions {
                edit_members: Some(Box::new(|members| {
                    for m in members.iter_mut().filter(|m| m.path == "manifest.json") {
                        m.body = MemberBody::Bytes(b"[{\"Config\": ".to_vec());
                    }
                })),
                ..Default::default()
            },
            fail(&["manifest.json", "invalid JSON"]),
        ),
        archive_case(
            "diff-id-mismatch",
            DockerLegacy,
            single,
            tamper(vec![Tamper::WrongDiffId { image: 0, layer: 0 }]),
            fail(&["layer.tar", "diff_id mismatch"]),
        ),
        archive_case(
            "blob-digest-mismatch",
            OciArchive,
            single,
            tamper(vec![Tamper::WrongBlobDigest { image: 0, layer: 0 }]),
            fail(&["blobs/sha256/", "blob digest mismatch"]),
        ),
        archive_case(
            "layer-size-mismatch",
            OciArchive,
            single,
            tamper(vec![Tamper::LayerSize {
                image: 0,
                layer: 0,
                size: 12,
            }]),
            fail(&["blobs/sha256/", "size mismatch"]),
        ),
        archive_case(
            "extra-layer",
            DockerLegacy,
            single,
            tamper(vec![Tamper::ExtraLayer { image: 0 }]),
            fail(&["manifest.json", "lists 2 layers", "1 diff_ids"]),
        ),
        archive_case(
            "dropped-layer",
            OciArchive,
            || {
                vec![spec(vec![
                    LayerSpec::entries(&benign(), "a").unwrap(),
                    LayerSpec::entries(&[Entry::file("b", 0o644, "b")], "b").unwrap(),
                ])]
            },
            tamper(vec![Tamper::DropLayer { image: 0, layer: 1 }]),
            fail(&["blobs/sha256/", "lists 1 layers", "2 diff_ids"]),
        ),
        Case {
            name: "empty-file",
            build: Box::new(|p, _| std::fs::write(p, b"").unwrap()),
            expect: fail(&["image.tar", "empty"]),
        },
        Case {
            name: "empty-tar",
            build: Box::new(|p, _| std::fs::write(p, vec![0u8; 10240]).unwrap()),
            expect: fail(&["image.tar", "no members"]),
        },
    ]
}

fn run_case(case: &Case, who: Who) {
    let dir = case_dir(&format!("hostile-{}", case.name), who);
    let canary = plant_canary(&dir, who);
    let image = dir.join("image.tar");
    (case.build)(&image, &canary);
    publish(&image);
    let before = snapshot(&dir);
    let store = dir.join("store");
    let out = dir.join("out");
    let o = unpack(who, &store, &image, &out, &[]);
    let report = format!("case {} as {:?}:\n{}", case.name, who, text(&o));
    assert_eq!(snapshot(&dir), before, "the host changed: {report}");
    let evil = evil_abs();
    assert!(!Path::new(&evil).exists(), "{evil} appeared: {report}");
    // unpack leaves the layer store alone: it extracts into a scratch store inside `out`.
    assert_eq!(list(&store.join("tmp")), Vec::<String>::new(), "{report}");
    assert_eq!(store_layers(&store), Vec::<String>::new(), "{report}");
    match &case.expect {
        Expect::Fail(parts) => {
            assert_eq!(o.status.code(), Some(125), "{report}");
            let err = String::from_utf8_lossy(&o.stderr);
            for p in parts {
                assert!(err.contains(p.as_str()), "error lacks {p:?}: {report}");
            }
            assert!(!err.contains("panicked"), "{report}");
            // Nothing left behind: the DIR unpack made, scratch store and all, is gone.
            assert!(!out.exists(), "{} left: {report}", out.display());
        }
        Expect::Ok(check) => {
            assert_eq!(o.status.code(), Some(0), "{report}");
            let left: Vec<String> = list(&out)
                .into_iter()
                .filter(|n| n.starts_with(".rcrun-unpack-"))
                .collect();
            assert_eq!(left, Vec::<String>::new(), "scratch left: {report}");
            check(&out, who, &String::from_utf8_lossy(&o.stderr));
        }
    }
    let _ = rcrun::sys::fs::remove_tree(&dir);
}

fn run_all(name: &str, cases: Vec<Case>) {
    let modes = modes(name);
    for who in modes {
        for c in &cases {
            run_case(c, who);
        }
        eprintln!("{name}: {} cases passed as {:?}", cases.len(), who);
    }
}

#[test]
fn hostile_layer_entries() {
    run_all("hostile_layer_entries", layer_cases());
}

#[test]
fn hostile_archive_structure() {
    run_all("hostile_archive_structure", archive_cases());
}

/// Sanity for the symlink-through cases: relative escapes really would reach the canary from a
/// layer dir, so a refusal there is the extractor's doing, not a wrong path.
#[test]
fn canary_paths_are_reachable_from_the_layer_dirs() {
    let fs_tmp = Path::new("/case/out/.rcrun-unpack-1/tmp/x/fs");
    let fs_final = Path::new("/case/out/.rcrun-unpack-1/layers/root/hex/fs");
    let resolve = |base: &Path, rel: &str| {
        let mut p = base.to_path_buf();
        for c in rel.split('/').filter(|c| !c.is_empty()) {
            if c == ".." {
                p.pop();
            } else {
                p.push(c);
            }
        }
        p
    };
    assert_eq!(
        resolve(fs_tmp, &format!("{UP_TO_CASE}canary")),
        Path::new("/case/canary")
    );
    assert_eq!(
        resolve(fs_final, &format!("{UP_TO_CASE_FINAL}canary")),
        Path::new("/case/canary")
    );
}

/// A sparse file: `head`, then zeros up to `len` bytes (cheap to write, cheap to read).
fn sparse_layer(path: &Path, head: &[u8], len: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(head).unwrap();
    f.set_len(len).unwrap();
}

const GIB: u64 = 1 << 30;
/// Peak RSS allowed for rcrun on a hostile layer: real work needs a few tens of MiB.
const RSS_LIMIT_KIB: u64 = 200 * 1024;

fn big_case(name: &str, layer: &Path, opts: WriteOptions, want: &[&str]) {
    let shared = staging().join(format!("{name}-archive"));
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let image = shared.join("image.tar");
    let img = spec(vec![LayerSpec::file(layer, "bomb")]);
    let opts = WriteOptions {
        temp_dir: Some(shared.clone()),
        ..opts
    };
    write_archive_to_file(&image, &[img], Format::OciArchive, &opts).unwrap();
    publish(&image);
    let _ = std::fs::remove_file(layer);
    for who in modes(name) {
        let dir = case_dir(name, who);
        let store = dir.join("store");
        let out = dir.join("out");
        let cmd = rcrun_cmd(
            who,
            &[
                os("--root"),
                store.as_os_str(),
                os("unpack"),
                image.as_os_str(),
                out.as_os_str(),
            ],
        );
        let (o, rss) = with_peak_rss(cmd);
        let report = format!("{name} as {who:?}: peak RSS {rss:?} KiB\n{}", text(&o));
        eprintln!("{report}");
        assert_eq!(o.status.code(), Some(125), "{report}");
        let err = String::from_utf8_lossy(&o.stderr);
        for w in want {
            assert!(err.contains(w), "error lacks {w:?}: {report}");
        }
        if let Some(rss) = rss {
            assert!(rss < RSS_LIMIT_KIB, "memory not bounded: {report}");
        }
        assert_eq!(list(&store.join("tmp")), Vec::<String>::new(), "{report}");
        assert_eq!(store_layers(&store), Vec::<String>::new(), "{report}");
        let _ = rcrun::sys::fs::remove_tree(&dir);
    }
    let _ = rcrun::sys::fs::remove_tree(&shared);
}

/// A PAX header declaring 1 GiB (zeros, gzip-compressed to about a megabyte): refused at the
/// header, without allocating it.
#[test]
fn huge_pax_header_is_refused_without_allocating_it() {
    let mut h = tar::Header::new_ustar();
    h.set_path("PaxHeaders/x").unwrap();
    h.set_size(GIB);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_cksum();
    let layer = staging().join("pax-bomb-layer.tar");
    sparse_layer(&layer, h.as_bytes(), 512 + GIB + 1024);
    big_case(
        "huge-pax-header",
        &layer,
        WriteOptions {
            compression: rcrun_imagebuild::Compression::Gzip,
            ..Default::default()
        },
        &["PAX extended header ('x')", "1073741824", "blobs/sha256/"],
    );
}

/// A gzip bomb: a tiny tar followed by 1 GiB of zeros, with a diff_id that does not match.
/// rcrun must stream it (bounded memory) and fail on the diff_id.
#[test]
fn gzip_bomb_streams_and_fails_on_diff_id() {
    let head = layer_tar(&[Entry::file("x", 0o644, "x")]).unwrap();
    let layer = staging().join("gzip-bomb-layer.tar");
    sparse_layer(&layer, &head, GIB);
    big_case(
        "gzip-bomb",
        &layer,
        WriteOptions {
            compression: rcrun_imagebuild::Compression::Gzip,
            tamper: vec![Tamper::WrongDiffId { image: 0, layer: 0 }],
            ..Default::default()
        },
        &["diff_id mismatch", "blobs/sha256/"],
    );
}

/// The archive writer used here must really produce what the cases claim (a test of the test).
#[test]
fn hostile_layer_bytes_are_verbatim() {
    let tar = layer_tar(&[Entry::file(format!("{UP_TO_CASE}canary/pwned"), 0o644, "x")]).unwrap();
    let mut a = tar::Archive::new(&tar[..]);
    let e = a.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(
        &*e.path_bytes(),
        format!("{UP_TO_CASE}canary/pwned").as_bytes()
    );
    let mut v = Vec::new();
    write_archive(
        &mut v,
        &single(),
        Format::DockerLegacy,
        &WriteOptions::default(),
    )
    .unwrap();
    assert!(!v.is_empty());
}
