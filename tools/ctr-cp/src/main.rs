//! ctr-cp: copy files and tar streams between the host and a container (docker cp). See ctr-cp(1).

fn main() -> std::process::ExitCode {
    kist_common::diag::set_tool_name("ctr-cp");
    let matches = ctr_cp::command().get_matches();
    match ctr_cp::run(&matches) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            kist_common::diag::report(&e);
            kist_common::HasExitCode::exit_code(&e).into()
        }
    }
}
