//! Image references as Docker reads them (distribution/reference, `ParseNormalizedNamed`), so that
//! `--ref` finds in an archive what `docker run` would find in a daemon:
//!
//! ```text
//! busybox                                → docker.io/library/busybox:latest
//! index.docker.io/library/busybox        → docker.io/library/busybox:latest
//! lab/tool:1.0                           → docker.io/lab/tool:1.0
//! localhost:5000/x@sha256:<64 hex>       → localhost:5000/x@sha256:…   (no default tag)
//! ```
//! The first path component is a registry when it contains `.` or `:`, is `localhost`, or has an
//! upper-case letter; `index.docker.io` is `docker.io`; a single-component Docker Hub name is an
//! official image under `library/`; no tag and no digest means `:latest`. The repository must
//! be lower case. Podman names local images `localhost/NAME`, and looks them up by `NAME`: a
//! reference without a registry also matches such a tag.

/// A normalised reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub domain: String,
    /// The repository path under the domain (`library/busybox`).
    pub path: String,
    pub tag: Option<String>,
    /// `sha256:<hex>` as written.
    pub digest: Option<String>,
    /// Whether the text named its registry (podman's `localhost/` leniency applies only if not).
    pub explicit_domain: bool,
}

const DEFAULT_DOMAIN: &str = "docker.io";

