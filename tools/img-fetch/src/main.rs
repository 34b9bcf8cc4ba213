//! img-fetch's entry point: parse, run, report.

fn main() -> std::process::ExitCode {
    kist_common::diag::set_tool_name("img-fetch");
    let matches = img_fetch::command().get_matches();
    match img_fetch::run(&matches) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            kist_common::diag::report(&e);
            kist_common::HasExitCode::exit_code(&e).into()
        }
    }
}
