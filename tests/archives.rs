//! Archives as people make them (issue 20): `docker save IMG | gzip` (and zstd, xz, bzip2) run
//! from a file and from stdin, cold and warm, as root and as a plain user; garbage and broken
//! compressed streams get a one-line message with nothing undecoded in it, exit 125, and leave
//! nothing behind in the store.

mod common;
use common::*;

use rcrun_imagebuild::{
    busybox_entries, layer_tar, write_archive_to_file, ConfigSpec, Entry, Format, ImageSpec,
    LayerSpec, WriteOptions, BUSYBOX_PATH,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The four compressions `docker load` takes, as their usual command-line tools write them.
const KINDS: [&str; 4] = ["gzip", "zstd", "xz", "bzip2"];

fn compress(kind: &str, data: &[u8]) -> Vec<u8> {
    match kind {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "zstd" => zstd::encode_all(data, 3).unwrap(),
        "xz" => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "bzip2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        other => panic!("{other}"),
    }
}

/// A busybox image saved as `format`, with a marker file naming the format.
fn saved(format: Format, name: &str) -> Vec<u8> {
    let mut entries = busybox_entries(Path::new(BUSYBOX_PATH))
        .unwrap_or_else(|e| panic!("{e} (install busybox-static: .ci/run does)"));
    entries.push(Entry::file("marker", 0o644, format!("saved as {name}\n")));
    let spec = ImageSpec {
        tags: vec![format!("archives/{name}:latest")],
        config: ConfigSpec {
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        },
        layers: vec![LayerSpec::bytes(layer_tar(&entries).unwrap(), "busybox")],
        ..Default::default()
    };
    let path = staging().join(format!("archives-{name}.tar"));
    write_archive_to_file(&path, &[spec], format, &WriteOptions::default()).unwrap();
    std::fs::read(&path).unwrap()
}

fn file(name: &str, bytes: &[u8]) -> PathBuf {
    let p = staging().join(name);
    std::fs::write(&p, bytes).unwrap();
    publish(&p);
    p
}

fn run_cmd(who: Who, store: &Path, image: &str, args: &[&str]) -> std::process::Command {
    let mut all = vec![os("--root"), store.as_os_str(), os("run"), os(image)];
    all.extend(args.iter().map(|a| os(a)));
    let mut c = rcrun_cmd(who, &all);
    c.stdin(Stdio::null());
    c
}

/// `rcrun --root STORE ARGS…` as `who`, stdin closed, its output collected.
fn rcrun_out(who: Who, store: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec![os("--root"), store.as_os_str()];
    all.extend(args.iter().map(|a| os(a)));
    rcrun_cmd(who, &all).stdin(Stdio::null()).output().unwrap()
}

/// Whatever went wrong, the message is text a terminal shows as it is: valid UTF-8, no control
/// character but the line ends, one error line.
fn assert_clean_message(stderr: &[u8], what: &str) {
    let text = std::str::from_utf8(stderr)
        .unwrap_or_else(|_| panic!("{what}: stderr is not UTF-8: {stderr:?}"));
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{what}: control characters in {text:?}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("rcrun: error:"))
            .count(),
        1,
        "{what}: {text}"
    );
}

