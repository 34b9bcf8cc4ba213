//! Diagnostics on stderr, one line per message, prefixed with the tool name,
//! so that the messages of a pipeline of tools stay attributable.

use std::io::Write;
use std::sync::OnceLock;

static TOOL: OnceLock<&'static str> = OnceLock::new();

/// Sets the name that prefixes every diagnostic; called once from `main`.
pub fn set_tool_name(name: &'static str) {
    let _ = TOOL.set(name);
}

pub fn tool_name() -> &'static str {
    TOOL.get().copied().unwrap_or("kist")
}

fn emit(level: &str, msg: &std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    // A diagnostic that cannot be written has nowhere else to go.
    let _ = if level.is_empty() {
        writeln!(err, "{}: {}", tool_name(), msg)
    } else {
        writeln!(err, "{}: {}: {}", tool_name(), level, msg)
    };
}

pub fn error_fmt(msg: std::fmt::Arguments<'_>) {
    emit("error", &msg);
}

pub fn warn_fmt(msg: std::fmt::Arguments<'_>) {
    emit("warning", &msg);
}

pub fn info_fmt(msg: std::fmt::Arguments<'_>) {
    emit("", &msg);
}

/// Prints an error and its chain of sources as one line.
pub fn report(err: &(dyn std::error::Error + 'static)) {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    error_fmt(format_args!("{line}"));
}

#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::diag::warn_fmt(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::diag::info_fmt(format_args!($($arg)*)) };
}
