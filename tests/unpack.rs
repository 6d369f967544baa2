//! `rcrun unpack` output checked against an independent expectation: the layer tars are read
//! here with the `tar` crate and applied with OCI semantics (whiteouts, opaque dirs, hardlinks)
//! in a small in-test model; the output dir is walked and compared entry by entry (type, mode
//! incl. setuid, size, content sha256, symlink target, hardlink grouping, owners as root).
//! Also: the store is reused on a second run, concurrent extractions of one image agree, and a
//! killed extraction is never mistaken for a complete layer.

mod common;
use common::*;

use rcrun_imagebuild::{
    write_archive_to_file, Compression, ConfigSpec, Entry, Format, ImageSpec, LayerSpec,
    WriteOptions,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File { size: u64, sha: String },
    Symlink(String),
    Fifo,
    Char(u64),
    Block(u64),
}

#[derive(Debug, Clone)]
struct Node {
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    /// Identity of the file's inode in the model (hardlinks share it).
    inode: u64,
}

#[derive(Default)]
struct Model {
    tree: BTreeMap<String, Node>,
    next_inode: u64,
}

fn clean(p: &[u8]) -> String {
    let s = String::from_utf8_lossy(p);
    s.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn parent(p: &str) -> &str {
    p.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

impl Model {
    fn remove_subtree(&mut self, p: &str) {
        let prefix = format!("{p}/");
        self.tree.retain(|k, _| k != p && !k.starts_with(&prefix));
    }

    fn ensure_parents(&mut self, p: &str) {
        let mut cur = String::new();
        for c in p.split('/').collect::<Vec<_>>().iter().rev().skip(1).rev() {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(c);
            if !matches!(
                self.tree.get(&cur),
                Some(Node {
                    kind: Kind::Dir,
                    ..
                })
            ) {
                self.remove_subtree(&cur);
                self.next_inode += 1;
                let inode = self.next_inode;
                self.tree.insert(
                    cur.clone(),
                    Node {
                        kind: Kind::Dir,
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                        inode,
                    },
                );
            }
        }
    }

    /// Applies one layer tar (OCI image spec, "Applying Changesets").
    fn apply(&mut self, layer: impl Read) {
        let mut a = tar::Archive::new(layer);
        // Pass 1 (whiteouts and opaque markers hide lower layers only, whatever the order):
        // collect this layer's entries.
        let mut entries: Vec<(String, Option<Node>, Option<String>)> = Vec::new();
        let mut opaque = Vec::new();
        let mut whiteouts = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = clean(&e.path_bytes());
            let name = path.rsplit('/').next().unwrap_or("").to_string();
            if name == ".wh..wh..opq" {
                opaque.push(parent(&path).to_string());
                continue;
            }
            if let Some(t) = name.strip_prefix(".wh.") {
                let d = parent(&path);
                whiteouts.push(if d.is_empty() {
                    t.to_string()
                } else {
                    format!("{d}/{t}")
                });
                continue;
            }
            let h = e.header().clone();
            let mode = h.mode().unwrap() & 0o7777;
            let (uid, gid) = (h.uid().unwrap(), h.gid().unwrap());
            let kind = match h.entry_type() {
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Regular => {
                    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
                    let mut buf = vec![0u8; 1 << 20];
                    let mut size = 0;
                    loop {
                        let n = e.read(&mut buf).unwrap();
                        if n == 0 {
                            break;
                        }
                        sha2::Digest::update(&mut hasher, &buf[..n]);
                        size += n as u64;
                    }
                    Kind::File {
                        size,
                        sha: hex::encode(sha2::Digest::finalize(hasher)),
                    }
                }
                tar::EntryType::Symlink => Kind::Symlink(
                    String::from_utf8_lossy(&e.link_name_bytes().unwrap()).into_owned(),
                ),
                tar::EntryType::Link => {
                    let target = clean(&e.link_name_bytes().unwrap());
                    entries.push((path, None, Some(target)));
                    continue;
                }
                tar::EntryType::Fifo => Kind::Fifo,
                tar::EntryType::Char => Kind::Char(nix::sys::stat::makedev(
                    h.device_major().unwrap().unwrap() as u64,
                    h.device_minor().unwrap().unwrap() as u64,
                )),
                tar::EntryType::Block => Kind::Block(nix::sys::stat::makedev(
                    h.device_major().unwrap().unwrap() as u64,
                    h.device_minor().unwrap().unwrap() as u64,
                )),
                other => panic!("model: unexpected entry type {other:?}"),
            };
            entries.push((
                path,
                Some(Node {
                    kind,
                    mode,
                    uid,
                    gid,
                    inode: 0,
                }),
                None,
            ));
        }
        for d in opaque {
            let prefix = if d.is_empty() {
                String::new()
            } else {
                format!("{d}/")
            };
            self.tree
                .retain(|k, _| !(k.starts_with(&prefix) && k.len() > prefix.len()));
        }
        for w in whiteouts {
            self.remove_subtree(&w);
        }
        for (path, node, link) in entries {
            if path.is_empty() {
                continue;
            }
            self.ensure_parents(&path);
            let node = match (node, link) {
                (Some(n), _) => n,
                (None, Some(target)) => self.tree.get(&target).cloned().expect("hardlink target"),
                _ => unreachable!(),
            };
            let existing_dir = matches!(
                self.tree.get(&path),
                Some(Node {
                    kind: Kind::Dir,
                    ..
                })
            );
            if node.kind == Kind::Dir {
                if !existing_dir {
                    self.remove_subtree(&path);
                }
                let inode = self.tree.get(&path).map(|n| n.inode).unwrap_or_else(|| {
                    self.next_inode += 1;
                    self.next_inode
                });
                self.tree.insert(path, Node { inode, ..node });
            } else {
                self.remove_subtree(&path);
                let inode = if node.inode != 0 {
                    node.inode
                } else {
                    self.next_inode += 1;
                    self.next_inode
                };
                self.tree.insert(path, Node { inode, ..node });
            }
        }
    }
}

/// One line per path, and the hardlink groups: what the comparison looks at.
fn describe_model(
    m: &Model,
    owners: bool,
    devices: bool,
) -> (BTreeMap<String, String>, BTreeSet<Vec<String>>) {
    let mut out = BTreeMap::new();
    let mut groups: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (p, n) in &m.tree {
        if !devices && matches!(n.kind, Kind::Char(_) | Kind::Block(_)) {
            continue;
        }
        if matches!(n.kind, Kind::File { .. }) {
            groups.entry(n.inode).or_default().push(p.clone());
        }
        out.insert(p.clone(), line(&n.kind, n.mode, n.uid, n.gid, owners));
    }
    (out, groups.into_values().filter(|g| g.len() > 1).collect())
}

fn line(kind: &Kind, mode: u32, uid: u64, gid: u64, owners: bool) -> String {
    let mode = if matches!(kind, Kind::Symlink(_)) {
        String::new()
    } else {
        format!(" mode={mode:o}")
    };
    let own = if owners {
        format!(" owner={uid}:{gid}")
    } else {
        String::new()
    };
    format!("{kind:?}{mode}{own}")
}

fn describe_dir(root: &Path, owners: bool) -> (BTreeMap<String, String>, BTreeSet<Vec<String>>) {
    fn walk(
        root: &Path,
        dir: &Path,
        owners: bool,
        out: &mut BTreeMap<String, String>,
        inodes: &mut BTreeMap<(u64, u64), Vec<String>>,
    ) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                Kind::Dir
            } else if ft.is_file() {
                let mut f = std::fs::File::open(&p).unwrap();
                let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = f.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    sha2::Digest::update(&mut hasher, &buf[..n]);
                }
                inodes
                    .entry((m.dev(), m.ino()))
                    .or_default()
                    .push(rel.clone());
                Kind::File {
                    size: m.len(),
                    sha: hex::encode(sha2::Digest::finalize(hasher)),
                }
            } else if ft.is_symlink() {
                Kind::Symlink(
                    std::fs::read_link(&p)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                )
            } else if ft.is_fifo() {
                Kind::Fifo
            } else if ft.is_char_device() {
                Kind::Char(m.rdev())
            } else if ft.is_block_device() {
                Kind::Block(m.rdev())
            } else {
                panic!("unexpected file type at {rel}");
            };
            out.insert(
                rel,
                line(
                    &kind,
                    m.mode() & 0o7777,
                    m.uid() as u64,
                    m.gid() as u64,
                    owners,
                ),
            );
            if ft.is_dir() {
                walk(root, &p, owners, out, inodes);
            }
        }
    }
    let mut out = BTreeMap::new();
    let mut inodes = BTreeMap::new();
    walk(root, root, owners, &mut out, &mut inodes);
    (
        out,
        inodes
            .into_values()
            .filter(|g| g.len() > 1)
            .map(|mut g| {
                g.sort();
                g
            })
            .collect(),
    )
}