#[test]
fn compressed_saves_run_from_a_file_and_from_stdin() {
    let formats = [
        (Format::DockerLegacy, "legacy"),
        (Format::Docker25, "docker25"),
        (Format::OciArchive, "oci"),
    ];
    for who in modes("compressed_saves") {
        let store = case_dir("archives-store", who);
        for (format, fname) in formats {
            let plain = saved(format, fname);
            for kind in KINDS {
                let path = file(
                    &format!("archives-{fname}.tar.{kind}"),
                    &compress(kind, &plain),
                );
                let img = path.to_str().unwrap();
                // Cold (indexed by a decompressing pass, the layer extracted), then warm (the
                // image cache vouched for by the file's sha256, the layer in the store).
                for pass in ["cold", "warm"] {
                    let o = run_cmd(who, &store, img, &["cat", "/marker"])
                        .output()
                        .unwrap();
                    assert!(
                        o.status.success() && o.stdout == format!("saved as {fname}\n").as_bytes(),
                        "{who:?} {fname}.{kind} {pass}: {}",
                        text(&o)
                    );
                }
            }
            // From stdin: spooled as it came (compressed), then read like the file.
            for kind in ["gzip", "xz"] {
                let data = compress(kind, &plain);
                let mut child = run_cmd(who, &store, "-", &["cat", "/marker"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut stdin = child.stdin.take().unwrap();
                let writer = std::thread::spawn(move || {
                    let _ = stdin.write_all(&data);
                });
                let o = child.wait_with_output().unwrap();
                writer.join().unwrap();
                assert!(
                    o.status.success() && o.stdout == format!("saved as {fname}\n").as_bytes(),
                    "{who:?} {fname}.{kind} from stdin: {}",
                    text(&o)
                );
            }
        }
        let leftovers = list(&store.join("tmp"));
        assert!(
            leftovers.iter().all(|n| !n.starts_with("stdin-")),
            "{who:?}: stdin spools left in the store: {leftovers:?}"
        );
    }
}

#[test]
fn the_cold_start_narrates_the_compression() {
    for who in modes("cold_start_narrates") {
        let store = case_dir("archives-explain", who);
        let plain = saved(Format::DockerLegacy, "explained");
        let path = file("archives-explained.tar.zst", &compress("zstd", &plain));
        let o = rcrun_out(
            who,
            &store,
            &["run", "--explain", path.to_str().unwrap(), "true"],
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && err.contains("zstd-compressed"),
            "{who:?}: {}",
            text(&o)
        );
    }
}

#[test]
fn garbage_and_broken_streams_get_a_clean_message_and_leave_nothing() {
    let plain = saved(Format::DockerLegacy, "broken");
    let gz = compress("gzip", &plain);
    let xz = compress("xz", &plain);
    // Bytes that are neither tar nor a known compression, with escape sequences and invalid
    // UTF-8 in them; a tar header whose numeric fields are binary (the tar crate's message
    // quotes them); each compression's magic followed by garbage; a truncated stream; a member
    // name carrying a terminal escape.
    let mut random = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        random.push((x >> 24) as u8);
    }
    // The second member's size field made binary, its checksum made right again, so that the
    // tar reader itself reports it (quoting the field's bytes).
    let mut binary_header = plain.clone();
    let first_size = octal(&plain[124..136]);
    let second = 512 + first_size.div_ceil(512) * 512;
    binary_header[second + 124..second + 136]
        .copy_from_slice(b"\xff\xfe\x1b[31m\x00\x9b\x07\x01\x02");
    fix_checksum(&mut binary_header[second..second + 512]);
    let escape_name =
        manifest_only(r#"[{"Config":"\u001b]0;pwn\u0007.json","RepoTags":["x:1"],"Layers":[]}]"#);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random.clone()),
        ("binary tar header", binary_header),
        ("a manifest naming a member with an escape", escape_name),
        (
            "gzip magic then garbage",
            [&[0x1f, 0x8b][..], &random[..]].concat(),
        ),
        (
            "zstd magic then garbage",
            [&[0x28, 0xb5, 0x2f, 0xfd][..], &random[..]].concat(),
        ),
        (
            "xz magic then garbage",
            [&[0xfd, b'7', b'z', b'X', b'Z', 0][..], &random[..]].concat(),
        ),
        ("truncated gzip", gz[..gz.len() / 2].to_vec()),
        ("truncated xz", xz[..xz.len() - 100].to_vec()),
        ("gzip with a corrupt middle", {
            let mut g = gz.clone();
            let mid = g.len() / 2;
            for b in &mut g[mid..mid + 64] {
                *b ^= 0x5a;
            }
            g
        }),
    ];
    for who in modes("garbage") {
        let store = case_dir("archives-garbage", who);
        for (i, (case, bytes)) in cases.iter().enumerate() {
            let path = file(&format!("archives-garbage-{i}.tar"), bytes);
            let o = run_cmd(who, &store, path.to_str().unwrap(), &["true"])
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(125), "{who:?} {case}: {}", text(&o));
            assert_clean_message(&o.stderr, case);
            let msg = String::from_utf8_lossy(&o.stderr);
            assert!(
                msg.contains(path.to_str().unwrap()),
                "{case}: names the file: {msg}"
            );
        }
        let layers = store.join("layers");
        let made: Vec<String> = list(&layers)
            .iter()
            .flat_map(|owners| list(&layers.join(owners)))
            .collect();
        assert!(
            made.is_empty(),
            "{who:?}: layers stored from broken archives: {made:?}"
        );
        let tmp: Vec<String> = list(&store.join("tmp"));
        assert!(
            tmp.iter().all(|n| n == "stdin" || n.starts_with('.')) || tmp.is_empty(),
            "{who:?}: left in the store's tmp: {tmp:?}"
        );
    }
}

