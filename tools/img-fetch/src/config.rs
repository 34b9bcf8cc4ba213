//! The registries configuration file: which registries are reached over
//! plain HTTP. Read from `$KIST_REGISTRIES_CONFIG`, else
//! `/etc/kist/registries.json`; a missing file means no extra settings.
//!
//! ```json
//! { "insecure": ["registry.lan:5000", "build-host", "10.0.0.0/8"] }
//! ```
//!
//! An entry `host:port` names one registry, `host` every port of that
//! host, and an IPv4 `a.b.c.d/len` every address in the block. Loopback
//! registries (`localhost`, 127.0.0.0/8, `::1`) are plain HTTP without
//! being listed, as Docker treats them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/etc/kist/registries.json";
pub const ENV: &str = "KIST_REGISTRIES_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read registries config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registries config {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl kist_common::HasExitCode for ConfigError {
    fn exit_code(&self) -> kist_common::ExitCode {
        match self {
            ConfigError::Read { source, .. } => kist_common::exit::io_exit_code(source),
            ConfigError::Parse { .. } => kist_common::ExitCode::Usage,
        }
    }
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct RegistriesConfig {
    #[serde(default)]
    pub insecure: Vec<String>,
}

impl RegistriesConfig {
    /// Loads the file named by the environment, or the default path.
    pub fn load() -> Result<RegistriesConfig, ConfigError> {
        let path = std::env::var_os(ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
        RegistriesConfig::load_from(&path)
    }

    pub fn load_from(path: &Path) -> Result<RegistriesConfig, ConfigError> {
        match std::fs::read(path) {
            Ok(bytes) => RegistriesConfig::parse(&bytes, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RegistriesConfig::default()),
            Err(source) => Err(ConfigError::Read { path: path.to_path_buf(), source }),
        }
    }

    pub fn parse(bytes: &[u8], path: &Path) -> Result<RegistriesConfig, ConfigError> {
        serde_json::from_slice(bytes)
            .map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source })
    }

    /// True if `registry` (`host[:port]`) is listed insecure.
    pub fn is_insecure(&self, registry: &str) -> bool {
        let (host, _) = split_host_port(registry);
        self.insecure.iter().any(|entry| {
            entry == registry
                || (!entry.contains(':') && !entry.contains('/') && entry == host)
                || cidr_contains(entry, host)
        })
    }
}

/// Splits `host[:port]`, keeping brackets off IPv6 hosts.
pub fn split_host_port(registry: &str) -> (&str, Option<&str>) {
    if let Some(rest) = registry.strip_prefix('[') {
        if let Some((h, after)) = rest.split_once(']') {
            return (h, after.strip_prefix(':'));
        }
    }
    match registry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (registry, None),
    }
}

fn cidr_contains(entry: &str, host: &str) -> bool {
    let Some((net, len)) = entry.split_once('/') else { return false };
    let (Ok(net), Ok(len), Ok(addr)) =
        (net.parse::<Ipv4Addr>(), len.parse::<u32>(), host.parse::<Ipv4Addr>())
    else {
        return false;
    };
    if len > 32 {
        return false;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(net) & mask == u32::from(addr) & mask
}

/// Loopback registries speak plain HTTP by default, as Docker allows.
pub fn is_loopback(registry: &str) -> bool {
    let (host, _) = split_host_port(registry);
    host == "localhost" || host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_entries() {
        let c = RegistriesConfig::parse(
            br#"{"insecure":["reg.lan:5000","build","10.1.0.0/16"],"future":1}"#,
            Path::new("x"),
        )
        .unwrap();
        assert!(c.is_insecure("reg.lan:5000"));
        assert!(!c.is_insecure("reg.lan:5001"));
        assert!(!c.is_insecure("reg.lan"));
        assert!(c.is_insecure("build"));
        assert!(c.is_insecure("build:443"));
        assert!(c.is_insecure("10.1.2.3:5000"));
        assert!(!c.is_insecure("10.2.0.1"));
        assert!(RegistriesConfig::parse(b"{\"insecure\":3}", Path::new("x")).is_err());
    }

    #[test]
    fn missing_file_is_empty() {
        let c = RegistriesConfig::load_from(Path::new("/nonexistent/kist/registries.json")).unwrap();
        assert!(c.insecure.is_empty());
    }

    #[test]
    fn loopback() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.9.9.9"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("10.0.0.1:5000"));
        assert!(!is_loopback("localhost.example.com"));
        assert_eq!(split_host_port("[::1]:5000"), ("::1", Some("5000")));
    }
}
