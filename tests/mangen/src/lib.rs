//! Man pages and shell completions, generated from each tool's clap
//! definition (its `command()`) plus the hand-written sections of its
//! `MAN` constant. `kist-gen-man` writes them into `man/`; the
//! `man_pages` test fails when the committed pages drift from the code.

use std::path::Path;

use kist_common::man::ManExtra;

/// Every Rust tool with its CLI and extra man page sections.
pub fn tools() -> Vec<(&'static str, clap::Command, ManExtra)> {
    // One line per tool crate, in the order of the README's table.
    vec![
        ("img-fetch", img_fetch::command(), img_fetch::MAN),
        ("img-unpack", img_unpack::command(), img_unpack::MAN),
        ("img-list", img_list::command(), img_list::MAN),
        ("img-rm", img_rm::command(), img_rm::MAN),
    ]
}

/// Escapes text for roff: backslashes, and a leading `.` or `'` that roff
/// would take for a request.
fn roff_escape(line: &str) -> String {
    let escaped = line.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

fn section(out: &mut String, title: &str, body: &str) {
    if body.trim().is_empty() {
        return;
    }
    out.push_str(&format!(".SH \"{title}\"\n.nf\n"));
    for line in body.lines() {
        out.push_str(&roff_escape(line));
        out.push('\n');
    }
    out.push_str(".fi\n");
}

/// The complete roff page of one tool.
pub fn render(name: &'static str, cmd: &clap::Command, extra: &ManExtra) -> Result<String, std::io::Error> {
    let cmd = cmd.clone().name(name).bin_name(name);
    let man = clap_mangen::Man::new(cmd).date("").source("kist").manual("kist manual");
    let mut buf: Vec<u8> = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    man.render_options_section(&mut buf)?;
    man.render_subcommands_section(&mut buf)?;
    let mut out = String::from_utf8_lossy(&buf).into_owned();
    section(&mut out, "JSON", extra.json);
    section(&mut out, "EXIT STATUS", extra.exit_status);
    section(&mut out, "FILES", extra.files);
    section(&mut out, "EXAMPLES", extra.examples);
    section(&mut out, "SEE ALSO", extra.see_also);
    Ok(out)
}

/// Writes every tool's page into `dir` as `<tool>.1`.
pub fn write_all(dir: &Path) -> Result<(), std::io::Error> {
    std::fs::create_dir_all(dir)?;
    for (name, cmd, extra) in tools() {
        std::fs::write(dir.join(format!("{name}.1")), render(name, &cmd, &extra)?)?;
    }
    Ok(())
}

/// Writes bash, zsh and fish completions under a `share` directory.
pub fn write_completions(share: &Path) -> Result<(), std::io::Error> {
    use clap_complete::Shell;
    let targets = [
        (Shell::Bash, "bash-completion/completions", ""),
        (Shell::Zsh, "zsh/vendor-completions", "_"),
        (Shell::Fish, "fish/vendor_completions.d", ""),
    ];
    for (shell, sub, prefix) in targets {
        let dir = share.join(sub);
        std::fs::create_dir_all(&dir)?;
        for (name, cmd, _) in tools() {
            let mut cmd = cmd.name(name).bin_name(name);
            let file = match shell {
                Shell::Fish => format!("{name}.fish"),
                _ => format!("{prefix}{name}"),
            };
            let mut f = std::fs::File::create(dir.join(file))?;
            clap_complete::generate(shell, &mut cmd, name, &mut f);
        }
    }
    Ok(())
}