fn octal(field: &[u8]) -> usize {
    let digits: String = field
        .iter()
        .map(|&b| b as char)
        .filter(|c| c.is_digit(8))
        .collect();
    usize::from_str_radix(&digits, 8).unwrap()
}

/// POSIX ustar: the checksum is the sum of the header's bytes with its own field as spaces.
fn fix_checksum(header: &mut [u8]) {
    header[148..156].fill(b' ');
    let sum: u32 = header.iter().map(|&b| b as u32).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// Appends a regular file (mode 0644) to a tar being built.
fn add_file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, data).unwrap();
}

/// A tar holding only a manifest.json with these bytes.
fn manifest_only(manifest: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    add_file(&mut b, "manifest.json", manifest.as_bytes());
    b.into_inner().unwrap()
}

/// Every member of a tar: its header, its name (without a leading `./`) and its bytes.
fn members(tar_bytes: &[u8]) -> Vec<(tar::Header, String, Vec<u8>)> {
    let mut input = tar::Archive::new(tar_bytes);
    input
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let name = path.trim_start_matches("./").to_string();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (e.header().clone(), name, data)
        })
        .collect()
}

/// A tar of `members`, each under its name with its header's size set to its bytes.
fn tar_of(members: Vec<(tar::Header, String, Vec<u8>)>) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    for (mut header, name, data) in members {
        header.set_size(data.len() as u64);
        out.append_data(&mut header, name, &data[..]).unwrap();
    }
    out.into_inner().unwrap()
}

/// `tar` with the member `name` passed through `edit`.
fn edit_member(tar_bytes: &[u8], name: &str, edit: impl Fn(Vec<u8>) -> Vec<u8>) -> Vec<u8> {
    let edited = members(tar_bytes)
        .into_iter()
        .map(|(h, n, d)| {
            let d = if n == name { edit(d) } else { d };
            (h, n, d)
        })
        .collect();
    tar_of(edited)
}

fn member_names(tar_bytes: &[u8]) -> Vec<String> {
    members(tar_bytes).into_iter().map(|(_, n, _)| n).collect()
}

fn member(tar_bytes: &[u8], name: &str) -> Vec<u8> {
    members(tar_bytes)
        .into_iter()
        .find_map(|(_, n, d)| (n == name).then_some(d))
        .unwrap_or_else(|| panic!("no member {name}"))
}

/// Two busybox images in one save, each with its own marker.
fn two_images(format: Format, tags: [&str; 2], name: &str) -> PathBuf {
    let specs: Vec<ImageSpec> = tags
        .iter()
        .enumerate()
        .map(|(i, tag)| {
            let mut entries = busybox_entries(Path::new(BUSYBOX_PATH)).unwrap();
            entries.push(Entry::file("marker", 0o644, format!("image {i}\n")));
            ImageSpec {
                tags: vec![tag.to_string()],
                config: ConfigSpec {
                    env: vec!["PATH=/bin".into()],
                    ..Default::default()
                },
                layers: vec![LayerSpec::bytes(layer_tar(&entries).unwrap(), "busybox")],
                ..Default::default()
            }
        })
        .collect();
    let path = staging().join(format!("archives-{name}.tar"));
    write_archive_to_file(&path, &specs, format, &WriteOptions::default()).unwrap();
    publish(&path);
    path
}

