//! ctr-exec: run another process inside a running container (docker exec). See ctr-exec(1).

fn main() -> std::process::ExitCode {
    kist_common::diag::set_tool_name("ctr-exec");
    let matches = match ctr_exec::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return kist_common::exit::runner_clap_exit(e),
    };
    match ctr_exec::run(&matches) {
        Ok(status) => std::process::ExitCode::from(status),
        Err(e) => {
            kist_common::diag::report(&e);
            std::process::ExitCode::from(e.status())
        }
    }
}
