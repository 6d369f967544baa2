//! `flatten_moving` on hand-made layer directories in the store's format (whiteouts are char
//! 0/0, opaque directories carry `user.overlay.opaque=y`), checked against overlay's rules and
//! against a hostile lower layer.

use super::*;
use std::os::unix::fs::symlink;

struct Tmp(PathBuf);
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = crate::sys::fs::remove_tree(&self.0);
    }
}

fn tmp(name: &str) -> Tmp {
    let p = std::env::temp_dir().join(format!("rcrun-flatten-{name}-{}", std::process::id()));
    let _ = crate::sys::fs::remove_tree(&p);
    fs::create_dir_all(&p).unwrap();
    Tmp(p)
}

fn file(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// A whiteout as the extractor makes it; None when this kernel or file system refuses one
/// (unprivileged whiteouts need Linux 5.8).
fn whiteout(path: &Path) -> Option<()> {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        0,
    )
    .ok()
}

fn opaque(dir: &Path) -> Option<()> {
    fs::create_dir_all(dir).unwrap();
    let f = fs::File::open(dir).unwrap();
    crate::sys::fs::fsetxattr(f.as_fd(), OPAQUE_XATTR, b"y").ok()
}

fn layers(dirs: &[&Path]) -> Vec<MovableLayer> {
    dirs.iter()
        .map(|d| MovableLayer {
            dir: d.to_path_buf(),
            markers: true,
        })
        .collect()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"))
}

const RESERVED: &str = ".rcrun-unpack-test";

#[test]
fn layers_move_in_with_overlay_semantics() {
    let t = tmp("semantics");
    let (l1, l2, out) = (t.0.join("l1"), t.0.join("l2"), t.0.join("out"));
    file(&l1.join("etc/passwd"), "one");
    file(&l1.join("etc/gone"), "deleted above");
    file(&l1.join("opt/old/a"), "hidden above");
    file(&l1.join("keep"), "kept");
    fs::create_dir_all(l1.join("becomes-file")).unwrap();
    file(&l2.join("etc/passwd"), "two");
    file(&l2.join("opt/old/b"), "new in opaque dir");
    file(&l2.join("becomes-file"), "a file now");
    file(&l2.join("new/deep/x"), "moved whole");
    if whiteout(&l2.join("etc/gone")).is_none() || opaque(&l2.join("opt/old")).is_none() {
        eprintln!(
            "SKIP: no unprivileged whiteouts or user.* xattrs on {}",
            t.0.display()
        );
        return;
    }
    // A whiteout and an opaque mark inside a directory new to the target: nothing to act on.
    whiteout(&l2.join("new/.stale")).unwrap();
    opaque(&l2.join("new/deep")).unwrap();
    fs::create_dir(&out).unwrap();
    flatten_moving(&layers(&[&l1, &l2]), &out, RESERVED.as_ref(), false).unwrap();

    assert_eq!(read(&out.join("etc/passwd")), "two");
    assert!(!out.join("etc/gone").exists(), "whiteout applied");
    assert!(
        !out.join("opt/old/a").exists(),
        "opaque dir hides the lower layer"
    );
    assert_eq!(read(&out.join("opt/old/b")), "new in opaque dir");
    assert_eq!(read(&out.join("keep")), "kept");
    assert_eq!(read(&out.join("becomes-file")), "a file now");
    assert_eq!(read(&out.join("new/deep/x")), "moved whole");
    assert!(
        fs::symlink_metadata(out.join("new/.stale")).is_err(),
        "stray whiteout left"
    );
    for d in ["opt/old", "new/deep"] {
        let f = fs::File::open(out.join(d)).unwrap();
        assert_eq!(
            crate::sys::fs::fgetxattr(f.as_fd(), OPAQUE_XATTR).unwrap(),
            None,
            "opaque mark left on {d}"
        );
    }
}

#[test]
fn a_lower_symlink_is_replaced_never_followed() {
    let t = tmp("symlink");
    let (l1, l2, out, outside) = (
        t.0.join("l1"),
        t.0.join("l2"),
        t.0.join("out"),
        t.0.join("outside"),
    );
    fs::create_dir_all(&outside).unwrap();
    file(&outside.join("victim"), "host file");
    fs::create_dir_all(&l1).unwrap();
    // The lower layer points `a` and `b` outside; the upper one writes into `a/` and whites
    // out `b/victim`.
    symlink(&outside, l1.join("a")).unwrap();
    symlink(&outside, l1.join("b")).unwrap();
    file(&l2.join("a/victim"), "image file");
    if whiteout(&l2.join("b/victim")).is_none() {
        eprintln!("SKIP: no unprivileged whiteouts on {}", t.0.display());
        return;
    }
    fs::create_dir(&out).unwrap();
    flatten_moving(&layers(&[&l1, &l2]), &out, RESERVED.as_ref(), false).unwrap();
    assert_eq!(
        read(&outside.join("victim")),
        "host file",
        "wrote or deleted through a symlink"
    );
    assert!(fs::symlink_metadata(out.join("a")).unwrap().is_dir());
    assert_eq!(read(&out.join("a/victim")), "image file");
    assert!(fs::symlink_metadata(out.join("b")).unwrap().is_dir());
}

#[test]
fn a_repeated_layer_is_copied_until_its_last_use() {
    let t = tmp("repeat");
    let (l1, l2, out) = (t.0.join("l1"), t.0.join("l2"), t.0.join("out"));
    file(&l1.join("f"), "from l1");
    file(&l2.join("f"), "from l2");
    fs::create_dir(&out).unwrap();
    flatten_moving(&layers(&[&l1, &l2, &l1]), &out, RESERVED.as_ref(), false).unwrap();
    assert_eq!(read(&out.join("f")), "from l1");
}

#[test]
fn hardlinks_stay_hardlinks_and_the_scratch_name_is_refused() {
    let t = tmp("links");
    let (l1, out) = (t.0.join("l1"), t.0.join("out"));
    file(&l1.join("d/one"), "same");
    fs::hard_link(l1.join("d/one"), l1.join("two")).unwrap();
    fs::create_dir(&out).unwrap();
    flatten_moving(&layers(&[&l1]), &out, RESERVED.as_ref(), false).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(out.join("d/one")).unwrap().ino(),
        fs::metadata(out.join("two")).unwrap().ino()
    );
    let l2 = t.0.join("l2");
    file(&l2.join(RESERVED).join("x"), "collides");
    let err = flatten_moving(&layers(&[&l2]), &out, RESERVED.as_ref(), false).unwrap_err();
    assert!(err.to_string().contains("scratch directory"), "{err}");
}