fn run_ref(who: Who, store: &Path, image: &Path, reference: &str) -> std::process::Output {
    let image = image.to_str().unwrap();
    rcrun_out(
        who,
        store,
        &["run", "--ref", reference, image, "cat", "/marker"],
    )
}

/// References as Docker's grammar reads them; a name an index lists twice; a bad reference.
#[test]
fn references_are_read_as_docker_reads_them() {
    let img = two_images(
        Format::DockerLegacy,
        ["test_image_1", "lab/other:2"],
        "refs",
    );
    let dup = two_images(Format::OciArchive, ["dup:1.0.0", "dup:1.0.0"], "dup");
    let names = member_names(&std::fs::read(&img).unwrap());
    let config_hex = names
        .iter()
        .filter_map(|n| n.strip_suffix(".json"))
        .find(|n| n.len() == 64)
        .expect("a legacy save names its configs <hex>.json")
        .to_string();
    for who in modes("references") {
        let store = case_dir("archives-refs", who);
        for (wanted, marker) in [
            ("index.docker.io/library/test_image_1:latest", "image 0\n"),
            ("docker.io/library/test_image_1", "image 0\n"),
            ("test_image_1:latest", "image 0\n"),
            ("docker.io/lab/other:2", "image 1\n"),
            ("index.docker.io/lab/other:2", "image 1\n"),
        ] {
            let o = run_ref(who, &store, &img, wanted);
            assert!(
                o.status.success() && o.stdout == marker.as_bytes(),
                "{who:?} --ref {wanted}: {}",
                text(&o)
            );
        }
        // By image ID (the config's digest), whole or its first 12 digits.
        let o = run_ref(who, &store, &img, &format!("sha256:{config_hex}"));
        assert!(o.status.success(), "{who:?} by ID: {}", text(&o));
        let o = run_ref(who, &store, &img, &config_hex[..12]);
        assert!(o.status.success(), "{who:?} by short ID: {}", text(&o));
        for (wanted, says) in [
            ("Test_Image_1", "must be lowercase"),
            ("test_image_1:", "invalid tag"),
            ("test_image_1:2", "no image matches"),
            ("quay.io/test_image_1", "no image matches"),
        ] {
            let o = run_ref(who, &store, &img, wanted);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                o.status.code() == Some(125) && err.contains(says),
                "{who:?} --ref {wanted}: {}",
                text(&o)
            );
        }
        // The same name twice in an index: the first, with a warning that says so.
        let o = run_ref(who, &store, &dup, "dup:1.0.0");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success()
                && o.stdout == b"image 0\n"
                && err.contains("rcrun: warning: --ref dup:1.0.0 matches 2 images")
                && err.contains("using @0"),
            "{who:?} duplicate name: {}",
            text(&o)
        );
        // inspect without --ref shows every image.
        let o = rcrun_out(who, &store, &["inspect", img.to_str().unwrap()]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && out.contains("@0 test_image_1") && out.contains("@1 lab/other:2"),
            "{who:?} inspect of two images: {}",
            text(&o)
        );
        let o = rcrun_out(who, &store, &["inspect", "--json", img.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v.as_array().map(Vec::len), Some(2), "{}", text(&o));
    }
}

/// go-containerregistry's `source_image_with_empty_layer_history.tar`: a legacy save whose
/// config was edited after the save. Accepted with a warning naming the real digest; where the
/// name is a content address (Docker 25's blobs), refused.
#[test]
fn a_legacy_config_edited_after_the_save() {
    let edit = |json: Vec<u8>| {
        let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        v["comment"] = serde_json::json!("edited after docker save");
        serde_json::to_vec(&v).unwrap()
    };
    let legacy = saved(Format::DockerLegacy, "renamed");
    let config = member_names(&legacy)
        .into_iter()
        .find(|n| n.ends_with(".json") && n.len() == 69)
        .unwrap();
    let legacy = file("archives-renamed.tar", &edit_member(&legacy, &config, edit));
    let d25 = saved(Format::Docker25, "renamed25");
    let manifest: serde_json::Value =
        serde_json::from_slice(&member(&d25, "manifest.json")).unwrap();
    let config25 = manifest[0]["Config"].as_str().unwrap().to_string();
    let d25 = file(
        "archives-renamed25.tar",
        &edit_member(&d25, &config25, edit),
    );
    for who in modes("edited_config") {
        let store = case_dir("archives-edited", who);
        let o = run_cmd(who, &store, legacy.to_str().unwrap(), &["cat", "/marker"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success()
                && o.stdout == b"saved as renamed\n"
                && err.contains("rcrun: warning:")
                && err.contains(&format!("{config} is named after sha256:"))
                && err.contains("but its content is sha256:"),
            "{who:?} legacy: {}",
            text(&o)
        );
        let o = run_cmd(who, &store, d25.to_str().unwrap(), &["true"])
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(125),
            "{who:?} docker 25: {}",
            text(&o)
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("digest"),
            "{}",
            text(&o)
        );
    }
}

