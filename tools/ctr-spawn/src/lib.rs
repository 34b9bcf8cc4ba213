//! ctr-spawn creates a container from an unpacked image and runs it
//! attached, as `docker run` does: the CLI and its translation into an OCI
//! runtime bundle live here and in [`options`] and [`bundle`]; the runtime
//! that turns a bundle into a running, confined process is [`runtime`], a
//! library so that the monitor of detached containers can reuse it.

pub mod bundle;
pub mod error;
pub mod image;
pub mod names;
pub mod options;
pub mod restart;
pub mod runtime;

use clap::{Arg, ArgAction, Command};

pub use error::Error;

/// The whole command line.
pub fn command() -> Command {
    let flag = |name: &'static str| Arg::new(name).long(name).action(ArgAction::SetTrue);
    let opt = |name: &'static str| Arg::new(name).long(name).value_name("VALUE");
    let multi = |name: &'static str| Arg::new(name).long(name).action(ArgAction::Append);
    Command::new("ctr-spawn")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Create and run a container from an unpacked image (docker run)")
        .long_about(
            "Create and run a container from an unpacked image, as `docker run` does.\n\n\
             The image comes as img-unpack's `snapshot` record on stdin, or from the store by \
             --image REF (the image must have been unpacked with img-unpack first). ctr-spawn \
             creates containers/<id>/ (an OCI runtime bundle with config.json and state.json), \
             mounts an overlay of the image's snapshots, runs the command in new mount, pid, \
             uts, ipc and network namespaces with Docker's default capabilities, seccomp \
             profile, masked paths, devices and rlimits, waits for it and exits with its status.\n\n\
             With -d a monitor (a host process in its own session, the container init's \
             subreaper parent; ctr-spawn starts the container in it and then execs the small \
             ctr-monitor there, found next to ctr-spawn) runs the container instead: it logs stdout/stderr to \
             containers/<id>/log.jsonl (Docker's json-file format, --log-opt max-size=,max-file= \
             rotation), records exits, applies --restart and removes the container with --rm; \
             ctr-spawn prints the `container` record and exits 0 once the container runs. \
             --create only creates; --start starts a created or stopped container again with its \
             saved configuration and upper directory; --restore, run once after boot \
             (kist-restore.service), starts the `always` containers and the `unless-stopped` ones \
             the user did not stop. The boot id is read from /proc/sys/kernel/random/boot_id, or \
             from the file $KIST_BOOT_ID_FILE names (for tests that simulate a reboot).",
        )
        .arg(
            Arg::new("root")
                .long("root")
                .global(true)
                .value_name("DIR")
                .value_parser(clap::value_parser!(std::path::PathBuf))
                .help("State root (default $KIST_ROOT, else /var/lib/kist)"),
        )
        .arg(opt("image").value_name("REF").help("Run this image from the store (already unpacked by img-unpack) instead of reading a snapshot record"))
        .arg(opt("name").help("Assign a name to the container"))
        .arg(flag("rm").help("Remove the container (state, mounts, cgroup) when it exits"))
        .arg(flag("interactive").short('i').help("Keep stdin open and connect it to the container"))
        .arg(flag("tty").short('t').help("Allocate a pseudo-terminal"))
        .arg(multi("env").short('e').value_name("VAR[=VALUE]").help("Set an environment variable"))
        .arg(multi("env-file").value_name("FILE").help("Read environment variables from a file"))
        .arg(opt("entrypoint").value_name("CMD").help("Override the image's entrypoint (\"\" clears it)"))
        .arg(opt("workdir").short('w').value_name("DIR").help("Working directory inside the container"))
        .arg(opt("user").short('u').value_name("USER[:GROUP]").help("User name or uid, optionally with group"))
        .arg(opt("hostname").short('h').help("Container host name (default: the id's first 12 digits)"))
        .arg(multi("label").short('l').value_name("KEY=VALUE").help("Set a label on the container"))
        .arg(flag("init").help("Run a small reaper as pid 1 that forwards signals"))
        .arg(flag("read-only").help("Mount the root file system read-only"))
        .arg(multi("tmpfs").value_name("DIR[:OPTIONS]").help("Mount a tmpfs at DIR"))
        .arg(multi("volume").short('v').value_name("SRC:DST[:ro|rw]").help("Bind mount a host path or a named volume"))
        .arg(multi("mount").value_name("type=bind|volume|tmpfs,...").help("Attach a mount (Docker's --mount syntax)"))
        .arg(opt("network").alias("net").value_name("bridge|none|host|container:NAME|NETWORK").env("KIST_DEFAULT_NETWORK").help("Network: bridge (default: kist0 with NAT), none (loopback only), host, container:NAME (share another container's), or a user network made by ctr-net"))
        .arg(multi("publish").short('p').value_name("[IP:][HOSTPORT[-END]:]PORT[-END][/tcp|udp]").help("Publish a container port on the host (DNAT; 127.0.0.1 works too)"))
        .arg(flag("publish-all").short('P').help("Publish the image's exposed ports on free host ports"))
        .arg(opt("ip").value_name("IPv4").help("The container's address on its network (default: the next free one)"))
        .arg(multi("network-alias").value_name("NAME").help("Another name the container is found by on a user network"))
        .arg(multi("add-host").value_name("NAME:IP").help("Add a line to the container's /etc/hosts"))
        .arg(multi("dns").value_name("IP").help("Name server for the container's /etc/resolv.conf"))
        .arg(multi("dns-search").value_name("DOMAIN").help("Search domain for the container's /etc/resolv.conf"))
        .arg(multi("dns-option").value_name("OPT").help("Option line for the container's /etc/resolv.conf"))
        .arg(opt("pid").value_name("host").help("Share the host's pid namespace"))
        .arg(opt("ipc").value_name("private|host").help("IPC namespace: private (default) or host"))
        .arg(opt("uts").value_name("host").help("Share the host's UTS namespace"))
        .arg(multi("cap-add").value_name("CAP").help("Add a capability (or ALL)"))
        .arg(multi("cap-drop").value_name("CAP").help("Drop a capability (or ALL)"))
        .arg(flag("privileged").help("All capabilities, no seccomp, no masked paths, all devices"))
        .arg(multi("security-opt").value_name("OPT").help("no-new-privileges[:true], seccomp=unconfined|FILE"))
        .arg(multi("ulimit").value_name("TYPE=SOFT[:HARD]").help("Set an rlimit (e.g. nofile=1024:2048)"))
        .arg(opt("memory").short('m').value_name("BYTES").help("Memory limit (e.g. 32m)"))
        .arg(opt("memory-swap").value_name("BYTES").help("Memory plus swap limit (-1: unlimited)"))
        .arg(opt("cpus").value_name("N").help("Number of CPUs (e.g. 1.5)"))
        .arg(opt("cpu-shares").short('c').value_name("N").help("CPU shares (relative weight)"))
        .arg(opt("pids-limit").value_name("N").help("Limit the number of processes (-1: unlimited)"))
        .arg(opt("cpuset-cpus").value_name("LIST").help("CPUs the container may use (0-3, 0,1)"))
        .arg(opt("cidfile").value_name("FILE").help("Write the container id to FILE"))
        .arg(opt("record").value_name("FILE").help("Write the container record (JSON) to FILE when the container exits"))
        .arg(flag("detach").short('d').help("Run in the background under a monitor; print the container record"))
        .arg(opt("restart").value_name("POLICY").help("Restart policy of a detached container: no, on-failure[:N], always, unless-stopped"))
        .arg(multi("log-opt").value_name("OPT").help("json-file log options: max-size=SIZE, max-file=N"))
        .arg(flag("create").conflicts_with("detach").help("Create the container without starting it (docker create)"))
        .arg(
            opt("start")
                .value_name("NAME|ID")
                .conflicts_with_all(["create", "detach", "image", "command"])
                .help("Start a created or stopped container again (docker start); detached unless -a"),
        )
        .arg(flag("attach").short('a').requires("start").help("With --start: attach to the container and pass its status through"))
        .arg(
            flag("restore")
                .conflicts_with_all(["start", "create", "detach", "image", "command"])
                .help("After a reboot, start the always and unless-stopped containers (kist-restore.service)"),
        )
        .arg(
            opt("monitor-resume")
                .value_name("ID")
                .hide(true)
                .conflicts_with_all(["start", "restore", "create", "detach", "image", "command"])
                .help("Internal: ctr-monitor execs this in the monitor process to restart the container"),
        )
        .arg(
            opt("backoff-ms")
                .value_name("MS")
                .hide(true)
                .requires("monitor-resume")
                .value_parser(clap::value_parser!(u64))
                .help("Internal: the restart backoff ctr-monitor hands back"),
        )
        .arg(
            Arg::new("command")
                .value_name("CMD")
                .num_args(0..)
                .trailing_var_arg(true)
                .help("Command and arguments (default: the image's Entrypoint and Cmd)"),
        )
        .disable_help_flag(true)
        .arg(Arg::new("help").long("help").action(ArgAction::Help).help("Print help"))
        .after_help(
            "Examples:\n  \
             img-fetch docker.io/library/busybox:latest | img-unpack | ctr-spawn --rm -- echo hello\n  \
             ctr-spawn --image busybox --rm -it sh\n  \
             ctr-spawn --image busybox --rm --memory 32m --pids-limit 10 -- sh -c 'exit 7'; echo $?\n  \
             ctr-spawn --image busybox -d --name web --restart unless-stopped --log-opt max-size=1m,max-file=3 -- httpd -f\n  \
             ctr-spawn --image busybox -d --name web -p 127.0.0.1:8080:80 -- httpd -f -p 80\n  \
             ctr-spawn --image busybox --create --name job -- echo hi && ctr-spawn --start job -a\n  \
             KIST_BOOT_ID_FILE=/tmp/boot-id ctr-spawn --restore",
        )
}