fn expected(
    layers: &[LayerData],
    owners: bool,
    devices: bool,
) -> (BTreeMap<String, String>, BTreeSet<Vec<String>>) {
    let mut m = Model::default();
    for l in layers {
        match l {
            LayerData::Bytes(b) => m.apply(&b[..]),
            LayerData::File(p) => m.apply(std::io::BufReader::new(std::fs::File::open(p).unwrap())),
        }
    }
    let (lines, groups) = describe_model(&m, owners, devices);
    (
        lines,
        groups
            .into_iter()
            .map(|mut g| {
                g.sort();
                g
            })
            .collect(),
    )
}

enum LayerData {
    Bytes(Vec<u8>),
    File(PathBuf),
}

fn compare(who: Who, out: &Path, layers: &[LayerData], what: &str) {
    let root = who == Who::Root;
    let (want, want_groups) = expected(layers, root, root);
    let (got, got_groups) = describe_dir(out, root);
    for (p, w) in &want {
        assert_eq!(got.get(p), Some(w), "{what} as {who:?}: {p}");
    }
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        extra.is_empty(),
        "{what} as {who:?}: unexpected entries {extra:?}"
    );
    assert_eq!(
        got_groups, want_groups,
        "{what} as {who:?}: hardlink groups"
    );
}

