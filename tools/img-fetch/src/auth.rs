//! Registry authentication: parsing `WWW-Authenticate` challenges, and
//! finding credentials for a registry in the places Docker, podman and
//! skopeo keep them.
//!
//! Lookup order, first hit wins:
//! 1. `$REGISTRY_AUTH_FILE` (containers auth.json format);
//! 2. `$XDG_RUNTIME_DIR/containers/auth.json`, then
//!    `$XDG_CONFIG_HOME/containers/auth.json` (default `~/.config`);
//! 3. Docker's `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`):
//!    `credHelpers[registry]`, then `auths[registry]`, then `credsStore`.
//!
//! Helpers run as `docker-credential-<name> get` with the server name on
//! stdin, as the Docker credential-helper protocol defines.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read credentials file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("credentials file {path} is not valid JSON")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("credentials for {registry} in {path}: \"auth\" is not base64 of user:password")]
    BadAuthField { registry: String, path: PathBuf },
    #[error("credential helper docker-credential-{helper} failed: {message}")]
    Helper { helper: String, message: String },
}

impl kist_common::HasExitCode for AuthError {
    fn exit_code(&self) -> kist_common::ExitCode {
        kist_common::ExitCode::Auth
    }
}

/// A user name and password (or token) for Basic auth.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// The `Authorization: Basic …` header value.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

/// One authentication challenge from a 401 response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic { realm: Option<String> },
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

/// Parses a `WWW-Authenticate` header value (RFC 7235: a scheme, then
/// comma-separated `key=value` or `key="quoted value"` parameters).
/// Returns `None` for schemes kist does not speak.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = match header.find(char::is_whitespace) {
        Some(i) => (&header[..i], header[i..].trim_start()),
        None => (header, ""),
    };
    let params = parse_params(rest);
    let get = |k: &str| params.get(k).cloned();
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic { realm: get("realm") }),
        "bearer" => {
            Some(Challenge::Bearer { realm: get("realm")?, service: get("service"), scope: get("scope") })
        }
        _ => None,
    }
}

fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        let key_start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = s[key_start..i].trim().to_ascii_lowercase();
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                let ch_len = s[i..].chars().next().map_or(1, char::len_utf8);
                value.push_str(&s[i..i + ch_len]);
                i += ch_len;
            }
            i += 1;
        } else {
            let start = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            value = s[start..i].trim().to_string();
        }
        if !key.is_empty() {
            out.insert(key, value);
        }
    }
    out
}

/// The token endpoint's answer (distribution's token spec and OAuth2 both).
#[derive(Debug, serde::Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    /// Seconds; the spec's default is 60.
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    pub fn bearer(&self) -> Option<&str> {
        self.token
            .as_deref()
            .filter(|t| !t.is_empty())
            .or(self.access_token.as_deref().filter(|t| !t.is_empty()))
    }

    /// How long to reuse the token; a little less than granted, so a
    /// token never expires on its way to the registry.
    pub fn lifetime(&self) -> std::time::Duration {
        let secs = self.expires_in.unwrap_or(60).max(1);
        std::time::Duration::from_secs(secs.saturating_sub(secs / 10 + 1).max(1))
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The names a registry may be filed under: Docker Hub has several.
fn aliases(registry: &str) -> Vec<&str> {
    if registry == "docker.io" {
        vec!["docker.io", "index.docker.io", "registry-1.docker.io"]
    } else {
        vec![registry]
    }
}

/// `https://host:port/v1/` and `host:port` name the same registry.
fn normalise_key(key: &str) -> &str {
    let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

fn read_auth_file(path: &Path) -> Result<Option<AuthFile>, AuthError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| AuthError::Parse { path: path.to_path_buf(), source }),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound || e.kind() == std::io::ErrorKind::NotADirectory =>
        {
            Ok(None)
        }
        Err(source) => Err(AuthError::Read { path: path.to_path_buf(), source }),
    }
}

/// Where credentials are looked for, in order.
#[derive(Debug, Clone, Default)]
pub struct CredentialSources {
    /// containers auth.json files, most specific first.
    pub auth_files: Vec<PathBuf>,
    /// Docker's config.json.
    pub docker_config: Option<PathBuf>,
}

impl CredentialSources {
    /// The standard locations, from the environment.
    pub fn from_env() -> CredentialSources {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let home = env("HOME");
        let mut auth_files = Vec::new();
        if let Some(p) = env("REGISTRY_AUTH_FILE") {
            auth_files.push(p);
        }
        if let Some(p) = env("XDG_RUNTIME_DIR") {
            auth_files.push(p.join("containers/auth.json"));
        }
        if let Some(p) = env("XDG_CONFIG_HOME").or_else(|| home.as_ref().map(|h| h.join(".config"))) {
            auth_files.push(p.join("containers/auth.json"));
        }
        let docker_config = env("DOCKER_CONFIG")
            .map(|d| d.join("config.json"))
            .or_else(|| home.map(|h| h.join(".docker/config.json")));
        CredentialSources { auth_files, docker_config }
    }

    /// Credentials for `registry` (`host[:port]`), if any are configured.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credentials>, AuthError> {
        let names = aliases(registry);
        for path in &self.auth_files {
            if let Some(file) = read_auth_file(path)? {
                if let Some(c) = from_file(&file, &names, path)? {
                    return Ok(Some(c));
                }
            }
        }
        let Some(path) = &self.docker_config else { return Ok(None) };
        let Some(file) = read_auth_file(path)? else { return Ok(None) };
        from_file(&file, &names, path)
    }
}

