//! The registry API v2 client: manifests and blobs over HTTP(S), the Basic
//! and Bearer-token authentication flows, redirects followed by hand so
//! that credentials never reach another host, ranged resumption of blobs,
//! and retries with backoff on 5xx answers and broken connections.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kist_common::record::Descriptor;
use kist_common::store::BlobWriter;
use kist_common::Digest;
use reqwest::blocking::{Client, Response};
use reqwest::header::{
    HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode, Url};

use crate::auth::{Challenge, CredentialSources, Credentials, TokenResponse};
use crate::image::{MANIFEST_ACCEPT, MANIFEST_MAX};

const MAX_REDIRECTS: usize = 10;
const USER_AGENT: &str = concat!("kist-img-fetch/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("unknown host {host}")]
    UnknownHost {
        host: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot reach {url}")]
    Network {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("connection to {url} broke while reading")]
    Body {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: server error {status}{message}")]
    Server { url: String, status: StatusCode, message: String },
    #[error("{url}: unexpected answer {status}{message}")]
    Status { url: String, status: StatusCode, message: String },
    #[error("{what} not found{message}")]
    NotFound { what: String, message: String },
    #[error("{registry} requires authentication and no credentials are configured for it (see img-fetch(1), CREDENTIALS)")]
    AuthRequired { registry: String },
    #[error("{registry} refused the credentials of user {user:?}")]
    AuthRejected { registry: String, user: String },
    #[error("{registry} refused access{message}")]
    Denied { registry: String, message: String },
    #[error("token server {url} failed: {message}")]
    Token { url: String, message: String },
    #[error(transparent)]
    Credentials(#[from] crate::auth::AuthError),
    #[error("{url}: too many redirects")]
    Redirects { url: String },
    #[error("{url}: refusing a redirect from HTTPS to plain HTTP ({to})")]
    Downgrade { url: String, to: String },
    #[error("{what}: size mismatch: the server sent {got} of {expected} bytes")]
    Short { what: String, got: u64, expected: u64 },
    #[error("{what}: server sent more than the {limit} bytes expected")]
    TooLarge { what: String, limit: u64 },
    #[error("{what}: the registry says its digest is {header}, but its content hashes to {actual}")]
    HeaderDigest { what: String, header: String, actual: Digest },
    #[error("cannot write {what} to the store")]
    Write {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] kist_common::store::StoreError),
}

impl kist_common::HasExitCode for RegistryError {
    fn exit_code(&self) -> kist_common::ExitCode {
        use kist_common::ExitCode;
        match self {
            RegistryError::NotFound { .. } => ExitCode::NotFound,
            RegistryError::AuthRequired { .. }
            | RegistryError::AuthRejected { .. }
            | RegistryError::Denied { .. }
            | RegistryError::Credentials(_) => ExitCode::Auth,
            RegistryError::TooLarge { .. }
            | RegistryError::HeaderDigest { .. }
            | RegistryError::Short { .. } => ExitCode::Integrity,
            RegistryError::Write { source, .. } => kist_common::exit::io_exit_code(source),
            RegistryError::Store(e) => e.exit_code(),
            _ => ExitCode::Failure,
        }
    }
}

impl RegistryError {
    /// Worth trying again after a pause: the server or the network may recover.
    fn retryable(&self) -> bool {
        // A short body is retried too: a connection closed early can look
        // like a clean end when no length was announced.
        matches!(
            self,
            RegistryError::Network { .. }
                | RegistryError::Body { .. }
                | RegistryError::Server { .. }
                | RegistryError::Short { .. }
        )
    }
}

/// What the server says about a manifest without sending it.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    pub digest: Digest,
    pub media_type: Option<String>,
    pub size: Option<u64>,
}

/// A manifest as fetched.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: Option<String>,
    /// `Docker-Content-Digest`, if the server sent one.
    pub header_digest: Option<String>,
}

#[derive(Debug, Default)]
enum Mode {
    /// No 401 seen yet: requests go out without credentials.
    #[default]
    Anonymous,
    Basic(Credentials),
    Bearer,
}

#[derive(Debug, Default)]
struct AuthState {
    mode: Mode,
    /// Looked up on the first 401 only: helpers are processes.
    creds: Option<Option<Credentials>>,
    tokens: HashMap<String, (String, Instant)>,
}

