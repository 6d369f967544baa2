//! Platforms (`linux/arm64/v8`): which one `--platform` asks for in a multi-platform index, and
//! whether an image's programs can run on this host at all.
//!
//! An arm64 image on an amd64 host used to fail only at exec, with ENOEXEC, which points at the
//! file rather than at the platform. `run` now compares the image config's `os`/`architecture`
//! with the host's before anything is unpacked. A foreign image runs only where the kernel can
//! hand its programs to an emulator: a binfmt_misc handler for that architecture (qemu-user),
//! registered with the `F` flag, which opens the interpreter at registration so that it works
//! inside a container's root too (Documentation/admin-guide/binfmt-misc.rst).

use super::ImageError;
use std::fmt;

/// An OCI platform: `os`/`architecture`[/`variant`], in GOOS/GOARCH spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// This host: `linux/<GOARCH>`.
    pub fn host() -> Platform {
        Platform {
            os: "linux".into(),
            arch: super::host_arch().into(),
            variant: None,
        }
    }

    /// `OS/ARCH[/VARIANT]` or just `ARCH` (then `linux`), as `docker --platform` takes it.
    pub fn parse(text: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = text.split('/').collect();
        let ok =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let (os, arch, variant) = match parts.as_slice() {
            [arch] => ("linux", *arch, None),
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => {
                return Err(format!(
                    "--platform {text:?}: expected OS/ARCH[/VARIANT], such as linux/arm64"
                ))
            }
        };
        if ![os, arch].iter().all(|s| ok(s)) || variant.is_some_and(|v| !ok(v)) {
            return Err(format!(
                "--platform {text:?}: expected OS/ARCH[/VARIANT], such as linux/arm64"
            ));
        }
        Ok(Platform {
            os: os.to_ascii_lowercase(),
            arch: normalize_arch(&arch.to_ascii_lowercase()).to_string(),
            variant: variant.map(|v| v.to_ascii_lowercase()),
        })
    }

    /// Whether an index entry's platform is this one (the variant only when one is asked for).
    pub fn accepts(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        self.os == os
            && self.arch == normalize_arch(arch)
            && self.variant.as_deref().is_none_or(|v| Some(v) == variant)
    }
}

/// The spellings other tools use for the same architectures.
fn normalize_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "i386" | "i686" => "386",
        other => other,
    }
}

/// binfmt_misc's name for an architecture's qemu-user handler (qemu's scripts/qemu-binfmt-conf.sh).
fn qemu_name(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "arm" => "arm",
        "386" => "i386",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "mips64le" => "mips64el",
        "loong64" => "loongarch64",
        _ => return None,
    })
}

/// The state of a qemu-user handler for `arch` in binfmt_misc.
#[derive(Debug, PartialEq, Eq)]
pub enum Emulation {
    /// Registered, enabled, with the `F` flag: a container can run the architecture.
    Usable(String),
    /// Registered, but disabled or without `F` (the interpreter's path would be looked up in
    /// the container's root).
    Unusable(String),
    None,
}

/// Reads `/proc/sys/fs/binfmt_misc/qemu-<arch>` (its text: "enabled", "interpreter …", "flags: OCF").
pub fn emulation_for(arch: &str) -> Emulation {
    let Some(name) = qemu_name(arch) else {
        return Emulation::None;
    };
    let path = format!("/proc/sys/fs/binfmt_misc/qemu-{name}");
    match std::fs::read_to_string(&path) {
        Ok(text) => judge_handler(&path, &text),
        Err(_) => Emulation::None,
    }
}

fn judge_handler(path: &str, text: &str) -> Emulation {
    let enabled = text.lines().next() == Some("enabled");
    let fixed = text
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .is_some_and(|f| f.contains('F'));
    match (enabled, fixed) {
        (true, true) => Emulation::Usable(path.to_string()),
        (false, _) => Emulation::Unusable(format!("{path} is registered but disabled")),
        (true, false) => Emulation::Unusable(format!(
            "{path} is registered without the F flag, so its interpreter is looked up inside the container"
        )),
    }
}

/// Whether `image` can run here: `Ok(None)` on its own platform, `Ok(Some(warning))` under a
/// usable emulator, an error naming both platforms otherwise.
pub fn check_runnable(image: &super::Image) -> Result<Option<String>, ImageError> {
    let host = Platform::host();
    let os = image.config.os().to_string();
    let arch = image.config.architecture().to_string();
    let variant = image.config.variant().clone();
    let theirs = Platform {
        os: os.clone(),
        arch: normalize_arch(&arch).to_string(),
        variant,
    };
    if theirs.os == host.os && theirs.arch == host.arch {
        return Ok(None);
    }
    let foreign = |hint: String| ImageError::ForeignPlatform {
        archive: image.archive.clone(),
        image: theirs.to_string(),
        host: host.to_string(),
        hint,
    };
    if theirs.os != "linux" {
        return Err(foreign(format!(
            "a {} image needs a {} kernel",
            theirs.os, theirs.os
        )));
    }
    match emulation_for(&theirs.arch) {
        Emulation::Usable(path) => Ok(Some(format!(
            "{}: the image is {theirs} and this host {host}: its programs run under the emulator registered as {path}",
            image.archive
        ))),
        Emulation::Unusable(why) => Err(foreign(format!(
            "{why}; re-register it with the F flag (Debian's qemu-user-static does), or choose this host's platform with --platform {host} if the archive holds several"
        ))),
        Emulation::None => Err(foreign(format!(
            "choose this host's platform with --platform {host} if the archive holds several, or register a qemu-user emulator for {} with binfmt_misc (Debian: apt-get install qemu-user-static)",
            theirs.arch
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_platforms_as_docker_takes_them() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(Platform::parse("arm64").unwrap().to_string(), "linux/arm64");
        assert_eq!(Platform::parse("linux/x86_64").unwrap().arch, "amd64");
        for bad in ["", "linux/", "a/b/c/d", "linux/arm 64"] {
            assert!(Platform::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn index_entries_match_with_and_without_variant() {
        let arm = Platform::parse("linux/arm64").unwrap();
        assert!(arm.accepts("linux", "arm64", Some("v8")));
        assert!(arm.accepts("linux", "aarch64", None));
        assert!(!arm.accepts("linux", "amd64", None));
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        assert!(v7.accepts("linux", "arm", Some("v7")));
        assert!(!v7.accepts("linux", "arm", Some("v6")));
    }

    #[test]
    fn binfmt_handlers_are_judged_by_their_flags() {
        let p = "/proc/sys/fs/binfmt_misc/qemu-aarch64";
        let with_f = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\noffset 0\n";
        assert_eq!(judge_handler(p, with_f), Emulation::Usable(p.into()));
        let without = "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: OC\n";
        assert!(
            matches!(judge_handler(p, without), Emulation::Unusable(w) if w.contains("without the F flag"))
        );
        assert!(
            matches!(judge_handler(p, "disabled\nflags: F\n"), Emulation::Unusable(w) if w.contains("disabled"))
        );
    }
}
