//! ctr-stats samples containers' resource usage as `docker stats` does:
//! CPU % by Docker's formula (the cgroup's CPU time delta over the host's
//! CPU time delta from /proc/stat, times the online CPUs, times 100),
//! memory less inactive file cache against the limit (or the host's
//! memory), network counters of the container's own network namespace
//! (/proc/<pid>/net/dev of its init), block I/O and pids from its cgroup
//! (v1, hybrid or v2 through kist_common::cgroup).
//!
//! The first sample needs two readings; instead of Docker's two-second
//! priming they are taken [`PRIMING`] apart. Every round reads all
//! containers, then sleeps once, so the cost of many containers is their
//! reading, not their waiting. Without names, every round lists the
//! containers again, so stream mode picks up containers started later.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, Command};
use kist_common::cgroup::{self, Cgroup, CgroupLayout, Stats};
use kist_common::container::Status;
use kist_common::lifecycle::{self, Host};
use kist_common::output::{self, Format};
use kist_common::record::{Record, StatsMemory, StatsNet, StatsRecord, SCHEMA_VERSION};
use kist_common::template::{self, Row};
use kist_common::{ExitCode, HasExitCode, StateRoot};

/// The gap between the two readings of the first sample.
pub const PRIMING: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("cannot write the output")]
    Write(#[source] std::io::Error),
    #[error(transparent)]
    Root(#[from] kist_common::root::RootError),
    #[error(transparent)]
    Lifecycle(#[from] lifecycle::LifecycleError),
    #[error(transparent)]
    Input(#[from] kist_common::input::InputError),
}

impl HasExitCode for Error {
    fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) => ExitCode::Usage,
            Error::Write(_) => ExitCode::Io,
            Error::Root(e) => e.exit_code(),
            Error::Lifecycle(e) => e.exit_code(),
            Error::Input(e) => e.exit_code(),
        }
    }
}

pub fn command() -> Command {
    Command::new("ctr-stats")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Live resource usage of containers (docker stats)")
        .long_about(
            "Print resource usage samples of containers, as `docker stats` does: one `stats` \
             record per container per interval (JSON Lines), or docker stats' table with \
             --format table. CPU % follows Docker's formula (the container's CPU time over the \
             host's, times the online CPUs); memory is the cgroup's usage less inactive file \
             cache; NET I/O comes from the container's network namespace (loopback left out, \
             as Docker does; every interface is in the record's `networks`); BLOCK I/O from \
             blkio or io.stat.\n\n\
             Without names: every running container (with -a every container), listed anew \
             each interval, so containers started later join the stream. Names may also come \
             as JSON Lines records with an `id` on stdin. The first sample takes two readings \
             100 ms apart instead of Docker's two-second priming.",
        )
        .arg(
            Arg::new("root")
                .long("root")
                .global(true)
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help("State root (default $KIST_ROOT, else /var/lib/kist)"),
        )
        .arg(Arg::new("containers").value_name("CONTAINER").num_args(0..).help("Id, id prefix or name"))
        .arg(
            Arg::new("all")
                .short('a')
                .long("all")
                .action(ArgAction::SetTrue)
                .help("Show every container (default: running ones)"),
        )
        .arg(
            Arg::new("no-stream")
                .long("no-stream")
                .action(ArgAction::SetTrue)
                .help("Print one sample and exit"),
        )
        .arg(
            Arg::new("interval")
                .long("interval")
                .value_name("DURATION")
                .default_value("1s")
                .help("Time between samples in stream mode (500ms, 2s, 1.5)"),
        )
        .arg(
            Arg::new("format")
                .long("format")
                .value_name("json|table|TEMPLATE")
                .help("Output format: json, table, or a Go template over Docker's fields ({{.Name}}, 'table {{.Name}}\\t{{.CPUPerc}}', {{json .}}); default table on a terminal, else json"),
        )
        .after_help(
            "Examples:\n  ctr-stats --no-stream\n  ctr-stats --no-stream web | jq .memory.usage\n  \
             ctr-stats --format table --interval 2s web db",
        )
}

