//! Image references, parsed once following the distribution/reference
//! grammar and Docker's normalisation rules:
//!
//! - the first `/`-separated component is a registry only if it is
//!   `localhost`, contains `.` or `:`, or has an uppercase letter;
//!   otherwise the registry is `docker.io`;
//! - on `docker.io`, a one-component name gets `library/`;
//! - the tag defaults to `latest` unless a digest pins the image;
//! - path components are lowercase alphanumerics joined by `.`, `_`, `__`
//!   or runs of `-`; the whole name is at most 255 characters.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

pub const DEFAULT_REGISTRY: &str = "docker.io";
pub const DEFAULT_TAG: &str = "latest";
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference format: empty reference")]
    Empty,
    #[error("invalid reference format: repository name {0:?} must be lowercase")]
    Uppercase(String),
    #[error("invalid reference format: {0:?} is not a valid repository name")]
    BadName(String),
    #[error("invalid reference format: {0:?} is not a valid registry host")]
    BadRegistry(String),
    #[error("invalid reference format: {0:?} is not a valid tag")]
    BadTag(String),
    #[error("invalid reference format: repository name is longer than {NAME_MAX} characters")]
    TooLong,
    #[error("invalid reference format: {0}")]
    BadDigest(#[from] DigestError),
}

/// A fully qualified image reference: `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// The registry as the user names it (`docker.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host to talk to: Docker Hub's API lives on another name than its
    /// reference domain.
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry's manifest endpoint for: the digest if
    /// pinned, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form Docker prints: `busybox:latest`, `localhost:5000/x:1`.
    pub fn familiar(&self) -> String {
        let mut out = self.familiar_name();
        if let Some(t) = &self.tag {
            out.push(':');
            out.push_str(t);
        }
        if let Some(d) = &self.digest {
            out.push('@');
            out.push_str(&d.to_string());
        }
        out
    }

    /// The repository as `docker images` shows it.
    pub fn familiar_name(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            self.repository.strip_prefix("library/").unwrap_or(&self.repository).to_string()
        } else {
            self.name()
        }
    }

    /// A copy with the digest replaced, for recording what a tag resolved to.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference { digest: Some(digest), ..self.clone() }
    }

    /// A copy with the digest dropped.
    pub fn without_digest(&self) -> Reference {
        Reference { digest: None, ..self.clone() }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>()?)),
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(ReferenceError::BadTag(t.to_string()));
            }
        }
        if name.is_empty() {
            return Err(ReferenceError::BadName(s.to_string()));
        }
        if name.len() > NAME_MAX {
            return Err(ReferenceError::TooLong);
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, remainder))
                if first == "localhost"
                    || first.contains('.')
                    || first.contains(':')
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                if !valid_registry(first) {
                    return Err(ReferenceError::BadRegistry(first.to_string()));
                }
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" { DEFAULT_REGISTRY.to_string() } else { registry };
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(path));
        }
        if !path.split('/').all(valid_path_component) {
            return Err(ReferenceError::BadName(path));
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(ReferenceError::TooLong);
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference { registry, repository, tag, digest })
    }
}

/// `[a-z0-9]+ ( ( [._] | __ | -+ ) [a-z0-9]+ )*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_MAX
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&x| x.is_ascii_alphanumeric() || b"_.-".contains(&x))
}

