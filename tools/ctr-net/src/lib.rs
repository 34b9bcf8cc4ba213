//! ctr-net manages user networks as `docker network` does: `create` writes
//! `networks/<name>.json` (a bridge `kist-<id>`, a subnet the host does
//! not route, its gateway), `rm` removes one no container uses any more
//! (its bridge and nftables element too), `ls` and `inspect` show them
//! with their attached containers. Attaching and releasing containers is
//! ctr-spawn's and the teardown's job (kist_common::net); ctr-net only
//! reads the leases, after collecting those whose owner process is gone.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};
use kist_common::net::{self, ipam::Subnet, NetError, Network};
use kist_common::output::Format;
use kist_common::{ExitCode, HasExitCode, StateRoot};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("cannot write the output")]
    Write(#[source] std::io::Error),
    #[error(transparent)]
    Root(#[from] kist_common::root::RootError),
    #[error(transparent)]
    Net(#[from] NetError),
    /// Some of several names failed; each was reported.
    #[error("{0} of the networks could not be handled")]
    Partial(usize, ExitCode),
}

impl HasExitCode for Error {
    fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) => ExitCode::Usage,
            Error::Write(_) => ExitCode::Io,
            Error::Root(e) => e.exit_code(),
            Error::Net(e) => e.exit_code(),
            Error::Partial(_, c) => *c,
        }
    }
}

pub fn command() -> Command {
    let root = Arg::new("root")
        .long("root")
        .global(true)
        .value_name("DIR")
        .value_parser(clap::value_parser!(PathBuf))
        .help("State root (default $KIST_ROOT, else /var/lib/kist)");
    let format = Arg::new("format")
        .long("format")
        .value_name("json|table")
        .help("Output format (default: table on a terminal, JSON Lines otherwise)");
    let names = |help: &'static str| {
        Arg::new("network").value_name("NETWORK").num_args(1..).required(true).help(help)
    };
    Command::new("ctr-net")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Create, list, inspect and remove container networks (docker network)")
        .long_about(
            "Manage user networks, as `docker network` does. A network is a Linux bridge with a \
             subnet (by default the first of 172.17-31.0.0/16 and 192.168.*.0/20 that neither the \
             host's routing table nor another network uses) and its gateway address on the bridge. \
             ctr-spawn --network NAME attaches a container: a veth pair, an address leased from \
             networks/<name>.json, a default route via the gateway, masquerade for traffic leaving \
             the subnet. Containers on one user network find each other by name and by \
             --network-alias through their /etc/hosts, which kist rewrites whenever a container \
             joins or leaves. The default network `bridge` (bridge kist0) is created by the first \
             container that uses it and cannot be removed.",
        )
        .subcommand_required(true)
        .arg(root)
        .subcommand(
            Command::new("create")
                .about("Create a user network")
                .arg(Arg::new("name").value_name("NAME").required(true).help("The network's name"))
                .arg(
                    Arg::new("subnet")
                        .long("subnet")
                        .value_name("CIDR")
                        .help("Subnet, e.g. 10.20.0.0/24 (default: a free one)"),
                )
                .arg(
                    Arg::new("gateway")
                        .long("gateway")
                        .value_name("IP")
                        .help("Gateway address (default: the subnet's first)"),
                )
                .arg(
                    Arg::new("driver")
                        .short('d')
                        .long("driver")
                        .value_name("bridge")
                        .help("Driver: only bridge"),
                )
                .arg(
                    Arg::new("label")
                        .long("label")
                        .value_name("KEY=VALUE")
                        .action(ArgAction::Append)
                        .help("Set a label"),
                ),
        )
        .subcommand(
            Command::new("rm")
                .visible_alias("remove")
                .about("Remove networks no container uses")
                .arg(names("Network names")),
        )
        .subcommand(
            Command::new("ls").visible_alias("list").about("List networks").arg(format.clone()).arg(
                Arg::new("quiet").short('q').long("quiet").action(ArgAction::SetTrue).help("Only names"),
            ),
        )
        .subcommand(
            Command::new("inspect").about("Show networks with their containers").arg(names("Network names")),
        )
        .after_help(
            "Examples:\n  \
             ctr-net create appnet\n  \
             ctr-spawn --image busybox -d --name db --network appnet --network-alias database -- httpd -f\n  \
             ctr-spawn --image busybox --rm --network appnet -- wget -qO- http://database/\n  \
             ctr-net ls --format table\n  \
             ctr-net inspect appnet | jq .containers\n  \
             ctr-net rm appnet",
        )
}