pub const MAN: kist_common::man::ManExtra = kist_common::man::ManExtra {
    json: "Writes one `stats` record per container per sample: {\"type\":\"stats\", \
           \"schemaVersion\":1, \"id\", \"name\", \"read\" (RFC 3339), \"state\", \"cpuPercent\", \
           \"cpuUsageNs\", \"systemUsageNs\", \"onlineCpus\", \"memory\": {\"usage\", \"limit\", \
           \"percent\", \"rawUsage\", \"inactiveFile\"}, \"netRx\", \"netTx\", \"networks\": \
           {IFACE: {\"rxBytes\", \"txBytes\", \"rxPackets\", \"txPackets\"}}, \"blockRead\", \
           \"blockWrite\", \"pids\"}. Reads container names or records with an `id` on stdin \
           when none are given and stdin is not a terminal.",
    exit_status: kist_common::exit::EXIT_STATUS_TEXT,
    files: "containers/<id>/state.json\n    The container's cgroup and init pid.\n\
            /sys/fs/cgroup/...\n    cpuacct/cpu.stat, memory, blkio/io.stat, pids of the \
            container's cgroup.\n/proc/stat, /proc/meminfo, /proc/<pid>/net/dev\n    The host's CPU \
            time and memory; the container's network counters.",
    examples: "ctr-stats --no-stream\nctr-stats --no-stream web | jq .cpuPercent\n\
               ctr-list -q | ctr-stats --no-stream --format table",
    see_also: "ctr-list(1), ctr-spawn(1), docker-stats(1)",
};

/// "500ms", "2s", "1m", or plain seconds ("1.5").
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v > 0.0).then(|| Duration::from_secs_f64(v * scale))
}

/// The host's total CPU time in nanoseconds: the first seven fields of
/// /proc/stat's `cpu` line (user to softirq), as Docker sums them.
pub fn system_usage_ns(proc_stat: &str, clock_ticks: i64) -> Option<u64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: u64 = line.split_whitespace().skip(1).take(7).filter_map(|f| f.parse::<u64>().ok()).sum();
    Some(ticks.saturating_mul(1_000_000_000 / clock_ticks.max(1) as u64))
}

/// Interfaces of /proc/<pid>/net/dev.
pub fn parse_net_dev(text: &str) -> BTreeMap<String, StatsNet> {
    let mut out = BTreeMap::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else { continue };
        let f: Vec<u64> = rest.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        if f.len() < 10 {
            continue;
        }
        out.insert(
            name.trim().to_string(),
            StatsNet { rx_bytes: f[0], rx_packets: f[1], tx_bytes: f[8], tx_packets: f[9] },
        );
    }
    out
}

/// Docker's CPU %: 0 when either delta is not positive.
pub fn cpu_percent(cpu_before: u64, cpu_after: u64, sys_before: u64, sys_after: u64, online: u32) -> f64 {
    let cpu = cpu_after.saturating_sub(cpu_before) as f64;
    let sys = sys_after.saturating_sub(sys_before) as f64;
    if cpu > 0.0 && sys > 0.0 {
        cpu / sys * online as f64 * 100.0
    } else {
        0.0
    }
}

/// One container to sample.
struct Target {
    id: String,
    name: String,
    status: Status,
    pid: Option<i32>,
    cgroup: Option<Cgroup>,
}

/// One reading of one container.
#[derive(Default, Clone)]
struct Reading {
    stats: Stats,
    net: BTreeMap<String, StatsNet>,
}

struct Sampler {
    root: StateRoot,
    layout: Option<CgroupLayout>,
    host: Host,
    online: u32,
    mem_total: u64,
}

impl Sampler {
    fn target(&self, id: &str) -> Option<Target> {
        let state = lifecycle::load(&self.root, id).ok()?;
        let seen = lifecycle::observe(&state, &self.host);
        let live =
            seen.process_alive && matches!(seen.status, Status::Running | Status::Paused | Status::Dead);
        let cgroup = match (&self.layout, &state.cgroup) {
            (Some(l), Some(name)) if live => cgroup::open(l, name).ok(),
            _ => None,
        };
        Some(Target {
            id: state.id.clone(),
            name: state.name.clone(),
            status: seen.status,
            pid: if live { state.pid } else { None },
            cgroup,
        })
    }

