//! Progress on stderr: a bar per blob with bytes and rate when stderr is a
//! terminal (`auto`), nothing otherwise; one text line per event with
//! `plain`; one JSON object per line with `json`, for programs:
//!
//! `{"type":"progress","digest":"sha256:…","status":"downloading","current":N,"total":N}`
//!
//! `status` is `downloading`, `done` or `exists` (already in the store).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kist_common::output::human_size_decimal;
use kist_common::Digest;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Silent,
    Bars,
    Plain,
    Json,
}

impl Mode {
    /// `auto|plain|json` (from `--progress`), or silent with `--quiet`.
    pub fn choose(flag: &str, quiet: bool) -> Mode {
        match (quiet, flag) {
            (true, _) => Mode::Silent,
            (_, "plain") => Mode::Plain,
            (_, "json") => Mode::Json,
            _ if std::io::stderr().is_terminal() => Mode::Bars,
            _ => Mode::Silent,
        }
    }
}

struct Item {
    digest: Digest,
    total: u64,
    current: u64,
    status: &'static str,
    started: Instant,
    last_report: Option<Instant>,
}

struct State {
    items: Vec<Item>,
    drawn: usize,
    last_draw: Option<Instant>,
}

pub struct Progress {
    mode: Mode,
    state: Mutex<State>,
}

const REDRAW: Duration = Duration::from_millis(100);
const JSON_EVERY: Duration = Duration::from_millis(250);

fn rate(bytes: u64, since: Instant) -> String {
    let secs = since.elapsed().as_secs_f64().max(0.001);
    format!("{}/s", human_size_decimal((bytes as f64 / secs) as u64))
}

impl Progress {
    pub fn new(mode: Mode) -> Progress {
        Progress { mode, state: Mutex::new(State { items: Vec::new(), drawn: 0, last_draw: None }) }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut st)
    }

    /// A blob begins downloading.
    pub fn start(&self, digest: &Digest, total: u64) {
        if self.mode == Mode::Silent {
            return;
        }
        self.with(|st| {
            st.items.retain(|i| &i.digest != digest);
            st.items.push(Item {
                digest: digest.clone(),
                total,
                current: 0,
                status: "downloading",
                started: Instant::now(),
                last_report: None,
            });
            match self.mode {
                Mode::Plain => {
                    kist_common::info!("{}: downloading {}", digest.short(), human_size_decimal(total))
                }
                Mode::Json => json_line(digest, "downloading", 0, total),
                _ => {}
            }
            if let Some(i) = st.items.last_mut() {
                i.last_report = Some(Instant::now());
            }
            self.draw(st, true);
        });
    }

    pub fn update(&self, digest: &Digest, current: u64) {
        if matches!(self.mode, Mode::Silent | Mode::Plain) {
            return;
        }
        self.with(|st| {
            let Some(item) = st.items.iter_mut().find(|i| &i.digest == digest) else { return };
            item.current = current;
            if self.mode == Mode::Json {
                if item.last_report.is_none_or(|t| t.elapsed() >= JSON_EVERY) {
                    item.last_report = Some(Instant::now());
                    json_line(digest, "downloading", current, item.total);
                }
                return;
            }
            self.draw(st, false);
        });
    }

    /// A blob is verified and in the store (`done`), or was there already (`exists`).
    pub fn finish(&self, digest: &Digest, total: u64, existed: bool) {
        if self.mode == Mode::Silent {
            return;
        }
        let status = if existed { "exists" } else { "done" };
        self.with(|st| {
            let started = match st.items.iter_mut().find(|i| &i.digest == digest) {
                Some(item) => {
                    item.current = total;
                    item.status = status;
                    item.started
                }
                None => {
                    st.items.push(Item {
                        digest: digest.clone(),
                        total,
                        current: total,
                        status,
                        started: Instant::now(),
                        last_report: None,
                    });
                    Instant::now()
                }
            };
            match self.mode {
                Mode::Plain if existed => kist_common::info!("{}: already present", digest.short()),
                Mode::Plain => kist_common::info!(
                    "{}: done {} in {:.2}s ({})",
                    digest.short(),
                    human_size_decimal(total),
                    started.elapsed().as_secs_f64(),
                    rate(total, started)
                ),
                Mode::Json => json_line(digest, status, total, total),
                _ => {}
            }
            self.draw(st, true);
        });
    }

    fn draw(&self, st: &mut State, force: bool) {
        if self.mode != Mode::Bars {
            return;
        }
        if !force && st.last_draw.is_some_and(|t| t.elapsed() < REDRAW) {
            return;
        }
        st.last_draw = Some(Instant::now());
        let mut out = String::new();
        if st.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", st.drawn));
        }
        for i in &st.items {
            let width = 30usize;
            let filled = if i.total == 0 {
                width
            } else {
                ((i.current as f64 / i.total as f64) * width as f64) as usize
            };
            let filled = filled.min(width);
            let bar: String = "=".repeat(filled) + &" ".repeat(width - filled);
            let detail = match i.status {
                "downloading" => format!(
                    "{}/{} {}",
                    human_size_decimal(i.current),
                    human_size_decimal(i.total),
                    rate(i.current, i.started)
                ),
                "exists" => "already present".to_string(),
                _ => format!("{} done", human_size_decimal(i.total)),
            };
            out.push_str(&format!(
                "\x1b[2K{}: {} [{bar}] {detail}\n",
                kist_common::diag::tool_name(),
                i.digest.short()
            ));
        }
        st.drawn = st.items.len();
        let mut err = std::io::stderr().lock();
        // Progress that cannot be drawn is not worth failing a pull for.
        let _ = err.write_all(out.as_bytes());
        let _ = err.flush();
    }
}

fn json_line(digest: &Digest, status: &str, current: u64, total: u64) {
    let line = serde_json::json!({
        "type": "progress",
        "digest": digest.to_string(),
        "status": status,
        "current": current,
        "total": total,
    });
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}
