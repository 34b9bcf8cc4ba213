//! ctr-spawn: create and start a container (docker run). The container's
//! exit status is passed through; see ctr-spawn(1).

fn main() -> std::process::ExitCode {
    kist_common::diag::set_tool_name("ctr-spawn");
    let matches = match ctr_spawn::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return kist_common::exit::runner_clap_exit(e),
    };
    match ctr_spawn::run(&matches) {
        Ok(status) => std::process::ExitCode::from(status),
        Err(e) => {
            kist_common::diag::report(&e);
            std::process::ExitCode::from(e.status())
        }
    }
}
