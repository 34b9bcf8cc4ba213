//! ctr-stats: live resource usage of containers (docker stats). See ctr-stats(1).

fn main() -> std::process::ExitCode {
    kist_common::diag::set_tool_name("ctr-stats");
    let matches = ctr_stats::command().get_matches();
    match ctr_stats::run(&matches) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            kist_common::diag::report(&e);
            kist_common::HasExitCode::exit_code(&e).into()
        }
    }
}
