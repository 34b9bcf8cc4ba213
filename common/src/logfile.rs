//! The monitor's log writer: the container's stdout and stderr as Docker's
//! json-file lines (`{"log":"…\n","stream":"stdout","time":"…"}`) appended
//! to `containers/<id>/log.jsonl`, split at newlines (a partial line is
//! held until its newline, 16 KiB, or the stream's end), rotated as
//! json-file does: with `max-size` the live file becomes `log.jsonl.1`,
//! `.1` becomes `.2`, … up to `max-file` files in all.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::restart::LogOpts;

/// Docker's json-file splits lines longer than this.
const MAX_LINE: usize = 16 * 1024;

pub struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    opts: LogOpts,
    partial: [Vec<u8>; 2],
}

#[derive(serde::Serialize)]
struct Line<'a> {
    log: &'a str,
    stream: &'a str,
    time: &'a str,
}

/// The stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout = 0,
    Stderr = 1,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

fn open(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).append(true).mode(0o640).open(path).ok()
}

impl LogFile {
    pub fn new(path: PathBuf, opts: LogOpts) -> LogFile {
        let file = open(&path);
        let size = file.as_ref().and_then(|f| f.metadata().ok()).map(|m| m.len()).unwrap_or(0);
        LogFile { path, file, size, opts, partial: [Vec::new(), Vec::new()] }
    }

    /// Takes bytes read from one stream; writes every complete line.
    pub fn feed(&mut self, stream: Stream, bytes: &[u8]) {
        let mut buf = std::mem::take(&mut self.partial[stream as usize]);
        buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(n) = buf[start..].iter().position(|b| *b == b'\n') {
            let end = start + n + 1;
            self.write_line(stream, &buf[start..end]);
            start = end;
        }
        while buf.len() - start >= MAX_LINE {
            self.write_line(stream, &buf[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        buf.drain(..start);
        self.partial[stream as usize] = buf;
    }

    /// Writes what is held of a stream that ended without a newline.
    pub fn flush(&mut self, stream: Stream) {
        let buf = std::mem::take(&mut self.partial[stream as usize]);
        if !buf.is_empty() {
            self.write_line(stream, &buf);
        }
    }

    fn write_line(&mut self, stream: Stream, text: &[u8]) {
        let time = crate::container::now_rfc3339();
        let log = String::from_utf8_lossy(text);
        let Ok(mut line) = serde_json::to_vec(&Line { log: &log, stream: stream.name(), time: &time }) else {
            return;
        };
        line.push(b'\n');
        if let Some(max) = self.opts.max_size {
            if self.size > 0 && self.size + line.len() as u64 > max {
                self.rotate();
            }
        }
        if self.file.is_none() {
            self.file = open(&self.path);
        }
        if let Some(f) = &mut self.file {
            if f.write_all(&line).is_ok() {
                self.size += line.len() as u64;
            }
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        let gen = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.opts.max_file <= 1 {
            // One file only: json-file truncates it.
            let _ = std::fs::remove_file(&self.path);
        } else {
            let last = self.opts.max_file - 1;
            let _ = std::fs::remove_file(gen(last));
            for n in (1..last).rev() {
                let _ = std::fs::rename(gen(n), gen(n + 1));
            }
            let _ = std::fs::rename(&self.path, gen(1));
        }
        self.file = open(&self.path);
        self.size = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let mut l = LogFile::new(path.clone(), LogOpts { max_size: Some(200), max_file: 3 });
        l.feed(Stream::Stdout, b"hel");
        l.feed(Stream::Stdout, b"lo\nworld");
        l.flush(Stream::Stdout);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|s| serde_json::from_str(s).unwrap()).collect();
        assert_eq!(lines[0]["log"], "hello\n");
        assert_eq!(lines[1]["log"], "world");
        for _ in 0..20 {
            l.feed(Stream::Stderr, b"0123456789012345678901234567890123456789\n");
        }
        assert!(dir.path().join("log.jsonl.1").exists());
        assert!(dir.path().join("log.jsonl.2").exists());
        assert!(!dir.path().join("log.jsonl.3").exists());
        for p in ["log.jsonl", "log.jsonl.1", "log.jsonl.2"] {
            assert!(std::fs::metadata(dir.path().join(p)).unwrap().len() <= 200);
        }
    }
}
