//! img-unpack's entry point: parse, run, report.

fn main() {
    kist_common::diag::set_tool_name("img-unpack");
    let matches = img_unpack::command().get_matches();
    if let Err(e) = img_unpack::run(&matches) {
        kist_common::diag::report(&e);
        std::process::exit(i32::from(kist_common::HasExitCode::exit_code(&e).code()));
    }
}
