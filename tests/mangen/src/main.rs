//! Regenerates the tools' man pages (`kist-gen-man DIR`) or installs shell
//! completions (`kist-gen-man --completions SHAREDIR`).

use std::path::Path;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [flag, share] if flag == "--completions" => kist_mangen::write_completions(Path::new(share)),
        [dir] => kist_mangen::write_all(Path::new(dir)),
        _ => {
            eprintln!("usage: kist-gen-man DIR | kist-gen-man --completions SHAREDIR");
            return std::process::ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kist-gen-man: {e}");
            std::process::ExitCode::from(7)
        }
    }
}