fn from_file(file: &AuthFile, names: &[&str], path: &Path) -> Result<Option<Credentials>, AuthError> {
    for (key, helper) in &file.cred_helpers {
        if names.contains(&normalise_key(key)) {
            return run_helper(helper, key);
        }
    }
    for (key, entry) in &file.auths {
        if !names.contains(&normalise_key(key)) {
            continue;
        }
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let bad = || AuthError::BadAuthField { registry: names[0].to_string(), path: path.to_path_buf() };
            let raw = base64::engine::general_purpose::STANDARD.decode(auth.trim()).map_err(|_| bad())?;
            let text = String::from_utf8(raw).map_err(|_| bad())?;
            let (u, p) = text.split_once(':').ok_or_else(bad)?;
            return Ok(Some(Credentials { username: u.to_string(), password: p.to_string() }));
        }
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(Some(Credentials { username: u.clone(), password: p.clone() }));
        }
    }
    if let Some(store) = file.creds_store.as_deref().filter(|s| !s.is_empty()) {
        let server = if names[0] == "docker.io" { "https://index.docker.io/v1/" } else { names[0] };
        return run_helper(store, server);
    }
    Ok(None)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperReply {
    username: String,
    secret: String,
}

/// Runs `docker-credential-<helper> get`. "Not found" answers (any failure
/// whose output says so) mean no credentials, not an error.
fn run_helper(helper: &str, server: &str) -> Result<Option<Credentials>, AuthError> {
    let fail = |message: String| AuthError::Helper { helper: helper.to_string(), message };
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading stdin is answered by its status.
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let text = format!("{} {}", stdout.trim(), String::from_utf8_lossy(&out.stderr).trim());
        if text.to_ascii_lowercase().contains("not found") {
            return Ok(None);
        }
        return Err(fail(text.trim().to_string()));
    }
    let reply: HelperReply = serde_json::from_str(&stdout).map_err(|e| fail(format!("bad reply: {e}")))?;
    if reply.username == "<token>" {
        // An identity token is an OAuth2 refresh token, which registry v2
        // Basic auth cannot use.
        return Ok(None);
    }
    Ok(Some(Credentials { username: reply.username, password: reply.secret }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_commas_in_quotes() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into()),
            })
        );
    }

    #[test]
    fn other_challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="kist-test""#),
            Some(Challenge::Basic { realm: Some("kist-test".into()) })
        );
        assert_eq!(parse_challenge("basic"), Some(Challenge::Basic { realm: None }));
        assert_eq!(
            parse_challenge(r#"Bearer  realm = "http://x/t" , error="invalid_token", service=reg"#),
            Some(Challenge::Bearer { realm: "http://x/t".into(), service: Some("reg".into()), scope: None })
        );
        assert_eq!(
            parse_challenge(r#"Bearer realm="a\"b""#),
            Some(Challenge::Bearer { realm: "a\"b".into(), service: None, scope: None })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[test]
    fn token_lifetime() {
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"a","expires_in":300}"#).unwrap();
        assert_eq!(t.bearer(), Some("a"));
        assert!(t.lifetime().as_secs() < 300 && t.lifetime().as_secs() > 200);
        let t: TokenResponse = serde_json::from_str(r#"{"token":"","access_token":"b"}"#).unwrap();
        assert_eq!(t.bearer(), Some("b"));
        assert_eq!(t.lifetime().as_secs(), 53);
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn docker_config_auths() {
        let dir = tempfile::tempdir().unwrap();
        // "alice:s3cr:et" — the password may contain a colon.
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et");
        let cfg = write(
            dir.path(),
            "config.json",
            &format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{b64}"}},"reg.lan:5000":{{"username":"bob","password":"pw"}},"bad.lan":{{"auth":"!!"}}}}}}"#
            ),
        );
        let src =
            CredentialSources { auth_files: vec![dir.path().join("missing.json")], docker_config: Some(cfg) };
        assert_eq!(
            src.lookup("docker.io").unwrap(),
            Some(Credentials { username: "alice".into(), password: "s3cr:et".into() })
        );
        assert_eq!(src.lookup("reg.lan:5000").unwrap().unwrap().username, "bob");
        assert_eq!(src.lookup("other.lan").unwrap(), None);
        assert!(matches!(src.lookup("bad.lan"), Err(AuthError::BadAuthField { .. })));
        assert_eq!(Credentials { username: "a".into(), password: "b".into() }.basic_header(), "Basic YTpi");
    }

    #[test]
    fn auth_json_wins_over_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let a =
            write(dir.path(), "auth.json", &format!(r#"{{"auths":{{"r.io":{{"auth":"{}"}}}}}}"#, enc("p:1")));
        let d = write(
            dir.path(),
            "config.json",
            &format!(r#"{{"auths":{{"r.io":{{"auth":"{}"}}}}}}"#, enc("d:2")),
        );
        let src = CredentialSources { auth_files: vec![a], docker_config: Some(d.clone()) };
        assert_eq!(src.lookup("r.io").unwrap().unwrap().username, "p");
        let src = CredentialSources { auth_files: vec![], docker_config: Some(d) };
        assert_eq!(src.lookup("r.io").unwrap().unwrap().username, "d");
        let broken = write(dir.path(), "broken.json", "{");
        let src = CredentialSources { auth_files: vec![broken], docker_config: None };
        assert!(matches!(src.lookup("r.io"), Err(AuthError::Parse { .. })));
    }

    #[test]
    fn key_normalisation() {
        assert_eq!(normalise_key("https://index.docker.io/v1/"), "index.docker.io");
        assert_eq!(normalise_key("http://reg:5000"), "reg:5000");
        assert_eq!(normalise_key("reg:5000"), "reg:5000");
    }
}
