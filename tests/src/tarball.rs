//! Layer tars with everything real images hold, and things no honest image
//! holds: owners, set-id bits, devices, fifos, xattrs as PAX
//! `SCHILY.xattr.*` records, GNU and PAX long names, and raw names
//! (absolute, `..`) that the `tar` crate's safe setters refuse to write.

use std::io::Write;

/// What one entry is.
#[derive(Debug, Clone)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    Hardlink(String),
    Fifo,
    Char(u32, u32),
    Block(u32, u32),
}

#[derive(Debug, Clone)]
pub struct Item {
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Put the name in a PAX `path` record rather than a GNU long name.
    pub pax_path: bool,
}

impl Item {
    fn new(path: &str, kind: Kind, mode: u32) -> Item {
        Item {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            xattrs: Vec::new(),
            pax_path: false,
        }
    }
    pub fn dir(path: &str, mode: u32) -> Item {
        Item::new(path, Kind::Dir, mode)
    }
    pub fn file(path: &str, mode: u32, data: &[u8]) -> Item {
        Item::new(path, Kind::File(data.to_vec()), mode)
    }
    pub fn symlink(path: &str, target: &str) -> Item {
        Item::new(path, Kind::Symlink(target.into()), 0o777)
    }
    pub fn hardlink(path: &str, target: &str) -> Item {
        Item::new(path, Kind::Hardlink(target.into()), 0o644)
    }
    pub fn fifo(path: &str, mode: u32) -> Item {
        Item::new(path, Kind::Fifo, mode)
    }
    pub fn char_dev(path: &str, major: u32, minor: u32) -> Item {
        Item::new(path, Kind::Char(major, minor), 0o666)
    }
    pub fn block_dev(path: &str, major: u32, minor: u32) -> Item {
        Item::new(path, Kind::Block(major, minor), 0o660)
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Item {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, t: u64) -> Item {
        self.mtime = t;
        self
    }
    pub fn xattr(mut self, name: &str, value: &[u8]) -> Item {
        self.xattrs.push((name.into(), value.to_vec()));
        self
    }
    pub fn pax(mut self) -> Item {
        self.pax_path = true;
        self
    }
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "%d %s=%s\n", where the length counts itself.
    let body_len = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body_len + 1;
    while len.to_string().len() + body_len != len {
        len = len.to_string().len() + body_len;
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

fn set_raw_name(h: &mut tar::Header, field: &str, value: &str) {
    let bytes = value.as_bytes();
    let gnu = h.as_gnu_mut().expect("gnu header");
    let dst: &mut [u8] = if field == "name" { &mut gnu.name } else { &mut gnu.linkname };
    dst.fill(0);
    let n = bytes.len().min(dst.len());
    dst[..n].copy_from_slice(&bytes[..n]);
}

fn append_gnu_long(out: &mut Vec<u8>, kind: u8, value: &str) {
    let mut h = tar::Header::new_gnu();
    set_raw_name(&mut h, "name", "././@LongLink");
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    let mut data = value.as_bytes().to_vec();
    data.push(0);
    h.set_size(data.len() as u64);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&data);
    pad(out);
}

fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % 512;
    if rem != 0 {
        out.extend(std::iter::repeat_n(0u8, 512 - rem));
    }
}

/// Writes items as a tar stream. Names go into the header verbatim (no
/// cleaning), longer ones as GNU long names or PAX records.
pub fn tar(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::new();
    for it in items {
        let mut pax = Vec::new();
        for (k, v) in &it.xattrs {
            pax.extend(pax_record(&format!("SCHILY.xattr.{k}"), v));
        }
        let link = match &it.kind {
            Kind::Symlink(t) | Kind::Hardlink(t) => Some(t.clone()),
            _ => None,
        };
        if it.path.len() > 100 {
            if it.pax_path {
                pax.extend(pax_record("path", it.path.as_bytes()));
            } else {
                append_gnu_long(&mut out, b'L', &it.path);
            }
        }
        if let Some(l) = &link {
            if l.len() > 100 {
                if it.pax_path {
                    pax.extend(pax_record("linkpath", l.as_bytes()));
                } else {
                    append_gnu_long(&mut out, b'K', l);
                }
            }
        }
        if !pax.is_empty() {
            let mut h = tar::Header::new_gnu();
            set_raw_name(&mut h, "name", "PaxHeaders/x");
            h.set_mode(0o644);
            h.set_size(pax.len() as u64);
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_mtime(0);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(&pax);
            pad(&mut out);
        }
        let mut h = tar::Header::new_gnu();
        set_raw_name(&mut h, "name", &it.path);
        if let Some(l) = &link {
            set_raw_name(&mut h, "linkname", l);
        }
        h.set_mode(it.mode);
        h.set_uid(it.uid);
        h.set_gid(it.gid);
        h.set_mtime(it.mtime);
        let data: &[u8] = match &it.kind {
            Kind::File(d) => d,
            _ => &[],
        };
        h.set_size(data.len() as u64);
        h.set_entry_type(match &it.kind {
            Kind::Dir => tar::EntryType::Directory,
            Kind::File(_) => tar::EntryType::Regular,
            Kind::Symlink(_) => tar::EntryType::Symlink,
            Kind::Hardlink(_) => tar::EntryType::Link,
            Kind::Fifo => tar::EntryType::Fifo,
            Kind::Char(..) => tar::EntryType::Char,
            Kind::Block(..) => tar::EntryType::Block,
        });
        if let Kind::Char(ma, mi) | Kind::Block(ma, mi) = &it.kind {
            h.set_device_major(*ma).expect("major");
            h.set_device_minor(*mi).expect("minor");
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        pad(&mut out);
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// zstd is not a dependency of the fixtures; use the zstd command.
pub fn zstd(data: &[u8]) -> Vec<u8> {
    let mut child = std::process::Command::new("zstd")
        .args(["-q", "-c", "-3"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("zstd (apt-get install zstd)");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = data.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("zstd");
    w.join().expect("writer").expect("write to zstd");
    assert!(out.status.success());
    out.stdout
}