/// A layer both cut short (the tar reader fails "failed to read entire block") and not what the
/// config's diff_id promises: the digest explains the failure, so that is what every run says,
/// however far the reading thread had got when extraction gave up.
#[test]
fn a_broken_layer_fails_the_same_way_every_time() {
    // 16 MiB of incompressible bytes in one file, the tar cut in the middle of it.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let big: Vec<u8> = (0..16 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    let whole = layer_tar(&[Entry::file("big", 0o644, big)]).unwrap();
    let cut = whole[..whole.len() / 2].to_vec();
    let spec = ImageSpec {
        tags: vec!["broken:1".into()],
        layers: vec![LayerSpec::bytes(cut, "cut")],
        ..Default::default()
    };
    let path = staging().join("archives-broken-layer.tar");
    let opts = WriteOptions {
        compression: rcrun_imagebuild::Compression::Gzip,
        tamper: vec![rcrun_imagebuild::Tamper::WrongDiffId { image: 0, layer: 0 }],
        ..Default::default()
    };
    write_archive_to_file(&path, &[spec], Format::OciArchive, &opts).unwrap();
    publish(&path);
    for who in modes("broken_layer") {
        let dir = case_dir("archives-broken", who);
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        for i in 0..16 {
            let o = unpack(
                who,
                &dir.join("store"),
                &path,
                &dir.join(format!("out{i}")),
                &[],
            );
            assert_eq!(o.status.code(), Some(125), "{who:?}: {}", text(&o));
            let first = String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            *seen.entry(first).or_default() += 1;
        }
        assert_eq!(seen.len(), 1, "{who:?}: the outcome varies: {seen:#?}");
        let (msg, _) = seen.into_iter().next().unwrap();
        assert!(msg.contains("diff_id mismatch"), "{who:?}: {msg}");
    }
}

/// An OCI layout `tar` with one more index entry: a manifest whose config is `config_type`
/// (and whose `artifactType` is `artifact_type`), named `name`.
fn with_artifact(
    oci_tar: &[u8],
    name: &str,
    config_type: &str,
    artifact_type: Option<&str>,
    keep_images: bool,
) -> Vec<u8> {
    use sha2::Digest as _;
    let hex = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
    let config = br#"{"name":"chart","version":"1.0.0"}"#.to_vec();
    let layer = b"not a tar: a chart".to_vec();
    let mut manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": config_type, "digest": format!("sha256:{}", hex(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                    "digest": format!("sha256:{}", hex(&layer)), "size": layer.len()}],
    });
    if let Some(t) = artifact_type {
        manifest["artifactType"] = serde_json::json!(t);
    }
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let entry = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{}", hex(&manifest)), "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": name},
    });
    let mut all = members(oci_tar);
    for (_, name, data) in &mut all {
        if name == "index.json" {
            let mut v: serde_json::Value = serde_json::from_slice(data).unwrap();
            let list = v["manifests"].as_array_mut().unwrap();
            if !keep_images {
                list.clear();
            }
            list.push(entry.clone());
            *data = serde_json::to_vec(&v).unwrap();
        }
    }
    for blob in [config, layer, manifest] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        all.push((h, format!("blobs/sha256/{}", hex(&blob)), blob));
    }
    tar_of(all)
}