    fn read(&self, t: &Target) -> Reading {
        let stats = t.cgroup.as_ref().and_then(|c| c.stats().ok()).unwrap_or_default();
        let net = t
            .pid
            .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/net/dev")).ok())
            .map(|s| parse_net_dev(&s))
            .unwrap_or_default();
        Reading { stats, net }
    }

    /// The priming reading: CPU time only (one small file per container),
    /// as nothing else needs a delta.
    fn read_cpu(&self, t: &Target) -> Reading {
        let mut r = Reading::default();
        r.stats.cpu_usage_ns = match (&self.layout, &t.cgroup) {
            (Some(layout), Some(cg)) => cpu_usage_ns(layout, cg),
            _ => None,
        };
        r
    }

    fn system(&self) -> u64 {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| system_usage_ns(&s, self.host.clock_ticks))
            .unwrap_or(0)
    }

    fn record(&self, t: &Target, before: &Reading, after: &Reading, sys: (u64, u64)) -> StatsRecord {
        let s = &after.stats;
        let cpu_after = s.cpu_usage_ns.unwrap_or(0);
        let cpu_before = before.stats.cpu_usage_ns.unwrap_or(0);
        let raw = s.memory_usage.unwrap_or(0);
        let inactive = s.memory_inactive_file.unwrap_or(0);
        let usage = if inactive < raw { raw - inactive } else { raw };
        let limit = s.memory_limit.filter(|l| *l > 0 && *l < self.mem_total).unwrap_or(self.mem_total);
        let percent = if limit > 0 { usage as f64 / limit as f64 * 100.0 } else { 0.0 };
        let (rx, tx) = after
            .net
            .iter()
            .filter(|(n, _)| n.as_str() != "lo")
            .fold((0, 0), |a, (_, v)| (a.0 + v.rx_bytes, a.1 + v.tx_bytes));
        StatsRecord {
            schema_version: SCHEMA_VERSION,
            id: t.id.clone(),
            name: t.name.clone(),
            read: kist_common::container::now_rfc3339(),
            state: t.status,
            cpu_percent: if t.pid.is_some() {
                cpu_percent(cpu_before, cpu_after, sys.0, sys.1, self.online)
            } else {
                0.0
            },
            cpu_usage_ns: cpu_after,
            system_usage_ns: sys.1,
            online_cpus: self.online,
            memory: StatsMemory { usage, limit, percent, raw_usage: raw, inactive_file: inactive },
            net_rx: rx,
            net_tx: tx,
            networks: after.net.clone(),
            block_read: s.io_read_bytes.unwrap_or(0),
            block_write: s.io_write_bytes.unwrap_or(0),
            pids: s.pids_current.unwrap_or(0),
        }
    }
}

/// A cgroup's CPU time alone: `cpuacct.usage` (v1) or `usage_usec` of
/// `cpu.stat` (v2), without the other files `Cgroup::stats` reads.
fn cpu_usage_ns(layout: &CgroupLayout, cg: &Cgroup) -> Option<u64> {
    let paths = cg.paths();
    match layout.version {
        cgroup::CgroupVersion::V2 => {
            let text = std::fs::read_to_string(paths.first()?.join("cpu.stat")).ok()?;
            let usec: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse().ok())?;
            Some(usec.saturating_mul(1000))
        }
        _ => {
            let base = layout.controller_dir("cpuacct")?;
            let dir = paths.iter().find(|p| p.starts_with(base))?;
            std::fs::read_to_string(dir.join("cpuacct.usage")).ok()?.trim().parse().ok()
        }
    }
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Docker's table columns.
pub fn table_row(r: &StatsRecord) -> Vec<String> {
    vec![
        r.id.chars().take(12).collect(),
        r.name.clone(),
        format!("{:.2}%", r.cpu_percent),
        format!(
            "{} / {}",
            output::human_size_binary(r.memory.usage),
            output::human_size_binary(r.memory.limit)
        ),
        format!("{:.2}%", r.memory.percent),
        format!("{} / {}", output::human_size_decimal(r.net_rx), output::human_size_decimal(r.net_tx)),
        format!(
            "{} / {}",
            output::human_size_decimal(r.block_read),
            output::human_size_decimal(r.block_write)
        ),
        r.pids.to_string(),
    ]
}

