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
        ("ctr-spawn", ctr_spawn::command(), ctr_spawn::MAN),
        ("ctr-list", ctr_list::command(), ctr_list::MAN),
        ("ctr-kill", ctr_kill::command(), ctr_kill::MAN),
        ("ctr-logs", ctr_logs::command(), ctr_logs::MAN),
        ("ctr-exec", ctr_exec::command(), ctr_exec::MAN),
        ("ctr-cp", ctr_cp::command(), ctr_cp::MAN),
        ("ctr-stats", ctr_stats::command(), ctr_stats::MAN),
        ("ctr-net", ctr_net::command(), ctr_net::MAN),
        ("ctr-monitor", ctr_monitor::command(), ctr_monitor::MAN),
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

/// A section of prose: each line a filled paragraph; indented lines are
/// kept as they are (commands, JSON shapes).
fn section(out: &mut String, title: &str, body: &str) {
    if body.trim().is_empty() {
        return;
    }
    out.push_str(&format!(".SH \"{title}\"\n"));
    let mut literal = false;
    for line in body.lines() {
        let is_literal = line.starts_with(' ') || line.starts_with('\t');
        if is_literal && !literal {
            out.push_str(".PP\n.nf\n.RS 4\n");
        } else if !is_literal && literal {
            out.push_str(".RE\n.fi\n");
        }
        literal = is_literal;
        if is_literal {
            out.push_str(&roff_escape(line.trim_start()));
        } else if line.trim().is_empty() {
            continue;
        } else {
            out.push_str(".PP\n");
            out.push_str(&roff_escape(line));
        }
        out.push('\n');
    }
    if literal {
        out.push_str(".RE\n.fi\n");
    }
}

/// EXIT STATUS: lines of the form `N  meaning` become a tagged list.
fn exit_section(out: &mut String, body: &str) {
    out.push_str(".SH \"EXIT STATUS\"\n");
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let t = line.trim_start();
        match t.split_once(char::is_whitespace) {
            Some((code, text)) if code.chars().all(|c| c.is_ascii_digit() || c == '-' || c == '+') => {
                out.push_str(&format!(".TP\n.B {}\n{}\n", roff_escape(code), roff_escape(text.trim())));
            }
            _ => out.push_str(&format!(".PP\n{}\n", roff_escape(t))),
        }
    }
}

/// EXAMPLES are shell commands with comments: kept verbatim.
fn literal_section(out: &mut String, title: &str, body: &str) {
    if body.trim().is_empty() {
        return;
    }
    out.push_str(&format!(".SH \"{title}\"\n.nf\n.RS 4\n"));
    for line in body.lines() {
        out.push_str(&roff_escape(line));
        out.push('\n');
    }
    out.push_str(".RE\n.fi\n");
}

/// The complete roff page of one tool.
pub fn render(name: &'static str, cmd: &clap::Command, extra: &ManExtra) -> Result<String, std::io::Error> {
    let cmd = cmd.clone().name(name).bin_name(name);
    let cmd_has_subcommands = cmd.get_subcommands().next().is_some();
    let man = clap_mangen::Man::new(cmd).date("").source("kist").manual("kist manual");
    let mut buf: Vec<u8> = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    man.render_options_section(&mut buf)?;
    if cmd_has_subcommands {
        man.render_subcommands_section(&mut buf)?;
    }
    let mut out = String::from_utf8_lossy(&buf).into_owned();
    section(&mut out, "JSON", extra.json);
    exit_section(&mut out, extra.exit_status);
    section(&mut out, "FILES", extra.files);
    literal_section(&mut out, "EXAMPLES", extra.examples);
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
