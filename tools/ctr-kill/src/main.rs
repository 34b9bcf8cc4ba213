//! ctr-kill: Signal, stop, pause, resume and remove containers (docker kill, stop, rm, pause, unpause). See ctr-kill(1).

fn main() -> std::process::ExitCode {
    kist_common::diag::set_tool_name("ctr-kill");
    let matches = ctr_kill::command().get_matches();
    match ctr_kill::run(&matches) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            kist_common::diag::report(&e);
            kist_common::HasExitCode::exit_code(&e).into()
        }
    }
}
