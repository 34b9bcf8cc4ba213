//! `docker inspect`'s document of a container, built from kist's state so
//! that `kist inspect` prints what Docker users parse (`.[0].State.Running`
//! with jq) and `--format` templates find Docker's fields
//! (`{{.State.Pid}}`, `{{.NetworkSettings.IPAddress}}`,
//! `{{range .Mounts}}{{.Source}}{{end}}`, rendered by
//! [`crate::gotmpl`]). The fields are the ones kist knows: the record
//! (state, times, exit code, labels, ports), state.json (hostname, the
//! networks' addresses), config.json (environment, working directory,
//! user, mounts), spawn.json (the restart policy), the networks' files
//! (gateway, prefix) and the image's config while the store has it
//! (entrypoint, exposed ports, volumes, labels). Docker's fields that
//! have no counterpart in kist (EndpointID, SandboxKey, ...) are left out;
//! a template naming one fails as docker's does for a key its map lacks.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::container::{self, ContainerPaths, ContainerState, Status};
use crate::record::ContainerRecord;
use crate::root::StateRoot;

/// Go's zero time, which Docker prints for a time that never was.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// `NetworkSettings.Ports` from the bindings in force
/// (`0.0.0.0:8080->80/tcp`): `{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}`.
pub fn ports(bindings: &[String]) -> Value {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for b in bindings {
        let Some((host, inner)) = b.split_once("->") else { continue };
        let Some((ip, port)) = host.rsplit_once(':') else { continue };
        out.entry(inner.to_string()).or_default().push(json!({"HostIp": ip, "HostPort": port}));
    }
    serde_json::to_value(out).unwrap_or_default()
}

fn read_json(path: &std::path::Path) -> Value {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null)
}