/// The hand-written man page sections.
pub const MAN: kist_common::man::ManExtra = kist_common::man::ManExtra {
    json: "Reads one `snapshot` record (img-unpack's output) on stdin unless --image is given; \
           with --image the image must have been unpacked already (ctr-spawn never unpacks: it fails \
           with a message naming img-unpack when a snapshot is missing). \
           Prints nothing on stdout in an attached run: stdout belongs to the container. \
           --cidfile FILE receives the container id; --record FILE receives the `container` record \
           (id, name, image, command, created, state, pid, exitCode, oomKilled) when the container exits. \
           With -d, --create and --start (detached) ctr-spawn prints the `container` record on stdout \
           once the container runs (or is created). The monitor writes containers/<id>/log.jsonl, one \
           {\"log\",\"stream\",\"time\"} object per line; so does an attached run without \
           --rm, whose output also goes to ctr-spawn's stdout and stderr (so ctr-logs shows it, as docker \
           logs does; with -t as stream stdout, the pty's one stream). The monitor also writes state.json (status running, restarting, \
           exited; restartCount, startedAt, finishedAt, exitCode, oomKilled).",
    exit_status: "The container's exit status, or 128+N when it was killed by signal N (137: SIGKILL, \
                  also after the OOM killer, which ctr-spawn reports on stderr).\n\
                  125  ctr-spawn itself failed: a bad flag, a missing image, a setup error.\n\
                  126  the command cannot be executed (permission denied, a directory).\n\
                  127  the command was not found.\n\
                  With -d, --create, --start and --restore: 0 once the container runs (or was created, or \
                  all restores succeeded); 125/126/127 as above when it could not start; --restore exits 1 \
                  if any container could not be restored. --restart with --rm is a usage error (125).",
    files: "containers/<id>/config.json\n    The OCI runtime configuration: the directory is a bundle runc can run \
            once rootfs/ holds the root file system.\n\
            containers/<id>/state.json\n    Status, pid, image, snapshots, exit code.\n\
            containers/<id>/{upper,work,rootfs}\n    Overlay upper and work directories and mount point.\n\
            names/<name>\n    The id of the container of that name.\n\
            volumes/<name>/_data\n    Named volumes. One that is empty when a container using it is \
            created is filled with the image's content at the mount point at that container's first \
            start (what was copied in meanwhile is kept), unless nocopy; one with content never is.\n\
            volumes/<name>/fill.lock, filled\n    Held while a volume is judged and filled; present \
            once it was filled.\n\
            containers/<id>/spawn.json\n    What --start and the monitor need beyond config.json: overlay \
            layers, volumes, restart policy, log options.\n\
            containers/<id>/log.jsonl, log.jsonl.1 ... log.jsonl.N\n    The detached container's output \
            (json-file format), live file and rotated ones (.1 newest).\n\
            networks/<name>.json\n    The container's network (bridge, subnet, leases); `bridge` (bridge kist0) is \
            created by the first container that uses it. See ctr-net(1) and docs/networking.md.\n\
            nftables table ip kist\n    Published ports (DNAT maps pub_any, pub_addr) and masquerade \
            (set subnets), run through nft(8) from the nftables package.\n\
            $KIST_DEFAULT_NETWORK\n    The network used when --network is not given (default bridge).\n\
            kist-restore.service\n    The systemd unit that runs ctr-spawn --restore at boot.\n\
            $KIST_BOOT_ID_FILE\n    If set, the file the boot id is read from instead of \
            /proc/sys/kernel/random/boot_id.",
    examples: "img-unpack busybox | ctr-spawn --rm -- sh -c 'echo hi; exit 7'\n\
               ctr-spawn --image busybox --rm -it --name shell sh\n\
               ctr-spawn --image busybox --rm -v /srv/data:/data:ro --memory 64m -- ls /data\n\
               ctr-spawn --image busybox -d --name web --restart on-failure:5 --log-opt max-size=1m,max-file=3 -- httpd -f\n\
               ctr-spawn --image busybox --create --name job -- date && ctr-spawn --start job -a\n\
               ctr-spawn --image busybox -d --name web -p 127.0.0.1:8080:80 -p 5353:53/udp -- httpd -f -p 80\n\
               ctr-spawn --image busybox -d -P --network appnet --network-alias api -- httpd -f -p 80\n\
               ctr-spawn --image busybox --rm --network container:web -- wget -qO- http://127.0.0.1/",
    see_also: "img-unpack(1), ctr-monitor(1), ctr-list(1), ctr-kill(1), ctr-logs(1), ctr-exec(1), ctr-net(1), nft(8), kist-state(5), kist-records(5), runc(8)",
};

