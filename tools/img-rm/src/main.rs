//! img-rm's entry point: parse, run, report.

fn main() {
    kist_common::diag::set_tool_name("img-rm");
    let matches = img_rm::command().get_matches();
    if let Err(e) = img_rm::run(&matches) {
        kist_common::diag::report(&e);
        std::process::exit(i32::from(kist_common::HasExitCode::exit_code(&e).code()));
    }
}