/// The document of one container, as `docker inspect` prints it (the
/// subset described in the module header). `rec` is the container as
/// ctr-list judges it (its true state).
pub fn container(root: &StateRoot, rec: &ContainerRecord) -> Value {
    let paths = ContainerPaths::new(root, &rec.id);
    let state = ContainerState::load(&paths.state()).ok();
    let config = read_json(&paths.config());
    let spawn = read_json(&paths.dir.join("spawn.json"));
    let process = &config["process"];
    let running = matches!(rec.state, Status::Running | Status::Paused | Status::Restarting);
    let time = |t: &Option<String>| t.clone().unwrap_or_else(|| ZERO_TIME.to_string());
    let uid = process["user"]["uid"].as_u64().unwrap_or(0);
    let gid = process["user"]["gid"].as_u64().unwrap_or(0);
    let user = if uid == 0 && gid == 0 { String::new() } else { format!("{uid}:{gid}") };
    let cwd = process["cwd"].as_str().unwrap_or("/");
    let mounts: Vec<Value> = container::user_mounts(root, &rec.id)
        .unwrap_or_default()
        .into_iter()
        .map(|m| match &m.volume {
            Some(name) => json!({
                "Type": "volume", "Name": name, "Source": m.source, "Destination": m.destination,
                "Driver": "local", "Mode": if m.readonly { "ro" } else { "" }, "RW": !m.readonly, "Propagation": "",
            }),
            // Name and Driver are empty, not absent: docker's templates see
            // its typed MountPoint, where `{{.Name}}` of a bind mount is "".
            None => json!({
                "Type": "bind", "Name": "", "Source": m.source, "Destination": m.destination, "Driver": "",
                "Mode": if m.readonly { "ro" } else { "" }, "RW": !m.readonly, "Propagation": "rprivate",
            }),
        })
        .collect();
    let addresses: BTreeMap<String, String> = state.as_ref().map(|s| s.networks.clone()).unwrap_or_default();
    let mut networks = Map::new();
    for (name, addr) in &addresses {
        // The network's own file names its id, gateway and subnet.
        let net = read_json(&root.networks_dir().join(format!("{name}.json")));
        let prefix =
            net["subnet"].as_str().and_then(|s| s.rsplit_once('/')).and_then(|(_, p)| p.parse::<u8>().ok());
        networks.insert(
            name.clone(),
            json!({
                "NetworkID": net["id"].as_str().unwrap_or_default(),
                "Gateway": net["gateway"].as_str().unwrap_or_default(),
                "IPAddress": addr,
                "IPPrefixLen": prefix.unwrap_or(0),
            }),
        );
    }
    let bridge = networks.get("bridge").cloned().unwrap_or(Value::Null);
    // The image's config, while the store has it: Docker's container
    // Config starts from it (entrypoint, exposed ports, volumes, labels).
    let image = crate::store::Store::open(root)
        .ok()
        .and_then(|store| crate::catalog::load_config(&store, &rec.image).ok())
        .map(|c| c.run_config)
        .unwrap_or_default();
    let entrypoint = image.entrypoint.clone().filter(|e| !e.is_empty() && rec.command.starts_with(e));
    let cmd: Vec<String> = match &entrypoint {
        Some(e) => rec.command[e.len()..].to_vec(),
        None => rec.command.clone(),
    };
    let mut exposed: BTreeMap<String, Value> =
        image.exposed_ports.iter().map(|p| (p.clone(), json!({}))).collect();
    for b in &rec.ports {
        if let Some((_, inner)) = b.split_once("->") {
            exposed.insert(inner.to_string(), json!({}));
        }
    }
    let anonymous: Vec<String> = state.as_ref().map(|s| s.anonymous_volumes.clone()).unwrap_or_default();
    let mut volumes: BTreeMap<String, Value> = image.volumes.iter().map(|v| (v.clone(), json!({}))).collect();
    for m in container::user_mounts(root, &rec.id).unwrap_or_default() {
        if m.volume.as_ref().is_some_and(|v| anonymous.contains(v)) {
            volumes.insert(m.destination.display().to_string(), json!({}));
        }
    }
    let mut labels = image.labels.clone();
    labels.extend(rec.labels.clone());
    let some_map = |m: BTreeMap<String, Value>| if m.is_empty() { Value::Null } else { json!(m) };
    let network_mode = spawn["network"]["network"].as_str().unwrap_or("default");
    let restart = &spawn["restart"];
    json!({
        "Id": rec.id,
        "Created": rec.created,
        "Path": rec.command.first().cloned().unwrap_or_default(),
        "Args": rec.command.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": rec.state.as_str(),
            "Running": running,
            "Paused": rec.state == Status::Paused,
            "Restarting": rec.state == Status::Restarting,
            "OOMKilled": rec.oom_killed,
            "Dead": rec.state == Status::Dead,
            "Pid": if running { rec.pid.unwrap_or(0) } else { 0 },
            "ExitCode": rec.exit_code.unwrap_or(0),
            "Error": "",
            "StartedAt": time(&rec.started_at),
            "FinishedAt": time(&rec.finished_at),
        },
        "Image": rec.image.to_string(),
        "ResolvConfPath": paths.resolv_conf(),
        "HostnamePath": paths.hostname(),
        "HostsPath": paths.hosts(),
        "LogPath": paths.log(),
        "Name": format!("/{}", rec.name),
        "RestartCount": rec.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "HostConfig": {
            "AutoRemove": state.as_ref().is_some_and(|s| s.auto_remove),
            "NetworkMode": network_mode,
            "RestartPolicy": {
                "Name": restart["name"].as_str().unwrap_or("no"),
                "MaximumRetryCount": restart["maximumRetryCount"].as_u64().unwrap_or(0),
            },
        },
        "Mounts": mounts,
        "Config": {
            "Hostname": state.as_ref().map(|s| s.hostname.clone()).unwrap_or_default(),
            "Domainname": "",
            "User": user,
            "Tty": state.as_ref().is_some_and(|s| s.tty),
            "Env": process["env"].clone(),
            "Cmd": cmd,
            "Image": rec.image_ref.clone().unwrap_or_else(|| rec.image.to_string()),
            "WorkingDir": if cwd == "/" { "" } else { cwd },
            "Entrypoint": entrypoint,
            "ExposedPorts": some_map(exposed),
            "Volumes": some_map(volumes),
            "Labels": labels,
        },
        "NetworkSettings": {
            "Ports": if running { ports(&rec.ports) } else { json!({}) },
            "IPAddress": addresses.get("bridge").cloned().unwrap_or_default(),
            "Gateway": bridge["Gateway"].as_str().unwrap_or_default(),
            "IPPrefixLen": bridge["IPPrefixLen"].as_u64().unwrap_or(0),
            "Networks": networks,
        },
    })
}

/// Docker's indentation of `docker inspect`: a JSON array, four spaces.
pub fn pretty_array(docs: &[Value]) -> String {
    use serde::Serialize;
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if docs.serialize(&mut ser).is_err() {
        return "[]".into();
    }
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_as_docker_keys_them() {
        let p = ports(&[
            "0.0.0.0:8080->80/tcp".into(),
            "127.0.0.1:9000->80/tcp".into(),
            "0.0.0.0:53->53/udp".into(),
        ]);
        assert_eq!(p["80/tcp"][1]["HostPort"], "9000");
        assert_eq!(p["80/tcp"][0]["HostIp"], "0.0.0.0");
        assert_eq!(p["53/udp"][0]["HostPort"], "53");
    }

    #[test]
    fn arrays_are_indented_by_four() {
        assert_eq!(pretty_array(&[json!({"Id": "x"})]), "[\n    {\n        \"Id\": \"x\"\n    }\n]");
        assert_eq!(pretty_array(&[]), "[]");
    }
}
