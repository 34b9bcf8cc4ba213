//! The JSON Lines records that travel between tools. Every record carries
//! `schemaVersion` and `type`; readers ignore fields they do not know, so
//! adding a field is not a breaking change. kist-records(5) documents each.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// Bumped only when a field changes meaning or disappears.
pub const SCHEMA_VERSION: u32 = 1;

fn schema_version() -> u32 {
    SCHEMA_VERSION
}

/// A content descriptor: what a manifest says of a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image in the store, as img-fetch and img-list print it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    /// Docker's image ID: the digest of the image config.
    pub id: Digest,
    /// The full reference, `registry/repository:tag`, if the image has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Digest of the (platform-specific) manifest.
    pub digest: Digest,
    /// Digest of the index the manifest was chosen from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<Digest>,
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// The layers' uncompressed digests, from the config's `rootfs.diff_ids`.
    pub diff_ids: Vec<Digest>,
    pub platform: Platform,
    /// The config's `created` time (RFC 3339), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Compressed size: manifest, config and layers.
    pub size: u64,
    /// The state root holding the blobs.
    pub store: PathBuf,
}

/// One verified layer, emitted by `img-fetch --stream` as soon as it lands.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerRecord {
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    /// The image this layer belongs to (config digest).
    pub image: Digest,
    /// Position in the image's layer list, from 0.
    pub index: usize,
    /// How many layers the image has.
    pub count: usize,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Digest,
    /// The chain ID: which snapshot this layer becomes.
    pub chain_id: Digest,
    pub store: PathBuf,
}

/// The parts of an image's config a container needs.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<serde_json::Value>,
}

/// An unpacked image, ready to become a container's root: img-unpack's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRecord {
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    /// The image ID (config digest).
    pub id: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Snapshot directories, lowest layer first.
    pub snapshots: Vec<PathBuf>,
    pub chain_ids: Vec<Digest>,
    pub platform: Platform,
    pub config: RunConfig,
    pub store: PathBuf,
}

/// A container, as ctr-spawn (`--cidfile`, `--record`, `-d`) and ctr-list print it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    /// 64 hex digits.
    pub id: String,
    pub name: String,
    /// The image ID (config digest).
    pub image: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<String>,
    pub command: Vec<String>,
    /// RFC 3339 creation time.
    pub created: String,
    pub state: crate::container::Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The container's process was killed by the kernel's OOM killer.
    #[serde(default)]
    pub oom_killed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Docker's `Names`: the container's names (without the leading slash).
    #[serde(default)]
    pub names: Vec<String>,
    /// Docker's STATUS words: "Up 5 seconds", "Exited (0) 2 minutes ago".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// Published ports, `docker ps`' PORTS: `0.0.0.0:8081->80/tcp`.
    #[serde(default)]
    pub ports: Vec<String>,
    /// The networks the container is attached to (`docker ps`' Networks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Its named volumes (`docker ps`' Mounts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<String>,
    #[serde(default)]
    pub restart_count: u32,
    /// Why `state` differs from what state.json records (a dead owner, a
    /// reboot), as ctr-list judges it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// ctr-kill --rm removed the container: this is its last record.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
}

/// Memory of a `stats` record: usage less inactive file cache, as Docker shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsMemory {
    pub usage: u64,
    /// The cgroup's limit, or the host's memory when unlimited.
    pub limit: u64,
    pub percent: f64,
    /// The cgroup's raw usage (page cache included).
    pub raw_usage: u64,
    pub inactive_file: u64,
}

/// One interface's counters in a `stats` record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsNet {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// A resource usage sample of one container, as ctr-stats prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsRecord {
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    pub id: String,
    pub name: String,
    /// RFC 3339 time of the second reading.
    pub read: String,
    pub state: crate::container::Status,
    /// Docker's formula: container CPU delta / system CPU delta × online CPUs × 100.
    pub cpu_percent: f64,
    pub cpu_usage_ns: u64,
    pub system_usage_ns: u64,
    pub online_cpus: u32,
    pub memory: StatsMemory,
    /// Bytes over the container's interfaces except loopback (Docker's NET I/O).
    pub net_rx: u64,
    pub net_tx: u64,
    /// Every interface of the container's network namespace, loopback included.
    #[serde(default)]
    pub networks: BTreeMap<String, StatsNet>,
    pub block_read: u64,
    pub block_write: u64,
    pub pids: u64,
}

/// A failure that a later tool in a pipe may want to see as data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRecord {
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    pub tool: String,
    pub message: String,
    pub exit_code: u8,
}

/// Every record type, tagged by its `type` field.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Record {
    Image(ImageRecord),
    Layer(LayerRecord),
    Snapshot(SnapshotRecord),
    Container(ContainerRecord),
    Stats(StatsRecord),
    Error(ErrorRecord),
}

impl Record {
    /// One JSON line, without the trailing newline.
    pub fn to_line(&self) -> String {
        // Serialising plain data structures with string keys cannot fail.
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"type\":\"error\",\"message\":{:?}}}", e.to_string()))
    }
}

/// Writes one record as a JSON line on stdout and flushes, so that the next
/// tool in a pipe can act on it at once.
pub fn emit(record: &Record) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(record.to_line().as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

/// The chain IDs of a layer stack: `chain(0) = diff(0)`,
/// `chain(n) = sha256(chain(n-1) + " " + diff(n))`, as the OCI image spec defines.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_type_and_version() {
        let d = Digest::of(b"x");
        let rec = Record::Error(ErrorRecord {
            schema_version: SCHEMA_VERSION,
            tool: "t".into(),
            message: "m".into(),
            exit_code: 2,
        });
        let v: serde_json::Value = serde_json::from_str(&rec.to_line()).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["schemaVersion"], 1);
        let line = format!(
            r#"{{"type":"layer","schemaVersion":1,"image":"{d}","index":0,"count":1,"digest":"{d}","size":1,"mediaType":"m","diffId":"{d}","chainId":"{d}","store":"/s","futureField":true}}"#
        );
        assert!(matches!(serde_json::from_str::<Record>(&line).unwrap(), Record::Layer(_)));
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::of(format!("{a} {b}").as_bytes()));
    }
}
