//! [`super::present_layers`]: the warm path's check that every layer of an image is in the store.

use super::*;

/// A 20-layer image: found only when every layer is a directory in the store, whether the
/// layers dir is listed once (few other layers there) or each layer is looked up (a store
/// with many more), and never through a symlink or a plain file of the layer's name.
#[test]
fn present_layers_needs_every_layer_dir_listed_or_looked_up() {
    use rcrun_imagebuild::{Entry as Layered, Format, ImageSpec, LayerSpec, WriteOptions};
    let root = std::env::temp_dir().join(format!("rcrun-present-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let layers = (0..20)
        .map(|i| {
            LayerSpec::entries(
                &[Layered::file(&format!("f{i}"), 0o644, "x")],
                &format!("l{i}"),
            )
            .unwrap()
        })
        .collect();
    let spec = ImageSpec {
        tags: vec!["present:test".into()],
        layers,
        ..Default::default()
    };
    let tar = root.join("image.tar");
    rcrun_imagebuild::write_archive_to_file(
        &tar,
        &[spec],
        Format::DockerLegacy,
        &WriteOptions::default(),
    )
    .unwrap();
    let archive = crate::image::Archive::open(&tar, &root).unwrap();
    let host = crate::image::platform::Platform::host();
    let image = crate::image::select_for(&archive, None, &host).unwrap();
    let store = Store::open(&root.join("store")).unwrap();
    let mode = OwnerMode::User;
    let dir = store.layers_dir(&mode);
    let hexes: Vec<&str> = image.layers.iter().map(|l| l.diff_id.hex()).collect();
    for (other_layers, listed) in [(0, true), (2000, false)] {
        std::fs::create_dir_all(&dir).unwrap();
        let fd = nix::fcntl::open(
            &dir,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        for i in 0..other_layers {
            std::fs::create_dir_all(dir.join(format!("{i:064x}"))).unwrap();
        }
        for h in &hexes[..19] {
            std::fs::create_dir_all(dir.join(h).join("fs")).unwrap();
        }
        assert_eq!(list_when_cheaper(&dir, &fd, 20).is_some(), listed);
        assert!(
            present_layers(&store, &mode, &image).is_none(),
            "one missing"
        );
        std::fs::write(dir.join(hexes[19]), "").unwrap();
        assert!(present_layers(&store, &mode, &image).is_none(), "a file");
        std::fs::remove_file(dir.join(hexes[19])).unwrap();
        std::os::unix::fs::symlink(dir.join(hexes[0]), dir.join(hexes[19])).unwrap();
        assert!(present_layers(&store, &mode, &image).is_none(), "a symlink");
        std::fs::remove_file(dir.join(hexes[19])).unwrap();
        std::fs::create_dir_all(dir.join(hexes[19]).join("fs")).unwrap();
        let found = present_layers(&store, &mode, &image).expect("all present");
        assert_eq!(found[19].dir, dir.join(hexes[19]).join("fs"));
        assert!(
            list_when_cheaper(&dir, &fd, 1).is_none(),
            "one layer: looked up"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::remove_dir_all(&root).unwrap();
}