/// host[:port], host being dot-separated labels or a bracketed IPv6 address.
fn valid_registry(r: &str) -> bool {
    let (host, port) = if let Some(inner) = r.strip_prefix('[') {
        match inner.split_once(']') {
            Some((v6, after)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                (
                    None,
                    after.strip_prefix(':').map(Some).unwrap_or(if after.is_empty() {
                        None
                    } else {
                        Some("")
                    }),
                )
            }
            None => return false,
        }
    } else {
        match r.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(r), None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return false;
        }
    }
    match host {
        None => true,
        Some(h) => {
            !h.is_empty()
                && h.split('.').all(|label| {
                    let l = label.as_bytes();
                    !l.is_empty()
                        && l[0].is_ascii_alphanumeric()
                        && l[l.len() - 1].is_ascii_alphanumeric()
                        && l.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn normalises_docker_hub_names() {
        let r = p("busybox");
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.familiar(), "busybox:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(p("user/app:1.0").to_string(), "docker.io/user/app:1.0");
        assert_eq!(p("docker.io/busybox").repository(), "library/busybox");
        assert_eq!(p("index.docker.io/library/busybox").registry(), "docker.io");
    }

    #[test]
    fn first_component_is_registry_only_when_it_looks_like_one() {
        assert_eq!(p("localhost/app").registry(), "localhost");
        assert_eq!(p("localhost:5000/app:v1").registry(), "localhost:5000");
        assert_eq!(p("127.0.0.1:5000/a/b/c").repository(), "a/b/c");
        assert_eq!(p("quay.io/coreos/etcd").registry(), "quay.io");
        assert_eq!(p("Registry/app").registry(), "Registry");
        assert_eq!(p("myhost/app").registry(), "docker.io");
        assert_eq!(p("myhost/app").repository(), "myhost/app");
        assert_eq!(p("[::1]:5000/app").registry(), "[::1]:5000");
        // Not on Docker Hub: no library/ prefix.
        assert_eq!(p("localhost:5000/app").repository(), "app");
    }

    #[test]
    fn tags_and_digests() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = p(&format!("busybox@{d}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.manifest_ref(), d);
        let r = p(&format!("localhost:5000/busybox:1.36@{d}"));
        assert_eq!(r.tag(), Some("1.36"));
        assert_eq!(r.digest().map(|x| x.to_string()).as_deref(), Some(d));
        assert_eq!(r.manifest_ref(), d);
        assert_eq!(p("a:_x.Y-1").tag(), Some("_x.Y-1"));
        assert_eq!(p("a").manifest_ref(), "latest");
    }

    #[test]
    fn separators() {
        for ok in ["a.b", "a_b", "a__b", "a-b", "a---b", "a0/b1.c2"] {
            p(ok);
        }
        for bad in ["a..b", "a___b", "-a", "a-", "a_", ".a", "a/", "/a", "a//b", "a b", "a+b"] {
            assert!(bad.parse::<Reference>().is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!("".parse::<Reference>(), Err(ReferenceError::Empty));
        assert!(matches!("Busybox".parse::<Reference>(), Err(ReferenceError::Uppercase(_))));
        assert!(matches!("docker.io/Busybox".parse::<Reference>(), Err(ReferenceError::Uppercase(_))));
        assert!(matches!("a:".parse::<Reference>(), Err(ReferenceError::BadTag(_))));
        assert!(matches!("a:-x".parse::<Reference>(), Err(ReferenceError::BadTag(_))));
        assert!(matches!(
            format!("a:{}", "x".repeat(129)).parse::<Reference>(),
            Err(ReferenceError::BadTag(_))
        ));
        p(&format!("a:{}", "x".repeat(128)));
        assert!(matches!("a@sha256:123".parse::<Reference>(), Err(ReferenceError::BadDigest(_))));
        assert!(matches!("a@md5:123".parse::<Reference>(), Err(ReferenceError::BadDigest(_))));
        assert!(matches!("localhost:99999/a".parse::<Reference>(), Err(ReferenceError::BadRegistry(_))));
        assert!(matches!("local_host.x/a".parse::<Reference>(), Err(ReferenceError::BadRegistry(_))));
        assert!(matches!("[zz]:5000/a".parse::<Reference>(), Err(ReferenceError::BadRegistry(_))));
        assert!(":tag".parse::<Reference>().is_err());
    }

    #[test]
    fn length_limit() {
        assert!(matches!(
            format!("x.io/{}", "a".repeat(251)).parse::<Reference>(),
            Err(ReferenceError::TooLong)
        ));
        p(&format!("x.io/{}", "a".repeat(250)));
        assert!(matches!("a".repeat(256).parse::<Reference>(), Err(ReferenceError::TooLong)));
    }
}