/// A sample as Docker's stats template fields (`{{.Name}}`, `{{.CPUPerc}}`, ...).
pub fn template_row(r: &StatsRecord) -> Row {
    let [id, name, cpu, mem, memp, net, block, pids]: [String; 8] =
        table_row(r).try_into().unwrap_or_default();
    Row {
        fields: vec![
            ("Container", id.clone()),
            ("Name", name),
            ("ID", id),
            ("CPUPerc", cpu),
            ("MemUsage", mem),
            ("MemPerc", memp),
            ("NetIO", net),
            ("BlockIO", block),
            ("PIDs", pids),
        ],
        labels: Default::default(),
    }
}

/// docker stats' column headers.
pub fn header(field: &str) -> Option<String> {
    let h = match field {
        "Container" => "CONTAINER",
        "Name" => "NAME",
        "ID" => "CONTAINER ID",
        "CPUPerc" => "CPU %",
        "MemUsage" => "MEM USAGE / LIMIT",
        "MemPerc" => "MEM %",
        "NetIO" => "NET I/O",
        "BlockIO" => "BLOCK I/O",
        "PIDs" => "PIDS",
        _ => return None,
    };
    Some(h.to_string())
}

/// `docker stats`' default table.
pub const DEFAULT_TABLE: &str = "table {{.ID}}\\t{{.Name}}\\t{{.CPUPerc}}\\t{{.MemUsage}}\\t{{.MemPerc}}\\t{{.NetIO}}\\t{{.BlockIO}}\\t{{.PIDs}}";

pub const TABLE_HEADERS: [&str; 8] =
    ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"];

