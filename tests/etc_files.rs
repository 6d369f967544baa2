//! /etc/hostname, /etc/hosts and /etc/resolv.conf in a running container, as root and as the
//! plain user `rcrun-test`: written into the upper dir when the image's /etc is a directory
//! (whose mode the merged /etc keeps), bind-mounted through the image's symlink otherwise.

mod common;
use common::*;

use rcrun_imagebuild::{
    busybox_entries, layer_tar, write_archive_to_file, ConfigSpec, Entry, Format, ImageSpec,
    LayerSpec, WriteOptions, BUSYBOX_PATH,
};
use std::path::Path;

/// busybox with its /etc replaced by `etc` entries.
fn image(dir: &Path, name: &str, etc: Vec<Entry>) -> std::path::PathBuf {
    let base: Vec<Entry> = busybox_entries(Path::new(BUSYBOX_PATH))
        .unwrap_or_else(|e| panic!("{e} (install busybox-static: .ci/run does)"))
        .into_iter()
        .filter(|e| !matches!(e, Entry::Dir { path, .. } | Entry::File { path, .. } if path.starts_with("etc")))
        .chain(etc)
        .collect();
    let spec = ImageSpec {
        tags: vec![format!("etc:{name}")],
        config: ConfigSpec {
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        },
        layers: vec![LayerSpec::bytes(layer_tar(&base).unwrap(), "busybox")],
        ..Default::default()
    };
    let path = dir.join(format!("{name}.tar"));
    write_archive_to_file(
        &path,
        &[spec],
        Format::DockerLegacy,
        &WriteOptions::default(),
    )
    .unwrap();
    publish(&path);
    path
}

fn run_sh(who: Who, dir: &Path, image: &Path, script: &str) -> String {
    let store = dir.join("store");
    let out = rcrun(
        who,
        &[
            os("--root"),
            store.as_os_str(),
            os("run"),
            os("--hostname"),
            os("h1"),
            image.as_os_str(),
            os("sh"),
            os("-c"),
            os(script),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .replace('\n', " ")
}

#[test]
fn etc_files_follow_the_images_etc() {
    let files = |prefix: &str| {
        vec![
            Entry::file(
                format!("{prefix}/passwd"),
                0o644,
                "root:x:0:0:root:/root:/bin/sh\n",
            ),
            Entry::file(format!("{prefix}/group"), 0o644, "root:x:0:\n"),
        ]
    };
    for who in modes("etc_files_follow_the_images_etc") {
        let dir = case_dir("etc-files", who);
        // A directory /etc with an unusual mode: the merged /etc keeps it (the upper dir copies
        // it), the three files are there and writable, and the image's own files still show.
        let mut etc_dir = vec![Entry::dir("etc", 0o751)];
        etc_dir.extend(files("etc"));
        let img = image(&dir, "dir", etc_dir);
        assert_eq!(
            run_sh(
                who,
                &dir,
                &img,
                "cat /etc/hostname; stat -c %a /etc; grep -c h1 /etc/hosts; \
                 test -s /etc/resolv.conf && echo resolv; test -s /etc/passwd && echo passwd; \
                 echo x >> /etc/hosts && echo writable"
            ),
            "h1 751 1 resolv passwd writable",
            "{who:?}: image with a directory /etc"
        );
        // /etc a symlink to /conf: it stays a symlink and the files land in /conf, inside the
        // container's root.
        let mut etc_link = vec![Entry::symlink("etc", "conf"), Entry::dir("conf", 0o755)];
        etc_link.extend(files("conf"));
        let img = image(&dir, "link", etc_link);
        assert_eq!(
            run_sh(
                who,
                &dir,
                &img,
                "readlink /etc; cat /conf/hostname; grep -c h1 /conf/hosts"
            ),
            "conf h1 1",
            "{who:?}: image whose /etc is a symlink"
        );
    }
}