/// A Helm chart or an SBOM in an OCI layout is an artifact, not an image: said so, and listed
/// apart; an archive with one image and artifacts runs the image.
#[test]
fn oci_artifacts_are_named_as_such() {
    let oci = saved(Format::OciArchive, "with-artifacts");
    let helm = "application/vnd.cncf.helm.config.v1+json";
    let mixed = file(
        "archives-mixed.tar",
        &with_artifact(&oci, "chart:1", helm, None, true),
    );
    let sbom_only = file(
        "archives-sbom.tar",
        &with_artifact(
            &oci,
            "sbom:1",
            "application/vnd.oci.empty.v1+json",
            Some("application/spdx+json"),
            false,
        ),
    );
    for who in modes("artifacts") {
        let store = case_dir("archives-artifacts", who);
        let o = run_cmd(who, &store, mixed.to_str().unwrap(), &["cat", "/marker"])
            .output()
            .unwrap();
        assert!(
            o.status.success() && o.stdout == b"saved as with-artifacts\n",
            "{who:?} the image beside an artifact: {}",
            text(&o)
        );
        let o = run_ref(who, &store, &mixed, "chart:1");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.code() == Some(125)
                && err.contains(&format!(
                    "is an OCI artifact ({helm}), not a container image"
                )),
            "{who:?} --ref chart:1: {}",
            text(&o)
        );
        let o = run_ref(who, &store, &mixed, "nothing:1");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("OCI artifacts, not images: @1 chart:1"),
            "{who:?} listed apart: {}",
            text(&o)
        );
        let o = run_cmd(who, &store, sbom_only.to_str().unwrap(), &["true"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.code() == Some(125)
                && err.contains("holds only OCI artifacts, no container image")
                && err.contains("application/spdx+json"),
            "{who:?} only an SBOM: {}",
            text(&o)
        );
        let o = rcrun_out(who, &store, &["inspect", mixed.to_str().unwrap()]);
        assert!(o.status.success(), "{who:?} inspect: {}", text(&o));
    }
}

/// A busybox image saved as `format` whose config says `arch`, with a marker naming it.
fn saved_for(format: Format, name: &str, arch: &str) -> Vec<u8> {
    let mut entries = busybox_entries(Path::new(BUSYBOX_PATH)).unwrap();
    entries.push(Entry::file("marker", 0o644, format!("{arch}\n")));
    let spec = ImageSpec {
        tags: vec![format!("archives/{name}:latest")],
        config: ConfigSpec {
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        },
        layers: vec![LayerSpec::bytes(layer_tar(&entries).unwrap(), arch)],
        architecture: Some(arch.to_string()),
        ..Default::default()
    };
    let path = staging().join(format!("archives-{name}-{arch}.tar"));
    write_archive_to_file(&path, &[spec], format, &WriteOptions::default()).unwrap();
    std::fs::read(&path).unwrap()
}

/// One oci-archive holding a multi-platform index over the images of `parts` (each an
/// oci-archive of one image), as `docker buildx` exports one.
fn multi_platform(parts: &[(&str, Vec<u8>)]) -> Vec<u8> {
    use sha2::Digest as _;
    let mut blobs = std::collections::BTreeMap::new();
    let mut descriptors = Vec::new();
    for (arch, tar_bytes) in parts {
        let mut index = None;
        for (_, name, data) in members(tar_bytes) {
            if name.starts_with("blobs/sha256/") && !data.is_empty() {
                blobs.insert(name, data);
            } else if name == "index.json" {
                index = Some(serde_json::from_slice::<serde_json::Value>(&data).unwrap());
            }
        }
        let mut d = index.unwrap()["manifests"][0].clone();
        d["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
        d.as_object_mut().unwrap().remove("annotations");
        descriptors.push(d);
    }
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": descriptors,
    }))
    .unwrap();
    let nested_hex = hex::encode(sha2::Sha256::digest(&nested));
    blobs.insert(format!("blobs/sha256/{nested_hex}"), nested.clone());
    let top = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{nested_hex}"), "size": nested.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi:1"},
        }],
    }))
    .unwrap();
    let mut out = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| add_file(&mut out, name, data);
    for (name, data) in &blobs {
        add(name, data);
    }
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &top);
    out.into_inner().unwrap()
}

