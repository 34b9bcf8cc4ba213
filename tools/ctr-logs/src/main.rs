//! ctr-logs: Show a container's captured output (docker logs). See ctr-logs(1).

fn main() -> std::process::ExitCode {
    kist_common::diag::set_tool_name("ctr-logs");
    let matches = ctr_logs::command().get_matches();
    match ctr_logs::run(&matches) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            kist_common::diag::report(&e);
            kist_common::HasExitCode::exit_code(&e).into()
        }
    }
}