impl Reference {
    /// Parses and normalises `text`, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Reference, String> {
        if text.is_empty() {
            return Err("an empty reference".into());
        }
        let (rest, digest) = match text.split_once('@') {
            Some((name, d)) => (name, Some(parse_digest(d)?)),
            None => (text, None),
        };
        if rest.is_empty() {
            return Err("no repository before the digest".into());
        }
        // The tag follows the last ':' unless that ':' belongs to a registry's port.
        let (name, tag) = match rest.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t)),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            let valid = !t.is_empty()
                && t.len() <= 128
                && t.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !valid {
                return Err(format!(
                    "invalid tag {t:?} (letters, digits, '_', '.', '-', at most 128)"
                ));
            }
        }
        let (domain, path, explicit_domain) = match name.split_once('/') {
            Some((first, path))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_ascii_lowercase(), path.to_string(), true)
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string(), false),
        };
        let domain = if domain == "index.docker.io" {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if path.is_empty() || path.split('/').any(|c| c.is_empty()) {
            return Err(format!("invalid repository name {name:?}"));
        }
        if let Some(c) = path
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(*c)))
        {
            return Err(if c.is_ascii_uppercase() {
                format!("repository name {name:?} must be lowercase")
            } else {
                format!("invalid character {c:?} in repository name {name:?}")
            });
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.map(str::to_string),
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
            explicit_domain,
        })
    }

    /// Whether an image tagged `tag` in the archive, whose manifest or config digests are
    /// `digests`, is what this reference asks for.
    pub fn matches(&self, tag: &str, digests: &[String]) -> bool {
        let Ok(t) = Reference::parse(tag) else {
            return false;
        };
        let same_repo = (t.domain == self.domain && t.path == self.path)
            || (!self.explicit_domain
                && t.domain == "localhost"
                && (t.path == self.path
                    || Some(t.path.as_str()) == self.path.strip_prefix("library/")));
        if !same_repo {
            return false;
        }
        match (&self.digest, &self.tag) {
            (Some(d), tag) => {
                digests.iter().any(|x| x == d)
                    && tag.as_ref().is_none_or(|want| t.tag.as_ref() == Some(want))
            }
            (None, want) => t.tag == *want,
        }
    }

    /// `docker.io/library/busybox:latest`, as Docker prints it fully qualified.
    pub fn full(&self) -> String {
        let mut s = format!("{}/{}", self.domain, self.path);
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

/// `sha256:<64 lowercase hex>`, the only algorithm images use.
pub fn parse_digest(text: &str) -> Result<String, String> {
    match super::Digest::parse(text) {
        Some(d) => Ok(d.to_string()),
        None => Err(format!(
            "invalid digest {text:?} (expected sha256:<64 lowercase hex>)"
        )),
    }
}

/// A bare image ID as `docker run` takes it: `sha256:<hex>`, `@sha256:<hex>` or at least 12 hex
/// digits of one; the digest prefix it stands for.
pub fn bare_id(text: &str) -> Option<String> {
    let hex = text
        .trim_start_matches('@')
        .strip_prefix("sha256:")
        .unwrap_or(text);
    let ok = (12..=64).contains(&hex.len())
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    // A 12-character name of hex letters only could be a repository: only take it as an ID
    // when it was written with the algorithm or has a digit.
    let explicit = text.trim_start_matches('@').starts_with("sha256:");
    (ok && (explicit || hex.bytes().any(|b| b.is_ascii_digit()))).then(|| format!("sha256:{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> String {
        Reference::parse(s).unwrap().full()
    }

    #[test]
    fn normalised_as_docker_does() {
        assert_eq!(full("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            full("index.docker.io/library/test_image_1:latest"),
            "docker.io/library/test_image_1:latest"
        );
        assert_eq!(
            full("index.docker.io/test_image_1"),
            "docker.io/library/test_image_1:latest"
        );
        assert_eq!(
            full("docker.io/busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(full("lab/tool"), "docker.io/lab/tool:latest");
        assert_eq!(full("localhost/lab/tool:2"), "localhost/lab/tool:2");
        assert_eq!(full("localhost:5000/x:1"), "localhost:5000/x:1");
        assert_eq!(
            full("registry.example/a/b/c"),
            "registry.example/a/b/c:latest"
        );
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            full(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            full(&format!("busybox:1@{d}")),
            format!("docker.io/library/busybox:1@{d}")
        );
    }

    #[test]
    fn bad_references_say_why() {
        assert!(Reference::parse("BusyBox")
            .unwrap_err()
            .contains("lowercase"));
        assert!(Reference::parse("busybox:").unwrap_err().contains("tag"));
        assert!(Reference::parse("busybox@sha256:abc")
            .unwrap_err()
            .contains("digest"));
        assert!(Reference::parse("a//b").is_err());
        assert!(Reference::parse("").is_err());
    }

    #[test]
    fn archive_tags_match_like_docker_and_podman() {
        let m = |tag: &str, wanted: &str| Reference::parse(wanted).unwrap().matches(tag, &[]);
        assert!(m(
            "test_image_1",
            "index.docker.io/library/test_image_1:latest"
        ));
        assert!(m("docker.io/library/busybox:latest", "busybox"));
        assert!(m("busybox:latest", "busybox:latest"));
        assert!(m("localhost/lab/busybox:latest", "lab/busybox"));
        assert!(m("localhost/busybox:latest", "busybox"));
        assert!(m("localhost:5000/x:1", "localhost:5000/x:1"));
        assert!(!m("localhost/lab/busybox:latest", "docker.io/lab/busybox"));
        assert!(!m("busybox:1.36", "busybox"));
        assert!(!m("alpine:latest", "busybox"));
        assert!(!m("quay.io/busybox:latest", "busybox"));
    }

    #[test]
    fn digests_match_the_image_not_the_name_alone() {
        let d = format!("sha256:{}", "cd".repeat(32));
        let other = format!("sha256:{}", "ef".repeat(32));
        let r = Reference::parse(&format!("busybox@{d}")).unwrap();
        assert!(r.matches("busybox:1.36", std::slice::from_ref(&d)));
        assert!(!r.matches("busybox:1.36", &[other]));
        assert!(!r.matches("alpine:1", std::slice::from_ref(&d)));
    }

    #[test]
    fn bare_ids() {
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(
            bare_id(&format!("sha256:{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(
            bare_id(&format!("@sha256:{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(bare_id("0123456789ab"), Some("sha256:0123456789ab".into()));
        assert_eq!(bare_id("busybox"), None);
        assert_eq!(bare_id("abcdefabcdef"), None, "hex letters only: a name");
        assert_eq!(bare_id("0123456789a"), None, "too short");
    }
}