fn rich_layers() -> Vec<Vec<Entry>> {
    let long = format!("opt/{}/{}", "d".repeat(80), "f".repeat(90));
    vec![
        vec![
            Entry::dir("bin", 0o755),
            Entry::file("bin/busybox", 0o755, vec![7u8; 5000]),
            Entry::hardlink("bin/ls", "bin/busybox"),
            Entry::symlink("bin/sh", "busybox"),
            Entry::file("bin/su", 0o4755, "setuid"),
            Entry::file("bin/wall", 0o2755, "setgid"),
            Entry::dir("etc", 0o755),
            Entry::file("etc/passwd", 0o644, "root:x:0:0::/root:/bin/sh\n"),
            Entry::file("etc/shadow", 0o640, "root:*:1::::::\n").owner(0, 42),
            Entry::dir("etc/d", 0o700),
            Entry::file("etc/d/inner", 0o600, "inner"),
            Entry::symlink("lib", "/usr/lib"),
            Entry::dir("home", 0o755),
            Entry::dir("home/user", 0o750).owner(1000, 1000),
            Entry::file("home/user/.profile", 0o644, "x").owner(1000, 1000),
            Entry::dir("opt", 0o755),
            Entry::dir(format!("opt/{}", "d".repeat(80)), 0o755),
            Entry::file(long, 0o644, "long path"),
            Entry::dir("opt/app", 0o755),
            Entry::file("opt/app/old", 0o644, "old"),
            Entry::file("opt/app/delete-me", 0o644, "bye"),
            Entry::dir("var", 0o755),
            Entry::dir("var/cache", 0o755),
            Entry::file("var/cache/a", 0o644, "a"),
            Entry::file("empty", 0o644, ""),
            Entry::Fifo {
                path: "fifo".into(),
                mode: 0o644,
            },
            Entry::file("sticky-dir-file", 0o1755, "t"),
        ],
        vec![
            Entry::dir("bin", 0o755),
            Entry::whiteout("bin/su"),
            Entry::dir("etc", 0o755),
            Entry::file("etc/d", 0o644, "dir became file"),
            Entry::dir("etc/passwd", 0o755),
            Entry::file("etc/passwd/now-a-dir", 0o644, "file became dir"),
            Entry::dir("opt", 0o755),
            Entry::dir("opt/app", 0o711),
            Entry::opaque("opt/app"),
            Entry::file("opt/app/new", 0o644, "new"),
            Entry::whiteout("var/cache"),
            Entry::file(
                "bin/busybox",
                0o755,
                "replaced: bin/ls keeps the old content",
            ),
            Entry::file("l2a", 0o644, "link in layer 2"),
            Entry::hardlink("l2b", "l2a"),
        ],
        vec![
            // Whiteout first, then the same name: the entry of this layer wins.
            Entry::whiteout("empty"),
            Entry::file("empty", 0o600, "back"),
            // Entries before the opaque marker in the same layer survive it.
            Entry::dir("opt", 0o755),
            Entry::dir("opt/app", 0o755),
            Entry::file("opt/app/kept", 0o644, "kept"),
            Entry::opaque("opt/app"),
            Entry::whiteout("lib"),
        ],
    ]
}

