//! Docker's restart policies and log options for detached containers, as
//! parsed from `--restart` and `--log-opt`, and the backoff between
//! restarts: 100 ms, doubling up to one minute, back to 100 ms after a run
//! of at least 10 s. Here rather than in ctr-spawn because the monitor
//! (ctr-monitor, a binary of its own) applies them too.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A `--restart` or `--log-opt` value that does not parse; the message is
/// Docker's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RestartError(pub String);

/// `--restart no|on-failure[:N]|always|unless-stopped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case", tag = "name", content = "maximumRetryCount")]
pub enum Policy {
    #[default]
    No,
    OnFailure(Option<u32>),
    Always,
    UnlessStopped,
}

impl Policy {
    pub fn parse(s: &str) -> Result<Policy, RestartError> {
        let bad = || {
            RestartError(format!(
                "invalid restart policy {s:?}: expected no, on-failure[:N], always or unless-stopped"
            ))
        };
        let (name, max) = match s.split_once(':') {
            Some((n, m)) => (n, Some(m)),
            None => (s, None),
        };
        match (name, max) {
            ("no", None) | ("", None) => Ok(Policy::No),
            ("always", None) => Ok(Policy::Always),
            ("unless-stopped", None) => Ok(Policy::UnlessStopped),
            ("on-failure", None) => Ok(Policy::OnFailure(None)),
            ("on-failure", Some(m)) => {
                let n: i64 = m.parse().map_err(|_| bad())?;
                if n < 0 {
                    return Err(RestartError("maximum retry count cannot be negative".into()));
                }
                Ok(Policy::OnFailure(Some(n as u32)))
            }
            ("always" | "unless-stopped" | "no", Some(_)) => {
                Err(RestartError(format!("maximum retry count cannot be used with restart policy '{name}'")))
            }
            _ => Err(bad()),
        }
    }

    /// Whether a container that exited with `code` after `restarts`
    /// restarts is started again. A container stopped by the user never is.
    pub fn restarts(self, code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            Policy::No => false,
            Policy::Always | Policy::UnlessStopped => true,
            Policy::OnFailure(max) => code != 0 && max.is_none_or(|m| restarts < m),
        }
    }

    /// Whether `--restore` starts the container after a reboot.
    pub fn restores(self, stopped_by_user: bool) -> bool {
        match self {
            Policy::Always => true,
            Policy::UnlessStopped => !stopped_by_user,
            _ => false,
        }
    }
}

/// The delay before the next restart, Docker's backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

pub const INITIAL_DELAY: Duration = Duration::from_millis(100);
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run at least this long resets the backoff.
pub const RESET_AFTER: Duration = Duration::from_secs(10);

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: INITIAL_DELAY }
    }
}

impl Backoff {
    /// The backoff whose next delay is `next` (what a monitor hands over
    /// across exec), kept within Docker's bounds.
    pub fn with_next(next: Duration) -> Backoff {
        Backoff { next: next.clamp(INITIAL_DELAY, MAX_DELAY) }
    }

    /// The delay the next [`Backoff::delay`] starts from.
    pub fn next(&self) -> Duration {
        self.next
    }

    /// The delay after a run that lasted `ran`.
    pub fn delay(&mut self, ran: Duration) -> Duration {
        if ran >= RESET_AFTER {
            self.next = INITIAL_DELAY;
        }
        let d = self.next;
        self.next = (self.next * 2).min(MAX_DELAY);
        d
    }
}

/// `--log-opt max-size=SIZE,max-file=N` of Docker's json-file driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct LogOpts {
    /// Rotate when the file would grow beyond this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// Files kept, the live one included (Docker's default 1).
    #[serde(default = "one")]
    pub max_file: u32,
}

fn one() -> u32 {
    1
}

impl LogOpts {
    pub fn parse(opts: &[String]) -> Result<LogOpts, RestartError> {
        let mut out = LogOpts { max_size: None, max_file: 1 };
        for o in opts.iter().flat_map(|o| o.split(',')).filter(|o| !o.is_empty()) {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| RestartError(format!("invalid --log-opt {o:?}: expected KEY=VALUE")))?;
            match k {
                "max-size" => {
                    let n = parse_size(v).map_err(|e| RestartError(format!("max-size: {e}")))?;
                    if n <= 0 {
                        return Err(RestartError(format!("invalid max-size {v:?}")));
                    }
                    out.max_size = Some(n as u64);
                }
                "max-file" => {
                    out.max_file = v.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        RestartError(format!("invalid max-file {v:?}: expected a number >= 1"))
                    })?;
                }
                "mode" | "max-buffer-size" | "compress" | "labels" | "env" | "tag" => {}
                _ => return Err(RestartError(format!("unknown log opt '{k}' for json-file log driver"))),
            }
        }
        if out.max_file > 1 && out.max_size.is_none() {
            return Err(RestartError("max-file cannot be set without max-size".into()));
        }
        Ok(out)
    }
}

/// A size with Docker's units (`512`, `1k`, `1.5m`, `2g`, `1tb`; binary
/// multiples, case-insensitive, an optional trailing `b`), in bytes.
pub fn parse_size(s: &str) -> Result<i64, String> {
    let lower = s.trim().to_ascii_lowercase();
    let t = lower.strip_suffix('b').unwrap_or(&lower);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num.parse().map_err(|_| format!("invalid size: {s:?}"))?;
    if v < 0.0 || !v.is_finite() {
        return Err(format!("invalid size: {s:?}"));
    }
    Ok((v * mult as f64) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert_eq!(Policy::parse("on-failure:3").unwrap(), Policy::OnFailure(Some(3)));
        assert!(Policy::parse("always:3").is_err());
        assert!(Policy::parse("sometimes").is_err());
        let p = Policy::OnFailure(Some(3));
        assert!(p.restarts(1, 2, false));
        assert!(!p.restarts(1, 3, false));
        assert!(!p.restarts(0, 0, false));
        assert!(!Policy::Always.restarts(0, 0, true));
        assert!(Policy::UnlessStopped.restores(false));
        assert!(!Policy::UnlessStopped.restores(true));
    }

    #[test]
    fn backoff_doubles_and_resets() {
        let mut b = Backoff::default();
        let short = Duration::from_millis(1);
        assert_eq!(b.delay(short), Duration::from_millis(100));
        assert_eq!(b.delay(short), Duration::from_millis(200));
        assert_eq!(b.delay(short), Duration::from_millis(400));
        assert_eq!(b.delay(Duration::from_secs(11)), Duration::from_millis(100));
        for _ in 0..20 {
            b.delay(short);
        }
        assert_eq!(b.delay(short), MAX_DELAY);
        let handed = Backoff::with_next(Duration::from_millis(400));
        assert_eq!(handed.next(), Duration::from_millis(400));
        assert_eq!(Backoff::with_next(Duration::ZERO).next(), INITIAL_DELAY);
    }

    #[test]
    fn log_opts() {
        let o = LogOpts::parse(&["max-size=1k,max-file=3".into()]).unwrap();
        assert_eq!(o, LogOpts { max_size: Some(1024), max_file: 3 });
        assert!(LogOpts::parse(&["max-file=3".into()]).is_err());
    }
}
