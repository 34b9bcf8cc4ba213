//! A reader whose source is read on another thread: the layer's
//! decompression and the hashing of what it yields run on one core while
//! the tar entries are written on another. Chunks of a fixed size travel
//! through a bounded channel and come back empty for reuse, so memory
//! stays at a few megabytes whatever the layer's size.
//!
//! The decoding thread hashes every chunk before it sends it, because
//! the writing thread is the one that holds up a layer (its file system
//! calls cost more than the decompression): the digest `finish` returns
//! is that of exactly the bytes the reader yielded, in their order, and
//! only once the source's end was reached. Dropping the reader early (an
//! extraction error) closes the channel, which ends the decoding thread
//! at its next chunk.

use std::io::Read;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use kist_common::digest::{Digest, Hasher};

const CHUNK: usize = 1 << 20;
/// Chunks in flight: enough to ride out the extractor's pauses on a big
/// file's writes without letting the decoder run far ahead.
const DEPTH: usize = 4;

type Chunk = std::io::Result<Vec<u8>>;

pub struct PipeReader {
    full: Receiver<Chunk>,
    empty: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
    /// Ends with the digest and length of everything read from the
    /// source, or `None` if it stopped before the source's end.
    thread: Option<JoinHandle<Option<(Digest, u64)>>>,
}

/// Reads `src` to its end on a new thread, hashing it there. `Err` only
/// if the thread cannot be started.
pub fn spawn(mut src: Box<dyn Read + Send>) -> std::io::Result<PipeReader> {
    let (full_tx, full) = mpsc::sync_channel::<Chunk>(DEPTH);
    let (empty, empty_rx) = mpsc::sync_channel::<Vec<u8>>(DEPTH + 1);
    let thread = std::thread::Builder::new().name("decode".into()).spawn(move || {
        let mut spare = 0usize;
        let mut hasher = Hasher::new();
        loop {
            let mut buf = match empty_rx.try_recv() {
                Ok(b) => b,
                Err(_) if spare < DEPTH + 1 => {
                    spare += 1;
                    vec![0u8; CHUNK]
                }
                Err(_) => match empty_rx.recv() {
                    Ok(b) => b,
                    Err(_) => return None,
                },
            };
            buf.resize(CHUNK, 0);
            let mut filled = 0;
            let result = loop {
                if filled == buf.len() {
                    break Ok(());
                }
                match src.read(&mut buf[filled..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            match result {
                Ok(()) => {
                    let end = filled < buf.len();
                    buf.truncate(filled);
                    hasher.update(&buf);
                    if filled > 0 && full_tx.send(Ok(buf)).is_err() {
                        return None;
                    }
                    if end {
                        let len = hasher.len();
                        return Some((hasher.finish(), len));
                    }
                }
                Err(e) => {
                    let _ = full_tx.send(Err(e));
                    return None;
                }
            }
        }
    })?;
    Ok(PipeReader { full, empty, cur: Vec::new(), pos: 0, done: false, thread: Some(thread) })
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.full.recv() {
                Ok(Ok(next)) => {
                    let old = std::mem::replace(&mut self.cur, next);
                    self.pos = 0;
                    if old.capacity() > 0 {
                        // The decoder may have finished; then the buffer just drops.
                        let _ = self.empty.try_send(old);
                    }
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                // The sender is gone: the decoder reached the end.
                Err(_) => self.done = true,
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl PipeReader {
    /// The digest and length of the source, if the reader yielded all of
    /// it: `None` when it is dropped before the end (then what was read
    /// is not the whole stream and must not be taken for it).
    pub fn finish(mut self) -> Option<(Digest, u64)> {
        if !self.done || self.pos < self.cur.len() {
            return None;
        }
        self.stop()
    }

    /// Unblocks a decoder waiting to send or waiting for an empty chunk,
    /// then waits for it: no thread outlives the layer it was reading.
    fn stop(&mut self) -> Option<(Digest, u64)> {
        let (_, dead) = mpsc::sync_channel::<Chunk>(0);
        drop(std::mem::replace(&mut self.full, dead));
        let (dead, _) = mpsc::sync_channel::<Vec<u8>>(0);
        drop(std::mem::replace(&mut self.empty, dead));
        self.thread.take().and_then(|t| t.join().ok().flatten())
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_in_the_same_order() {
        let data: Vec<u8> = (0..(3 * CHUNK + 12345)).map(|i| (i * 7 % 251) as u8).collect();
        let mut r = spawn(Box::new(std::io::Cursor::new(data.clone()))).unwrap();
        let mut out = Vec::new();
        let mut small = [0u8; 513];
        // Odd-sized reads, then the rest in one go.
        for _ in 0..100 {
            let n = r.read(&mut small).unwrap();
            out.extend_from_slice(&small[..n]);
        }
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(r.read(&mut small).unwrap(), 0);
        assert_eq!(r.finish(), Some((Digest::of(&data), data.len() as u64)));
    }

    #[test]
    fn no_digest_before_the_end() {
        let data = vec![5u8; 2 * CHUNK + 1];
        let mut r = spawn(Box::new(std::io::Cursor::new(data))).unwrap();
        let mut b = vec![0u8; CHUNK];
        r.read_exact(&mut b).unwrap();
        assert_eq!(r.finish(), None);
        let empty = spawn(Box::new(std::io::empty())).unwrap();
        // Nothing read yet, so the end was not seen either.
        assert_eq!(empty.finish(), None);
    }

    #[test]
    fn errors_arrive_after_the_good_bytes() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("corrupt"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(1);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut r = spawn(Box::new(Failing(CHUNK + 10))).unwrap();
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(e.to_string(), "corrupt");
        assert_eq!(out.len(), CHUNK);
        assert_eq!(r.finish(), None);
    }

    #[test]
    fn dropping_early_stops_the_decoder() {
        let mut r = spawn(Box::new(std::io::repeat(0))).unwrap();
        let mut b = [0u8; 10];
        r.read_exact(&mut b).unwrap();
        drop(r); // joins; an infinite source must not hang it
    }
}