/// Connection settings for one registry.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub plain_http: bool,
    pub retries: u32,
    pub credentials: CredentialSources,
}

/// A client for one repository on one registry.
pub struct RegistryClient {
    http: Client,
    /// Built on first need when a plain-HTTP registry redirects to HTTPS.
    https: std::sync::OnceLock<Client>,
    plain_http: bool,
    base: Url,
    registry: String,
    repository: String,
    retries: u32,
    sources: CredentialSources,
    state: Mutex<AuthState>,
}

fn origin(u: &Url) -> (String, Option<String>, Option<u16>) {
    (u.scheme().to_string(), u.host_str().map(str::to_string), u.port_or_known_default())
}

/// The registry's error JSON (`{"errors":[{"code","message"}]}`), as ": message".
fn error_message(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_str::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => {
            let parts: Vec<String> = e
                .errors
                .iter()
                .map(|x| if x.message.is_empty() { x.code.clone() } else { x.message.clone() })
                .collect();
            format!(": {}", parts.join("; "))
        }
        _ => {
            let t = body.trim();
            if t.is_empty() || t.len() > 200 {
                String::new()
            } else {
                format!(": {t}")
            }
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.min(5)))
}

fn is_dns_error(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        let t = s.to_string();
        if t.contains("dns error")
            || t.contains("failed to lookup address")
            || t.contains("Name or service not known")
        {
            return true;
        }
        source = s.source();
    }
    false
}

impl RegistryClient {
    /// `registry` is `host[:port]` as the reference names it, `api_host`
    /// the host to connect to (they differ for Docker Hub).
    pub fn new(
        registry: &str,
        api_host: &str,
        repository: &str,
        opts: ClientOptions,
    ) -> Result<Self, RegistryError> {
        let scheme = if opts.plain_http { "http" } else { "https" };
        let base_text = format!("{scheme}://{api_host}/");
        let base = Url::parse(&base_text).map_err(|e| RegistryError::Status {
            url: base_text.clone(),
            status: StatusCode::BAD_REQUEST,
            message: format!(": {e}"),
        })?;
        let mut builder = Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(8);
        if opts.plain_http {
            // Loading the system's CA store costs milliseconds a plain-HTTP
            // pull never needs; redirects to HTTPS still verify against it
            // through a second client (see `client_for`).
            builder = builder.tls_built_in_root_certs(false);
        }
        let http =
            builder.build().map_err(|source| RegistryError::Network { url: base_text.clone(), source })?;
        Ok(RegistryClient {
            http,
            https: std::sync::OnceLock::new(),
            plain_http: opts.plain_http,
            base,
            registry: registry.to_string(),
            repository: repository.to_string(),
            retries: opts.retries,
            sources: opts.credentials,
            state: Mutex::new(AuthState::default()),
        })
    }

    fn client_for(&self, url: &Url) -> Result<&Client, RegistryError> {
        if !self.plain_http || url.scheme() != "https" {
            return Ok(&self.http);
        }
        if let Some(c) = self.https.get() {
            return Ok(c);
        }
        let c = Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| RegistryError::Network { url: url.to_string(), source })?;
        Ok(self.https.get_or_init(|| c))
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, AuthState> {
        // A worker that panicked cannot leave the state half-updated in a
        // way that matters: at worst a token is fetched again.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn scope(&self) -> String {
        format!("repository:{}:pull", self.repository)
    }

    fn url(&self, path: &str) -> Url {
        let mut u = self.base.clone();
        u.set_path(path);
        u
    }

    fn manifest_url(&self, reference: &str) -> Url {
        self.url(&format!("/v2/{}/manifests/{}", self.repository, reference))
    }

    fn blob_url(&self, digest: &Digest) -> Url {
        self.url(&format!("/v2/{}/blobs/{}", self.repository, digest))
    }

    fn auth_header(&self) -> Option<String> {
        let st = self.lock_state();
        match &st.mode {
            Mode::Anonymous => None,
            Mode::Basic(c) => Some(c.basic_header()),
            Mode::Bearer => st
                .tokens
                .get(&self.scope())
                .filter(|(_, until)| Instant::now() < *until)
                .map(|(t, _)| format!("Bearer {t}")),
        }
    }

