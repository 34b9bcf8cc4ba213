//! Platforms (`os/arch[/variant]`): parsing `--platform`, the host's own, and
//! choosing one manifest from an index the way containerd and Docker do
//! (aliases such as `x86_64` and `aarch64` normalised, `arm64` meaning
//! `arm64/v8`, `arm` meaning `arm/v7`).

use kist_common::record::Platform;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlatformError {
    #[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64 or linux/arm/v7")]
    Malformed(String),
}

/// Parses `os/arch[/variant]` and normalises architecture aliases.
pub fn parse(text: &str) -> Result<Platform, PlatformError> {
    let bad = || PlatformError::Malformed(text.to_string());
    let parts: Vec<&str> = text.split('/').collect();
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
    {
        return Err(bad());
    }
    Ok(normalize(Platform {
        os: parts[0].to_ascii_lowercase(),
        architecture: parts[1].to_ascii_lowercase(),
        variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
    }))
}

/// Maps architecture aliases onto the names OCI indexes use.
pub fn normalize(p: Platform) -> Platform {
    let (arch, variant) = match p.architecture.as_str() {
        "x86_64" | "x86-64" => ("amd64".to_string(), p.variant),
        "aarch64" => ("arm64".to_string(), p.variant),
        "armhf" => ("arm".to_string(), Some("v7".to_string())),
        "armel" => ("arm".to_string(), Some("v6".to_string())),
        "i386" | "i686" => ("386".to_string(), p.variant),
        _ => (p.architecture, p.variant),
    };
    Platform { os: p.os, architecture: arch, variant }
}

/// The platform of this machine.
pub fn host() -> Platform {
    let (arch, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", None),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        other => (other, None),
    };
    Platform {
        os: std::env::consts::OS.to_string(),
        architecture: arch.into(),
        variant: variant.map(Into::into),
    }
}

/// The variant an architecture implies when none is written.
fn effective_variant(p: &Platform) -> Option<&str> {
    match (p.architecture.as_str(), p.variant.as_deref()) {
        ("arm64", None) => Some("v8"),
        ("arm", None) => Some("v7"),
        (_, v) => v,
    }
}

/// True if an image built for `have` runs on `want`. A `want` without a
/// variant accepts any variant of its architecture.
pub fn matches(want: &Platform, have: &Platform) -> bool {
    let have = normalize(have.clone());
    if want.os != have.os || want.architecture != have.architecture {
        return false;
    }
    want.variant.is_none() || effective_variant(want) == effective_variant(&have)
}

/// Index of the best candidate for `want`: an exact (effective) variant
/// match first, else the first compatible one.
pub fn select(want: &Platform, candidates: &[Platform]) -> Option<usize> {
    let compatible: Vec<usize> = (0..candidates.len()).filter(|&i| matches(want, &candidates[i])).collect();
    compatible
        .iter()
        .copied()
        .find(|&i| effective_variant(&normalize(candidates[i].clone())) == effective_variant(want))
        .or_else(|| compatible.first().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        parse(s).unwrap()
    }

    #[test]
    fn parses_and_normalises() {
        assert_eq!(p("linux/amd64").to_string(), "linux/amd64");
        assert_eq!(p("linux/x86_64").architecture, "amd64");
        assert_eq!(p("linux/aarch64").architecture, "arm64");
        assert_eq!(p("linux/arm/v6").variant.as_deref(), Some("v6"));
        assert_eq!(p("linux/armhf").to_string(), "linux/arm/v7");
        assert_eq!(p("Linux/AMD64").to_string(), "linux/amd64");
        for bad in ["linux", "linux/", "/amd64", "linux/amd64/v1/x", "linux/am d64", ""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching_rules() {
        assert!(matches(&p("linux/arm64"), &p("linux/arm64/v8")));
        assert!(matches(&p("linux/arm64/v8"), &p("linux/arm64")));
        assert!(!matches(&p("linux/arm/v7"), &p("linux/arm/v6")));
        assert!(matches(&p("linux/arm"), &p("linux/arm/v6")));
        assert!(!matches(&p("linux/amd64"), &p("windows/amd64")));
        assert!(!matches(&p("linux/amd64"), &p("linux/arm64")));
    }

    #[test]
    fn selection_prefers_the_exact_variant() {
        let c = vec![p("linux/amd64"), p("linux/arm/v6"), p("linux/arm/v7"), p("linux/arm64/v8")];
        assert_eq!(select(&p("linux/amd64"), &c), Some(0));
        assert_eq!(select(&p("linux/arm"), &c), Some(2));
        assert_eq!(select(&p("linux/arm/v6"), &c), Some(1));
        assert_eq!(select(&p("linux/arm64"), &c), Some(3));
        assert_eq!(select(&p("linux/s390x"), &c), None);
        let unknown = vec![Platform { os: "unknown".into(), architecture: "unknown".into(), variant: None }];
        assert_eq!(select(&host(), &unknown), None);
    }
}
