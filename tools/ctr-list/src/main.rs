//! ctr-list: List containers and their state (docker ps). See ctr-list(1).

fn main() -> std::process::ExitCode {
    kist_common::diag::set_tool_name("ctr-list");
    let matches = ctr_list::command().get_matches();
    match ctr_list::run(&matches) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            kist_common::diag::report(&e);
            kist_common::HasExitCode::exit_code(&e).into()
        }
    }
}
