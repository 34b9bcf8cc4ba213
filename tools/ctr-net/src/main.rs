//! ctr-net: Create, list, inspect and remove container networks (docker network). See ctr-net(1).

fn main() -> std::process::ExitCode {
    kist_common::diag::set_tool_name("ctr-net");
    let matches = ctr_net::command().get_matches();
    match ctr_net::run(&matches) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            kist_common::diag::report(&e);
            kist_common::HasExitCode::exit_code(&e).into()
        }
    }
}