/// Runs the container; returns the status to exit with.
pub fn run(matches: &clap::ArgMatches) -> Result<u8, Error> {
    if let Some(id) = matches.get_one::<String>("monitor-resume") {
        let root = kist_common::StateRoot::resolve(
            matches.get_one::<std::path::PathBuf>("root").map(|p| p.as_path()),
        )?;
        let backoff = matches.get_one::<u64>("backoff-ms").copied().unwrap_or(100);
        return Ok(runtime::monitor::resume(&root, id, backoff));
    }
    if matches.get_flag("restore") || matches.get_one::<String>("start").is_some() {
        let root = kist_common::StateRoot::resolve(
            matches.get_one::<std::path::PathBuf>("root").map(|p| p.as_path()),
        )?;
        return match matches.get_one::<String>("start") {
            Some(q) => runtime::detached::start(
                &root,
                q,
                matches.get_flag("attach"),
                matches.get_flag("interactive"),
            ),
            None => runtime::detached::restore(&root),
        };
    }
    let opts = options::Options::from_matches(matches)?;
    if matches.get_flag("create") {
        runtime::detached::create_only(opts)
    } else if opts.detach {
        runtime::detached::run(opts)
    } else {
        if opts.restart != restart::Policy::No {
            return Err(Error::Usage("--restart applies to detached containers: add -d".into()));
        }
        runtime::attached::run(opts)
    }
}