    fn credentials(&self, st: &mut AuthState) -> Result<Option<Credentials>, RegistryError> {
        if st.creds.is_none() {
            st.creds = Some(self.sources.lookup(&self.registry)?);
        }
        Ok(st.creds.clone().flatten())
    }

    /// Answers a 401: learns the scheme, finds credentials, fetches a token.
    fn authenticate(&self, headers: &HeaderMap) -> Result<(), RegistryError> {
        let challenge = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(crate::auth::parse_challenge);
        let mut st = self.lock_state();
        let creds = self.credentials(&mut st)?;
        match challenge {
            None | Some(Challenge::Basic { .. }) => {
                let c =
                    creds.ok_or_else(|| RegistryError::AuthRequired { registry: self.registry.clone() })?;
                if let Mode::Basic(prev) = &st.mode {
                    return Err(RegistryError::AuthRejected {
                        registry: self.registry.clone(),
                        user: prev.username.clone(),
                    });
                }
                st.mode = Mode::Basic(c);
                Ok(())
            }
            Some(Challenge::Bearer { realm, service, scope }) => {
                let scope = scope.unwrap_or_else(|| self.scope());
                let (token, lifetime) =
                    self.fetch_token(&realm, service.as_deref(), &scope, creds.as_ref())?;
                st.tokens.insert(self.scope(), (token, Instant::now() + lifetime));
                st.mode = Mode::Bearer;
                Ok(())
            }
        }
    }

    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: Option<&Credentials>,
    ) -> Result<(String, Duration), RegistryError> {
        let fail = |message: String| RegistryError::Token { url: realm.to_string(), message };
        let mut url = Url::parse(realm).map_err(|e| fail(format!("bad realm: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        let mut attempt = 0;
        let resp = loop {
            let mut rb = self.client_for(&url)?.get(url.clone());
            if let Some(c) = creds {
                rb = rb.header(AUTHORIZATION, c.basic_header());
            }
            match rb.send() {
                Ok(r) if r.status().is_server_error() && attempt < self.retries => {}
                Ok(r) => break r,
                Err(e) if is_dns_error(&e) => {
                    return Err(RegistryError::UnknownHost {
                        host: url.host_str().unwrap_or("").into(),
                        source: e,
                    })
                }
                Err(e) if attempt >= self.retries => {
                    return Err(RegistryError::Network { url: url.to_string(), source: e })
                }
                Err(_) => {}
            }
            std::thread::sleep(backoff(attempt));
            attempt += 1;
        };
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(match creds {
                Some(c) => {
                    RegistryError::AuthRejected { registry: self.registry.clone(), user: c.username.clone() }
                }
                None => RegistryError::AuthRequired { registry: self.registry.clone() },
            });
        }
        let body = resp.text().map_err(|e| fail(e.to_string()))?;
        if !status.is_success() {
            return Err(fail(format!("{status}{}", error_message(&body))));
        }
        let t: TokenResponse = serde_json::from_str(&body).map_err(|e| fail(format!("bad JSON: {e}")))?;
        let token = t.bearer().ok_or_else(|| fail("no token in the answer".into()))?.to_string();
        Ok((token, t.lifetime()))
    }

    /// One request, following redirects by hand: credentials go only to the
    /// registry's own origin, never to the host a redirect points at.
    fn send(
        &self,
        method: &Method,
        url: &Url,
        accept: Option<&str>,
        range: Option<u64>,
    ) -> Result<Response, RegistryError> {
        let mut url = url.clone();
        for _ in 0..MAX_REDIRECTS {
            let mut rb = self.client_for(&url)?.request(method.clone(), url.clone());
            if origin(&url) == origin(&self.base) {
                if let Some(h) = self.auth_header() {
                    rb = rb.header(AUTHORIZATION, h);
                }
            }
            if let Some(a) = accept {
                rb = rb.header(ACCEPT, a);
            }
            if let Some(off) = range {
                rb = rb.header(RANGE, format!("bytes={off}-"));
            }
            let resp = rb.send().map_err(|source| {
                if is_dns_error(&source) {
                    RegistryError::UnknownHost { host: url.host_str().unwrap_or("").to_string(), source }
                } else {
                    RegistryError::Network { url: url.to_string(), source }
                }
            })?;
            if !resp.status().is_redirection() || resp.status() == StatusCode::NOT_MODIFIED {
                return Ok(resp);
            }
            let Some(loc) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) else {
                return Ok(resp);
            };
            let next = url.join(loc).map_err(|e| RegistryError::Status {
                url: url.to_string(),
                status: resp.status(),
                message: format!(": bad Location {loc:?}: {e}"),
            })?;
            if url.scheme() == "https" && next.scheme() != "https" {
                return Err(RegistryError::Downgrade { url: url.to_string(), to: next.to_string() });
            }
            url = next;
        }
        Err(RegistryError::Redirects { url: url.to_string() })
    }

    /// A request with authentication: a 401 is answered once, then the
    /// request is repeated. 5xx become retryable errors.
    fn exchange(
        &self,
        method: &Method,
        url: &Url,
        accept: Option<&str>,
        range: Option<u64>,
        what: &str,
    ) -> Result<Response, RegistryError> {
        let mut answered = false;
        loop {
            let resp = self.send(method, url, accept, range)?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED {
                if answered {
                    let st = self.lock_state();
                    return Err(match st.creds.clone().flatten() {
                        Some(c) => {
                            RegistryError::AuthRejected { registry: self.registry.clone(), user: c.username }
                        }
                        None => RegistryError::AuthRequired { registry: self.registry.clone() },
                    });
                }
                self.authenticate(resp.headers())?;
                answered = true;
                continue;
            }
            if status.is_success() {
                return Ok(resp);
            }
            let body = if *method == Method::HEAD { String::new() } else { resp.text().unwrap_or_default() };
            let message = error_message(&body);
            return Err(if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                RegistryError::Server { url: url.to_string(), status, message }
            } else if status == StatusCode::NOT_FOUND {
                RegistryError::NotFound { what: what.to_string(), message }
            } else if status == StatusCode::FORBIDDEN {
                RegistryError::Denied { registry: self.registry.clone(), message }
            } else {
                RegistryError::Status { url: url.to_string(), status, message }
            });
        }
    }

    fn with_retries<T>(&self, mut f: impl FnMut() -> Result<T, RegistryError>) -> Result<T, RegistryError> {
        let mut attempt = 0;
        loop {
            match f() {
                Err(e) if e.retryable() && attempt < self.retries => {
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn what_manifest(&self, reference: &str) -> String {
        let sep = if reference.contains(':') { '@' } else { ':' };
        format!("manifest {}/{}{sep}{reference}", self.registry, self.repository)
    }

    /// HEAD of a manifest: its digest without its body. `None` if the
    /// server does not say (then a GET is needed).
    pub fn head_manifest(&self, reference: &str) -> Result<Option<ManifestHead>, RegistryError> {
        let url = self.manifest_url(reference);
        let what = self.what_manifest(reference);
        let resp =
            self.with_retries(|| self.exchange(&Method::HEAD, &url, Some(MANIFEST_ACCEPT), None, &what))?;
        let h = resp.headers();
        let digest =
            h.get("docker-content-digest").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        Ok(digest.map(|digest| ManifestHead {
            digest,
            media_type: h.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string),
            // reqwest reports the empty body of a HEAD, not the header.
            size: h
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        }))
    }

    /// GET of a manifest by tag or digest, at most `MANIFEST_MAX` bytes.
    pub fn get_manifest(&self, reference: &str) -> Result<FetchedManifest, RegistryError> {
        let url = self.manifest_url(reference);
        let what = self.what_manifest(reference);
        self.with_retries(|| {
            let resp = self.exchange(&Method::GET, &url, Some(MANIFEST_ACCEPT), None, &what)?;
            let media_type =
                resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
            let header_digest =
                resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
            if resp.content_length().is_some_and(|l| l > MANIFEST_MAX) {
                return Err(RegistryError::TooLarge { what: what.clone(), limit: MANIFEST_MAX });
            }
            let mut bytes = Vec::new();
            resp.take(MANIFEST_MAX + 1)
                .read_to_end(&mut bytes)
                .map_err(|source| RegistryError::Body { url: url.to_string(), source })?;
            if bytes.len() as u64 > MANIFEST_MAX {
                return Err(RegistryError::TooLarge { what: what.clone(), limit: MANIFEST_MAX });
            }
            Ok(FetchedManifest { bytes, media_type, header_digest })
        })
    }

    /// Downloads a blob into `w`, resuming from what `w` already holds with
    /// a `Range` request; a server that answers 200 instead of 206 makes it
    /// start over. Retries broken transfers from where they broke. The
    /// caller verifies and commits.
    pub fn fetch_blob(
        &self,
        desc: &Descriptor,
        w: &mut BlobWriter,
        progress: &dyn Fn(u64, u64),
    ) -> Result<(), RegistryError> {
        let url = self.blob_url(&desc.digest);
        let what = format!("blob {}", desc.digest);
        let mut attempt = 0;
        let mut ranges_ok = true;
        loop {
            let result = self.fetch_blob_once(&url, desc, w, &what, &mut ranges_ok, progress);
            match result {
                Err(e) if e.retryable() && attempt < self.retries => {
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn fetch_blob_once(
        &self,
        url: &Url,
        desc: &Descriptor,
        w: &mut BlobWriter,
        what: &str,
        ranges_ok: &mut bool,
        progress: &dyn Fn(u64, u64),
    ) -> Result<(), RegistryError> {
        if w.len() > desc.size || !*ranges_ok {
            w.reset()?;
        }
        let offset = w.len();
        if offset == desc.size && offset > 0 {
            return Ok(());
        }
        let range = (offset > 0).then_some(offset);
        let mut resp = match self.exchange(&Method::GET, url, None, range, what) {
            Err(RegistryError::Status { status: StatusCode::RANGE_NOT_SATISFIABLE, .. }) => {
                *ranges_ok = false;
                w.reset()?;
                self.exchange(&Method::GET, url, None, None, what)?
            }
            other => other?,
        };
        if offset > 0 {
            let resumed = resp.status() == StatusCode::PARTIAL_CONTENT
                && resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with(&format!("bytes {offset}-")));
            if !resumed {
                if resp.status() == StatusCode::PARTIAL_CONTENT {
                    // A range we did not ask for: start again without one.
                    *ranges_ok = false;
                    w.reset()?;
                    return Err(RegistryError::Server {
                        url: url.to_string(),
                        status: resp.status(),
                        message: ": unexpected Content-Range".into(),
                    });
                }
                w.reset()?;
            }
        }
        progress(w.len(), desc.size);
        // Reads come a network chunk at a time; gather them so that the
        // store sees large writes and the hasher large blocks.
        let mut buf = vec![0u8; 1 << 20];
        let mut filled = 0;
        loop {
            let n = match resp.read(&mut buf[filled..]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    // Keep what arrived: the next attempt resumes after it.
                    self.flush_into(w, &buf[..filled], desc, what)?;
                    return Err(RegistryError::Body { url: url.to_string(), source });
                }
            };
            filled += n;
            if n == 0 || filled == buf.len() {
                self.flush_into(w, &buf[..filled], desc, what)?;
                filled = 0;
                progress(w.len(), desc.size);
                if n == 0 {
                    if w.len() < desc.size {
                        return Err(RegistryError::Short {
                            what: what.to_string(),
                            got: w.len(),
                            expected: desc.size,
                        });
                    }
                    return Ok(());
                }
            }
        }
    }

    fn flush_into(
        &self,
        w: &mut BlobWriter,
        data: &[u8],
        desc: &Descriptor,
        what: &str,
    ) -> Result<(), RegistryError> {
        if w.len() + data.len() as u64 > desc.size {
            return Err(RegistryError::TooLarge { what: what.to_string(), limit: desc.size });
        }
        std::io::Write::write_all(w, data)
            .map_err(|source| RegistryError::Write { what: what.to_string(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_error_bodies() {
        assert_eq!(
            error_message(
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#
            ),
            ": manifest unknown"
        );
        assert_eq!(error_message(""), "");
        assert_eq!(error_message("oops"), ": oops");
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(1000));
        assert_eq!(backoff(40), Duration::from_millis(8000));
    }
}