pub const MAN: kist_common::man::ManExtra = kist_common::man::ManExtra {
    json: "create, rm and inspect print one `network` record per network: {\"schemaVersion\", \"type\": \
           \"network\", \"name\", \"id\", \"driver\", \"bridge\", \"subnet\", \"gateway\", \"created\", \
           \"labels\", \"containers\": {ID: {\"name\", \"address\", \"aliases\", \"ports\"}}}; rm adds \
           \"removed\": true. ls prints the same records (JSON) or Docker's NETWORK ID, NAME, DRIVER, SCOPE \
           table. Nothing is read on stdin.",
    exit_status: "0 success.\n2 usage error (a bad name, subnet or gateway).\n3 no such network.\n\
                  6 conflict: the name exists, the subnet overlaps another network's, the network still has \
                  containers, or it is the pre-defined `bridge`.\n1 any other failure.",
    files: "networks/<name>.json\n    The network: bridge, subnet, gateway and one lease per attached \
            container (address, name, aliases, veth, published ports, owner process).\n\
            locks/networks.lock\n    Taken by every change to any network.\n\
            nftables table ip kist\n    kist's firewall rules: the published-port maps pub_any and \
            pub_addr, the masqueraded set subnets. See docs/networking.md.",
    examples: "ctr-net create --subnet 10.20.0.0/24 appnet\n\
               ctr-spawn --image busybox -d --name web --network appnet -p 8080:80 -- httpd -f\n\
               ctr-net inspect appnet\n\
               ctr-net rm appnet",
    see_also: "ctr-spawn(1), ctr-list(1), ctr-kill(1), kist-state(5), kist-records(5), nft(8)",
};

/// The `network` record.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkRecord {
    pub schema_version: u32,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: String,
    pub id: String,
    pub driver: String,
    pub bridge: String,
    pub subnet: String,
    pub gateway: String,
    pub created: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub containers: BTreeMap<String, Endpoint>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub name: String,
    pub address: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
}

fn record(n: &Network, removed: bool) -> NetworkRecord {
    NetworkRecord {
        schema_version: kist_common::record::SCHEMA_VERSION,
        kind: "network",
        name: n.name.clone(),
        id: n.id.clone(),
        driver: n.driver.clone(),
        bridge: n.bridge.clone(),
        subnet: n.subnet.to_string(),
        gateway: n.gateway.to_string(),
        created: n.created.clone(),
        labels: n.labels.clone(),
        containers: n
            .leases
            .iter()
            .map(|(id, l)| {
                (
                    id.clone(),
                    Endpoint {
                        name: l.name.clone(),
                        address: l.address.to_string(),
                        aliases: l.aliases.clone(),
                        ports: l.ports.iter().map(|p| p.to_string()).collect(),
                    },
                )
            })
            .collect(),
        removed,
    }
}

fn emit(r: &NetworkRecord) -> Result<(), Error> {
    use std::io::Write;
    let line = serde_json::to_string(r).map_err(|e| Error::Write(std::io::Error::other(e)))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|_| out.flush()).map_err(Error::Write)
}

pub fn run(m: &ArgMatches) -> Result<(), Error> {
    let root = StateRoot::resolve(m.get_one::<PathBuf>("root").map(|p| p.as_path()))?;
    match m.subcommand() {
        Some(("create", s)) => create(&root, s),
        Some(("rm", s)) => each(s, |name| {
            let n = net::remove(&root, name)?;
            emit(&record(&n, true))
        }),
        Some(("inspect", s)) => {
            net::collect_all(&root)?;
            each(s, |name| emit(&record(&net::load(&root, name)?, false)))
        }
        Some(("ls", s)) => ls(&root, s),
        _ => Err(Error::Usage("a subcommand is required: create, rm, ls, inspect".into())),
    }
}

/// Runs `f` for every name, reporting each failure; fails if any did.
fn each(s: &ArgMatches, mut f: impl FnMut(&str) -> Result<(), Error>) -> Result<(), Error> {
    let mut failed = 0;
    let mut code = ExitCode::Failure;
    for name in s.get_many::<String>("network").into_iter().flatten() {
        if let Err(e) = f(name) {
            kist_common::diag::report(&e);
            code = e.exit_code();
            failed += 1;
        }
    }
    if failed > 0 {
        Err(Error::Partial(failed, code))
    } else {
        Ok(())
    }
}

fn create(root: &StateRoot, s: &ArgMatches) -> Result<(), Error> {
    let name = s.get_one::<String>("name").cloned().unwrap_or_default();
    if let Some(d) = s.get_one::<String>("driver") {
        if d != "bridge" {
            return Err(Error::Usage(format!("driver {d:?} is not supported: only bridge")));
        }
    }
    let subnet = s
        .get_one::<String>("subnet")
        .map(|v| v.parse::<Subnet>())
        .transpose()
        .map_err(|e| Error::Usage(e.to_string()))?;
    let gateway = s
        .get_one::<String>("gateway")
        .map(|g| g.parse().map_err(|_| Error::Usage(format!("invalid --gateway {g:?}"))))
        .transpose()?;
    let mut labels = BTreeMap::new();
    for l in s.get_many::<String>("label").into_iter().flatten() {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_string(), v.to_string());
    }
    root.ensure()?;
    let n = net::create(root, &name, subnet, gateway, labels)?;
    emit(&record(&n, false))
}

fn ls(root: &StateRoot, s: &ArgMatches) -> Result<(), Error> {
    net::collect_all(root)?;
    let nets = net::list(root)?;
    if s.get_flag("quiet") {
        for n in &nets {
            println!("{}", n.name);
        }
        return Ok(());
    }
    match Format::choose(s.get_one::<String>("format").map(|s| s.as_str())).map_err(Error::Usage)? {
        Format::Json => nets.iter().try_for_each(|n| emit(&record(n, false))),
        Format::Table => {
            let rows: Vec<Vec<String>> = nets
                .iter()
                .map(|n| vec![n.id[..12].to_string(), n.name.clone(), n.driver.clone(), "local".to_string()])
                .collect();
            print!("{}", kist_common::output::table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows));
            Ok(())
        }
    }
}