/// An image of another platform is refused by `run` before anything is unpacked, with both
/// platforms named (unless an emulator is registered); `inspect` and `unpack` take any
/// platform; `--platform` picks from a multi-platform index.
#[test]
fn foreign_platforms_are_named_before_anything_is_unpacked() {
    let host = rcrun::image::host_arch();
    let other = if host == "arm64" { "amd64" } else { "arm64" };
    let emulated = matches!(
        rcrun::image::platform::emulation_for(other),
        rcrun::image::platform::Emulation::Usable(_)
    );
    let foreign = file(
        "archives-foreign.tar",
        &saved_for(Format::DockerLegacy, "foreign", other),
    );
    let multi = file(
        "archives-multi.tar",
        &multi_platform(&[
            (host, saved_for(Format::OciArchive, "multi", host)),
            (other, saved_for(Format::OciArchive, "multi", other)),
        ]),
    );
    let f = foreign.to_str().unwrap();
    let m = multi.to_str().unwrap();
    for who in modes("foreign_platforms") {
        let store = case_dir("archives-platforms", who);
        let o = rcrun_out(who, &store, &["run", f, "cat", "/marker"]);
        let err = String::from_utf8_lossy(&o.stderr);
        if emulated {
            skip(&format!(
                "foreign_platforms: a qemu-user handler for {other} is registered here: the refusal is not checked"
            ));
        } else {
            assert!(
                o.status.code() == Some(125)
                    && err.contains(&format!(
                        "the image is linux/{other}, this host linux/{host}"
                    ))
                    && err.contains("--platform")
                    && err.contains("binfmt_misc"),
                "{who:?} foreign run: {}",
                text(&o)
            );
            assert!(
                list(&store.join("layers"))
                    .iter()
                    .all(|o| list(&store.join("layers").join(o)).is_empty()),
                "{who:?}: a layer was unpacked for an image that cannot run"
            );
        }
        let o = rcrun_out(who, &store, &["inspect", f]);
        assert!(
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains(&format!("linux/{other}")),
            "{who:?} inspect of a foreign image: {}",
            text(&o)
        );
        let out = store.join("foreign-out");
        let o = rcrun_out(who, &store, &["unpack", f, out.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "{who:?} unpack of a foreign image: {}",
            text(&o)
        );
        assert_eq!(
            std::fs::read_to_string(out.join("marker")).unwrap(),
            format!("{other}\n")
        );

        // The multi-platform index: the host's by default, another with --platform.
        let o = rcrun_out(who, &store, &["run", m, "cat", "/marker"]);
        assert!(
            o.status.success() && o.stdout == format!("{host}\n").as_bytes(),
            "{who:?} multi-platform run: {}",
            text(&o)
        );
        let out = store.join("multi-other");
        let want = format!("linux/{other}");
        let o = rcrun_out(
            who,
            &store,
            &["unpack", "--platform", &want, m, out.to_str().unwrap()],
        );
        assert!(
            o.status.success(),
            "{who:?} unpack --platform: {}",
            text(&o)
        );
        assert_eq!(
            std::fs::read_to_string(out.join("marker")).unwrap(),
            format!("{other}\n")
        );
        let o = rcrun_out(who, &store, &["inspect", "--platform", &want, m]);
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(&want),
            "{who:?} inspect --platform: {}",
            text(&o)
        );
        let o = rcrun_out(
            who,
            &store,
            &["run", "--platform", "linux/s390x", m, "true"],
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.code() == Some(125)
                && err.contains("no image for the platform linux/s390x")
                && err.contains(&format!("linux/{host}"))
                && err.contains(&format!("linux/{other}")),
            "{who:?} --platform linux/s390x: {}",
            text(&o)
        );
        let o = rcrun_out(who, &store, &["run", "--platform", "linux//x", m, "true"]);
        assert_eq!(
            o.status.code(),
            Some(125),
            "{who:?} bad --platform: {}",
            text(&o)
        );
    }
}
