//! The stdin convention: a tool that acts on containers or images takes them
//! as arguments or, when none are given and stdin is not a terminal, as
//! JSON Lines on stdin. Any object with an `id` field names its object, so
//! one tool's output feeds the next; a bare word on a line is an id too, so
//! `ctr-list -q | ctr-kill` works as well.

use std::io::{BufRead, IsTerminal};

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read standard input")]
    Read(#[source] std::io::Error),
    #[error("input line {line}: {message}")]
    Malformed { line: usize, message: String },
}

impl crate::HasExitCode for InputError {
    fn exit_code(&self) -> crate::ExitCode {
        match self {
            InputError::Read(_) => crate::ExitCode::Io,
            InputError::Malformed { .. } => crate::ExitCode::Usage,
        }
    }
}

/// One object named on the command line or on stdin.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: String,
    /// The whole record when it came as JSON, for tools that want more than the id.
    pub record: Option<serde_json::Value>,
}

/// Parses one input line: a JSON object with an `id`, or a bare id.
/// Returns `None` for blank lines.
pub fn parse_line(text: &str, line: usize) -> Result<Option<Target>, InputError> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if t.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(t)
            .map_err(|e| InputError::Malformed { line, message: format!("not valid JSON: {e}") })?;
        let id = value
            .get("id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| InputError::Malformed {
                line,
                message: "record has no string \"id\" field".into(),
            })?
            .to_string();
        return Ok(Some(Target { id, record: Some(value) }));
    }
    if t.contains(char::is_whitespace) {
        return Err(InputError::Malformed {
            line,
            message: format!("expected a JSON object or one id, got {t:?}"),
        });
    }
    Ok(Some(Target { id: t.to_string(), record: None }))
}

/// Reads every target from a reader of JSON Lines.
pub fn read_targets<R: BufRead>(reader: R) -> Result<Vec<Target>, InputError> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(InputError::Read)?;
        if let Some(t) = parse_line(&line, i + 1)? {
            out.push(t);
        }
    }
    Ok(out)
}

/// The targets from the arguments, or from stdin when there are none and
/// stdin is not a terminal. An empty stdin yields no targets, not an error.
pub fn targets(args: &[String]) -> Result<Vec<Target>, InputError> {
    if !args.is_empty() {
        return Ok(args.iter().map(|a| Target { id: a.clone(), record: None }).collect());
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(Vec::new());
    }
    read_targets(stdin.lock())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_records_and_bare_ids() {
        let input = "{\"type\":\"container\",\"id\":\"abc\",\"x\":1}\n\n  def  \n";
        let t = read_targets(input.as_bytes()).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].id, "abc");
        assert!(t[0].record.is_some());
        assert_eq!(t[1].id, "def");
        assert!(t[1].record.is_none());
    }

    #[test]
    fn malformed_lines_say_where() {
        let err = read_targets("ok\n{\"noid\":1}\n".as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("input line 2:"), "{err}");
        assert!(read_targets("two words\n".as_bytes()).is_err());
        assert!(read_targets("{broken\n".as_bytes()).is_err());
    }
}
