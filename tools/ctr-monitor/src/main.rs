//! ctr-monitor: the resident monitor of a detached container, started by
//! ctr-spawn. See ctr-monitor(8).

fn main() -> std::process::ExitCode {
    kist_common::diag::set_tool_name("ctr-monitor");
    let matches = ctr_monitor::command().get_matches();
    match ctr_monitor::run(&matches) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            kist_common::diag::report(&e);
            kist_common::HasExitCode::exit_code(&e).into()
        }
    }
}