pub fn run(m: &clap::ArgMatches) -> Result<(), Error> {
    let root = StateRoot::resolve(m.get_one::<PathBuf>("root").map(|p| p.as_path()))?;
    let format = template::Choice::parse(m.get_one::<String>("format").map(|s| s.as_str()))
        .map_err(|e| Error::Usage(e.to_string()))?;
    let interval = m
        .get_one::<String>("interval")
        .map(|s| parse_duration(s).ok_or_else(|| Error::Usage(format!("invalid --interval {s:?}"))))
        .transpose()?
        .unwrap_or(Duration::from_secs(1));
    let all = m.get_flag("all");
    let no_stream = m.get_flag("no-stream");
    let args: Vec<String> =
        m.get_many::<String>("containers").map(|v| v.cloned().collect()).unwrap_or_default();
    let named: Vec<String> = kist_common::input::targets(&args)?
        .into_iter()
        .map(|t| lifecycle::resolve(&root, &t.id))
        .collect::<Result<_, _>>()?;
    let by_name = !named.is_empty();
    // SAFETY: sysconf has no memory effects.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as u32;
    let mut sampler =
        Sampler { layout: cgroup::host().ok(), root, host: Host::probe(), online, mem_total: mem_total() };
    let list = |s: &Sampler| -> Result<Vec<Target>, Error> {
        let ids = if by_name { named.clone() } else { lifecycle::container_ids(&s.root)? };
        let mut out: Vec<Target> = ids.iter().filter_map(|id| s.target(id)).collect();
        if !by_name && !all {
            out.retain(|t| t.pid.is_some());
        }
        if !by_name {
            out.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(out)
    };
    // Each container's last reading with the host CPU time read with it.
    let mut previous: BTreeMap<String, (Reading, u64)> = BTreeMap::new();
    loop {
        let targets = list(&sampler)?;
        // Containers seen for the first time (all of them in the first
        // round, those started since in a stream) get a priming reading:
        // all read at once, then one short sleep.
        let fresh: Vec<&Target> = targets.iter().filter(|t| !previous.contains_key(&t.id)).collect();
        // What needs no delta (memory, pids, I/O, network) is read inside
        // the priming window, so the window costs no extra time.
        let mut early: BTreeMap<String, Reading> = BTreeMap::new();
        if !fresh.is_empty() {
            let t0 = std::time::Instant::now();
            let sys = sampler.system();
            for t in &fresh {
                previous.insert(t.id.clone(), (sampler.read_cpu(t), sys));
            }
            for t in &fresh {
                early.insert(t.id.clone(), sampler.read(t));
            }
            if let Some(rest) = PRIMING.checked_sub(t0.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        let sys = sampler.system();
        let mut records = Vec::with_capacity(targets.len());
        let mut next: BTreeMap<String, (Reading, u64)> = BTreeMap::new();
        for t in &targets {
            let now = match early.remove(&t.id) {
                Some(mut r) => {
                    r.stats.cpu_usage_ns = sampler.read_cpu(t).stats.cpu_usage_ns;
                    r
                }
                None => sampler.read(t),
            };
            let (before, before_sys) = previous.get(&t.id).cloned().unwrap_or_default();
            records.push(sampler.record(t, &before, &now, (before_sys, sys)));
            next.insert(t.id.clone(), (now, sys));
        }
        previous = next;
        emit(&records, &format, !no_stream)?;
        if no_stream {
            return Ok(());
        }
        std::thread::sleep(interval);
        sampler.host = Host::probe();
    }
}

fn emit(records: &[StatsRecord], format: &template::Choice, stream: bool) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match format {
        template::Choice::Plain(Format::Json) => {
            for r in records {
                let line = Record::Stats(r.clone()).to_line();
                out.write_all(line.as_bytes()).and_then(|_| out.write_all(b"\n")).map_err(Error::Write)?;
            }
        }
        _ => {
            let default;
            let tmpl = match format {
                template::Choice::Template(t) => t,
                template::Choice::Plain(_) => {
                    default =
                        template::Template::parse(DEFAULT_TABLE).map_err(|e| Error::Usage(e.to_string()))?;
                    &default
                }
            };
            if stream && tmpl.is_table() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                out.write_all(b"\x1b[2J\x1b[H").map_err(Error::Write)?;
            }
            let rows: Vec<Row> = records.iter().map(template_row).collect();
            let text = tmpl.render(&rows, &header).map_err(|e| Error::Usage(e.to_string()))?;
            out.write_all(text.as_bytes()).map_err(Error::Write)?;
        }
    }
    out.flush().map_err(Error::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), None);
        assert_eq!(parse_duration("x"), None);
    }

    #[test]
    fn docker_cpu_formula() {
        // Half of one CPU's time on a 2-CPU host: 1 s used of 4 s system time × 2 CPUs.
        assert!((cpu_percent(0, 1_000_000_000, 0, 4_000_000_000, 2) - 50.0).abs() < 1e-9);
        assert_eq!(cpu_percent(5, 5, 0, 10, 2), 0.0);
    }

    #[test]
    fn proc_files_parse() {
        let stat = "cpu  100 0 50 850 0 0 0 7 0 0\ncpu0 50 0 25 425 0 0 0 0 0 0\n";
        assert_eq!(system_usage_ns(stat, 100), Some(1000 * 10_000_000));
        let dev = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:    1234      10    0    0    0     0          0         0     1234      10    0    0    0     0       0          0\n  eth0: 99 1 0 0 0 0 0 0 77 2 0 0 0 0 0 0\n";
        let n = parse_net_dev(dev);
        assert_eq!(n["lo"].rx_bytes, 1234);
        assert_eq!(n["eth0"].tx_bytes, 77);
        assert_eq!(n["eth0"].tx_packets, 2);
    }

    #[test]
    fn table_units_like_docker() {
        let r = StatsRecord {
            schema_version: 1,
            id: "0123456789abcdef".into(),
            name: "web".into(),
            read: String::new(),
            state: Status::Running,
            cpu_percent: 12.345,
            cpu_usage_ns: 0,
            system_usage_ns: 0,
            online_cpus: 2,
            memory: StatsMemory {
                usage: 52_428_800,
                limit: 1 << 30,
                percent: 4.8828125,
                raw_usage: 0,
                inactive_file: 0,
            },
            net_rx: 1500,
            net_tx: 0,
            networks: BTreeMap::new(),
            block_read: 4_261_000,
            block_write: 0,
            pids: 3,
        };
        assert_eq!(
            table_row(&r),
            ["0123456789ab", "web", "12.35%", "50MiB / 1GiB", "4.88%", "1.5kB / 0B", "4.26MB / 0B", "3"]
        );
    }
}