fn image(tags: &[&str], layers: &[Vec<u8>]) -> ImageSpec {
    ImageSpec {
        tags: tags.iter().map(|s| s.to_string()).collect(),
        config: ConfigSpec {
            cmd: Some(vec!["/bin/sh".into()]),
            ..Default::default()
        },
        layers: layers
            .iter()
            .map(|l| LayerSpec::bytes(l.clone(), "layer"))
            .collect(),
        ..Default::default()
    }
}

fn tars(layers: &[Vec<Entry>]) -> Vec<Vec<u8>> {
    layers
        .iter()
        .map(|l| rcrun_imagebuild::layer_tar(l).unwrap())
        .collect()
}

fn unpack_ok(who: Who, store: &Path, image: &Path, out: &Path, extra: &[&str]) -> String {
    let o = unpack(who, store, image, out, extra);
    assert_eq!(
        o.status.code(),
        Some(0),
        "unpack {} as {who:?}: {}",
        image.display(),
        text(&o)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn formats_match_the_model() {
    let layers = tars(&rich_layers());
    let data: Vec<LayerData> = layers.iter().map(|b| LayerData::Bytes(b.clone())).collect();
    let cases: Vec<(&str, Format, Compression, bool)> = vec![
        ("legacy", Format::DockerLegacy, Compression::None, false),
        (
            "docker-archive",
            Format::DockerArchive,
            Compression::None,
            false,
        ),
        ("oci-gzip", Format::OciArchive, Compression::Gzip, false),
        ("oci-zstd", Format::OciArchive, Compression::Zstd, false),
        (
            "docker25-null-manifests",
            Format::Docker25,
            Compression::Gzip,
            true,
        ),
    ];
    for who in modes("formats_match_the_model") {
        for (name, format, compression, null) in &cases {
            let dir = case_dir(&format!("fmt-{name}"), who);
            let img = dir.join("image.tar");
            let opts = WriteOptions {
                compression: *compression,
                docker25_null_manifests: *null,
                ..Default::default()
            };
            write_archive_to_file(&img, &[image(&["rich:1"], &layers)], *format, &opts).unwrap();
            publish(&img);
            let store = dir.join("store");
            unpack_ok(who, &store, &img, &dir.join("out"), &[]);
            compare(who, &dir.join("out"), &data, name);
            let _ = rcrun::sys::fs::remove_tree(&dir);
        }
    }
}

#[test]
fn multi_image_archive_with_ref() {
    let a = tars(&[vec![Entry::file("a", 0o644, "image a")]]);
    let b = tars(&[
        vec![
            Entry::dir("shared", 0o755),
            Entry::file("shared/b", 0o644, "image b"),
        ],
        vec![Entry::whiteout("shared/b"), Entry::file("c", 0o600, "c")],
    ]);
    for who in modes("multi_image_archive_with_ref") {
        let dir = case_dir("multi", who);
        let img = dir.join("image.tar");
        write_archive_to_file(
            &img,
            &[image(&["multi/a:1"], &a), image(&["multi/b:2"], &b)],
            Format::DockerLegacy,
            &WriteOptions::default(),
        )
        .unwrap();
        publish(&img);
        let store = dir.join("store");
        let o = unpack(who, &store, &img, &dir.join("none"), &[]);
        assert_eq!(o.status.code(), Some(125), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("--ref"),
            "{}",
            text(&o)
        );
        unpack_ok(who, &store, &img, &dir.join("a"), &["--ref", "multi/a:1"]);
        compare(
            who,
            &dir.join("a"),
            &[LayerData::Bytes(a[0].clone())],
            "multi --ref a",
        );
        unpack_ok(who, &store, &img, &dir.join("b"), &["--ref", "@1"]);
        let bd: Vec<_> = b.iter().map(|x| LayerData::Bytes(x.clone())).collect();
        compare(who, &dir.join("b"), &bd, "multi --ref @1");
        let _ = rcrun::sys::fs::remove_tree(&dir);
    }
}

/// 120 layers, each adding a file; every tenth deletes an earlier one. `unpack` extracts straight
/// into DIR (a scratch store inside it, moved into place): the layer store is left as it was (no
/// layer, nothing in tmp/), DIR holds nothing but the image, a second unpack gives the same tree,
/// and concurrent unpacks of the same image all succeed and leave no scratch behind.
#[test]
fn many_layers_reuse_and_concurrency() {
    let mut layers = vec![vec![
        Entry::dir("f", 0o755),
        Entry::file("f/000", 0o644, "0"),
    ]];
    for i in 1..120 {
        let mut l = vec![Entry::file(format!("f/{i:03}"), 0o644, format!("{i}"))];
        if i % 10 == 0 {
            l.push(Entry::whiteout(format!("f/{:03}", i - 5)));
        }
        layers.push(l);
    }
    let layers = tars(&layers);
    let data: Vec<_> = layers.iter().map(|x| LayerData::Bytes(x.clone())).collect();
    for who in modes("many_layers_reuse_and_concurrency") {
        let dir = case_dir("many", who);
        let img = dir.join("image.tar");
        write_archive_to_file(
            &img,
            &[image(&["many:120"], &layers)],
            Format::OciArchive,
            &WriteOptions {
                compression: Compression::Gzip,
                ..Default::default()
            },
        )
        .unwrap();
        publish(&img);
        let store = dir.join("store");
        let msg = unpack_ok(who, &store, &img, &dir.join("out1"), &[]);
        assert!(
            msg.contains("120 layer(s) extracted straight into it"),
            "{msg}"
        );
        compare(who, &dir.join("out1"), &data, "120 layers");
        assert_no_scratch(&dir.join("out1"));
        assert_eq!(
            store_layers(&store),
            Vec::<String>::new(),
            "unpack filled the store"
        );
        assert_eq!(list(&store.join("tmp")), Vec::<String>::new());
        let msg = unpack_ok(who, &store, &img, &dir.join("out2"), &[]);
        assert!(msg.contains("120 layer(s) extracted"), "{msg}");
        compare(who, &dir.join("out2"), &data, "120 layers, again");

        // Concurrency: four unpacks at once on an empty store.
        let store2 = dir.join("store2");
        let children: Vec<_> = (0..4)
            .map(|k| {
                let out = dir.join(format!("c{k}"));
                rcrun_cmd(
                    who,
                    &[
                        os("--root"),
                        store2.as_os_str(),
                        os("unpack"),
                        img.as_os_str(),
                        out.as_os_str(),
                    ],
                )
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
            })
            .collect();
        for c in children {
            let o = c.wait_with_output().unwrap();
            assert_eq!(o.status.code(), Some(0), "concurrent unpack: {}", text(&o));
        }
        assert_eq!(store_layers(&store2), Vec::<String>::new());
        assert_eq!(list(&store2.join("tmp")), Vec::<String>::new());
        for k in 0..4 {
            compare(who, &dir.join(format!("c{k}")), &data, "concurrent unpack");
            assert_no_scratch(&dir.join(format!("c{k}")));
        }
        let _ = rcrun::sys::fs::remove_tree(&dir);
    }
}

/// No `.rcrun-unpack-*` scratch store left in an unpacked DIR.
fn assert_no_scratch(dir: &Path) {
    let left: Vec<String> = list(dir)
        .into_iter()
        .filter(|n| n.starts_with(".rcrun-unpack-"))
        .collect();
    assert_eq!(
        left,
        Vec::<String>::new(),
        "scratch left in {}",
        dir.display()
    );
}

/// The layers of a real archive, read independently of rcrun (manifest.json or index.json).
fn fixture_layers(archive: &Path, dest: &Path) -> Vec<LayerData> {
    let mut members: BTreeMap<String, (Option<Vec<u8>>, Option<String>)> = BTreeMap::new();
    let mut a = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = clean(&e.path_bytes());
        match e.header().entry_type() {
            tar::EntryType::Symlink => {
                let t = String::from_utf8_lossy(&e.link_name_bytes().unwrap()).into_owned();
                members.insert(name, (None, Some(t)));
            }
            tar::EntryType::Regular => {
                let mut v = Vec::new();
                e.read_to_end(&mut v).unwrap();
                members.insert(name, (Some(v), None));
            }
            _ => {}
        }
    }
    let get = |name: &str| -> Vec<u8> {
        let mut cur = name.to_string();
        for _ in 0..8 {
            match members
                .get(&cur)
                .unwrap_or_else(|| panic!("fixture lacks {cur}"))
            {
                (Some(v), _) => return v.clone(),
                (_, Some(t)) => {
                    let base = parent(&cur).to_string();
                    let mut parts: Vec<&str> = base.split('/').filter(|s| !s.is_empty()).collect();
                    for c in t.split('/') {
                        match c {
                            ".." => {
                                parts.pop();
                            }
                            "" | "." => {}
                            c => parts.push(c),
                        }
                    }
                    cur = parts.join("/");
                }
                _ => unreachable!(),
            }
        }
        panic!("symlink loop in fixture");
    };
    let layer_names: Vec<String> = if members.contains_key("manifest.json") {
        let m: serde_json::Value = serde_json::from_slice(&get("manifest.json")).unwrap();
        m[0]["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect()
    } else {
        let idx: serde_json::Value = serde_json::from_slice(&get("index.json")).unwrap();
        let mut d = idx["manifests"][0]["digest"].as_str().unwrap().to_string();
        loop {
            let doc: serde_json::Value =
                serde_json::from_slice(&get(&format!("blobs/sha256/{}", &d[7..]))).unwrap();
            if let Some(ms) = doc["manifests"].as_array() {
                d = ms[0]["digest"].as_str().unwrap().to_string();
                continue;
            }
            break doc["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| format!("blobs/sha256/{}", &l["digest"].as_str().unwrap()[7..]))
                .collect();
        }
    };
    layer_names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let raw = get(n);
            let mut plain = Vec::new();
            match raw.get(..4) {
                Some([0x1f, 0x8b, ..]) => {
                    flate2::read::GzDecoder::new(&raw[..])
                        .read_to_end(&mut plain)
                        .unwrap();
                }
                Some([0x28, 0xb5, 0x2f, 0xfd]) => {
                    plain = zstd::decode_all(&raw[..]).unwrap();
                }
                _ => plain = raw,
            }
            let p = dest.join(format!("fixture-layer-{i}.tar"));
            std::fs::write(&p, plain).unwrap();
            LayerData::File(p)
        })
        .collect()
}

#[test]
fn shared_fixtures_match_the_model() {
    // `RCRUN_FIXTURES` for checkouts that do not sit next to `shared/` (e.g. git worktrees).
    let fixtures = std::env::var_os("RCRUN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    if !fixtures.is_dir() {
        return skip(&format!("fixtures not found at {}", fixtures.display()));
    }
    for who in modes("shared_fixtures_match_the_model") {
        for f in [
            "busybox.docker-save.tar",
            "busybox.podman-docker-archive.tar",
            "busybox.oci-archive.tar",
            "layered.oci-archive.tar",
        ] {
            let dir = case_dir(&format!("fixture-{f}"), who);
            let img = dir.join("image.tar");
            std::fs::copy(fixtures.join(f), &img).unwrap();
            publish(&img);
            let layers = fixture_layers(&img, &dir);
            unpack_ok(who, &dir.join("store"), &img, &dir.join("out"), &[]);
            compare(who, &dir.join("out"), &layers, f);
            let _ = rcrun::sys::fs::remove_tree(&dir);
        }
    }
}

/// A deterministic, incompressible-ish byte stream (xorshift), so a 200 MB file needs no RAM.
struct Noise {
    state: u64,
    left: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize / 8 * 8;
        let n = if n == 0 {
            (self.left as usize).min(buf.len())
        } else {
            n
        };
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let b = self.state.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

const BIG: u64 = 200 << 20;

/// A layer tar with one 200 MB file, streamed to disk.
fn big_layer(path: &Path) {
    let f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut b = tar::Builder::new(f);
    let mut h = tar::Header::new_ustar();
    h.set_path("big").unwrap();
    h.set_size(BIG);
    (h.set_uid(0), h.set_gid(0), h.set_mtime(0));
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append(
        &h,
        Noise {
            state: 0x9e3779b97f4a7c15,
            left: BIG,
        },
    )
    .unwrap();
    let mut small = tar::Header::new_ustar();
    small.set_size(5);
    (small.set_uid(0), small.set_gid(0), small.set_mtime(0));
    small.set_mode(0o600);
    small.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut small, "small", &b"small"[..]).unwrap();
    b.into_inner().unwrap();
}

/// A 200 MB layer unpacks correctly; an unpack killed midway (SIGKILL) leaves only its scratch
/// store in DIR (no layer in it looks complete), and the next unpack into the same DIR reclaims
/// it and succeeds.
#[test]
fn big_layer_and_killed_extraction() {
    let shared = staging().join("big-archive");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let layer = shared.join("big-layer.tar");
    big_layer(&layer);
    let img = shared.join("image.tar");
    write_archive_to_file(
        &img,
        &[ImageSpec {
            tags: vec!["big:1".into()],
            layers: vec![LayerSpec::file(&layer, "big")],
            ..Default::default()
        }],
        Format::DockerLegacy,
        &WriteOptions::default(),
    )
    .unwrap();
    publish(&img);
    let data = [LayerData::File(layer.clone())];
    for who in modes("big_layer_and_killed_extraction") {
        let dir = case_dir("big", who);
        let store = dir.join("store");
        // Kill it mid-extraction: run rcrun itself as the user (no runuser in between, so the pid
        // we kill is rcrun's), poll until its temp dir holds part of the big file.
        let mut cmd = std::process::Command::new(rcrun_bin());
        cmd.args([
            os("--root"),
            store.as_os_str(),
            os("unpack"),
            img.as_os_str(),
            dir.join("killed").as_os_str(),
        ]);
        if who == Who::User && nix::unistd::geteuid().is_root() {
            use std::os::unix::process::CommandExt;
            let u = test_user().unwrap();
            cmd.uid(u.uid.as_raw())
                .gid(u.gid.as_raw())
                .env("HOME", &dir);
        }
        let mut child = cmd.stderr(std::process::Stdio::null()).spawn().unwrap();
        let scratch = dir
            .join("killed")
            .join(format!(".rcrun-unpack-{}", child.id()));
        let mut killed = false;
        for _ in 0..60_000 {
            let partial = list(&scratch.join("tmp")).into_iter().any(|t| {
                std::fs::metadata(scratch.join("tmp").join(&t).join("fs/big"))
                    .is_ok_and(|m| m.len() > 8 << 20)
            });
            if partial {
                assert!(child.try_wait().unwrap().is_none());
                child.kill().unwrap();
                killed = true;
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let _ = child.wait();
        if !killed {
            skip("the extraction finished before it could be killed: kill check not done");
        } else {
            assert_eq!(
                store_layers(&scratch),
                Vec::<String>::new(),
                "a killed extraction looks complete"
            );
            assert_eq!(
                list(&scratch.join("tmp")).len(),
                1,
                "the killed run's temp dir"
            );
            assert_eq!(
                list(&dir.join("killed")).len(),
                1,
                "only the scratch store in DIR"
            );
            // The next unpack into the same DIR reclaims the killed one's scratch store.
            let msg = unpack_ok(who, &store, &img, &dir.join("killed"), &[]);
            assert!(msg.contains("1 layer(s) extracted"), "{msg}");
            assert_no_scratch(&dir.join("killed"));
            compare(
                who,
                &dir.join("killed"),
                &data,
                "200 MB layer, after a killed unpack",
            );
        }
        let msg = unpack_ok(who, &store, &img, &dir.join("out"), &[]);
        assert!(msg.contains("1 layer(s) extracted"), "{msg}");
        assert_no_scratch(&dir.join("out"));
        assert_eq!(store_layers(&store), Vec::<String>::new());
        compare(who, &dir.join("out"), &data, "200 MB layer");
        let _ = rcrun::sys::fs::remove_tree(&dir);
    }
    let _ = rcrun::sys::fs::remove_tree(&shared);
}

/// File capabilities survive, as root: `security.capability` from the layer is set after the
/// owner both in the store layer and in the unpacked tree (chown(2) clears it).
#[test]
fn file_capabilities_survive_unpack_as_root() {
    if !is_root() {
        return skip("file capabilities can only be set by root");
    }
    // VFS_CAP_REVISION_2 | effective; permitted = CAP_NET_RAW (bit 13).
    let cap: Vec<u8> = vec![
        0x01, 0, 0, 0x02, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let layers = tars(&[vec![Entry::file("bin/ping", 0o755, "ping")
        .owner(0, 0)
        .xattr("security.capability", cap.clone())]]);
    let dir = case_dir("file-capabilities", Who::Root);
    let img = dir.join("image.tar");
    write_archive_to_file(
        &img,
        &[image(&["caps:1"], &layers)],
        Format::DockerLegacy,
        &WriteOptions::default(),
    )
    .unwrap();
    publish(&img);
    unpack_ok(Who::Root, &dir.join("store"), &img, &dir.join("out"), &[]);
    let f = std::fs::File::open(dir.join("out/bin/ping")).unwrap();
    use std::os::fd::AsFd;
    let got = rcrun::sys::fs::fgetxattr(f.as_fd(), "security.capability").unwrap();
    assert_eq!(
        got.as_deref(),
        Some(&cap[..]),
        "security.capability lost in the unpacked tree"
    );
    let _ = rcrun::sys::fs::remove_tree(&dir);
}
