//! Docker's `--format`: `json`, `table`, or a Go-template subset over a
//! record's Docker field names (`{{.ID}}`, `table {{.ID}}\t{{.Image}}`,
//! `{{json .}}`, `{{.Label "k"}}`, `{{upper .Names}}`), rendered as
//! docker/cli renders them: `table` templates through a tab writer with a
//! header row, others one line per record. One implementation for every
//! lister (ctr-list, img-list, ctr-stats), so the wrapper has none.

use std::collections::BTreeMap;

use crate::output::Format;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("template parsing error: {0}")]
    Parse(String),
    #[error("template: executing {template:?} at <{action}>: {message}")]
    Exec { template: String, action: String, message: String },
}

/// What `--format` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// `json`, `table`, or nothing (JSON Lines unless stdout is a terminal).
    Plain(Format),
    /// A Go template (with or without the `table` prefix).
    Template(Template),
}

impl Choice {
    /// Parses `--format`: `json` and `table` as [`Format::choose`], anything
    /// else as a template.
    pub fn parse(flag: Option<&str>) -> Result<Choice, TemplateError> {
        match flag {
            None | Some("json") | Some("table") => {
                Format::choose(flag).map(Choice::Plain).map_err(TemplateError::Parse)
            }
            Some(t) => Template::parse(t).map(Choice::Template),
        }
    }
}

/// One record as a template sees it: Docker's field names and their values
/// as docker/cli prints them, and the labels for `{{.Label "k"}}`.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub fields: Vec<(&'static str, String)>,
    pub labels: BTreeMap<String, String>,
}

impl Row {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// Replaces a field's value (or adds the field).
    pub fn set(&mut self, name: &'static str, value: String) {
        match self.fields.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v = value,
            None => self.fields.push((name, value)),
        }
    }

    /// `{{json .}}`: the fields as one JSON object, keys sorted as Go's
    /// encoding of a map sorts them.
    pub fn json(&self) -> String {
        let map: BTreeMap<&str, &str> = self.fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        serde_json::to_string(&map).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Func {
    None,
    Json,
    Upper,
    Lower,
    Title,
    Truncate(usize),
    Pad(usize, usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// `.` (None) or `.Field`, through a function.
    Field {
        name: Option<String>,
        func: Func,
        action: String,
    },
    Label {
        key: String,
        action: String,
    },
}

/// Names a field's column for `table`, or None for a field the record lacks.
pub type HeaderFn = dyn Fn(&str) -> Option<String>;

/// A parsed `--format` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    table: bool,
    parts: Vec<Part>,
}

fn unquote(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    Some(inner.replace("\\\"", "\"").replace("\\\\", "\\"))
}

fn parse_field(tok: &str) -> Result<Option<String>, String> {
    if tok == "." {
        return Ok(None);
    }
    match tok.strip_prefix('.') {
        Some(name) if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            Ok(Some(name.to_string()))
        }
        _ => Err(format!("unexpected {tok:?} in command")),
    }
}

fn parse_action(action: &str) -> Result<Part, String> {
    let words: Vec<&str> = split_words(action);
    let label = |key: &str| -> Result<Part, String> {
        let key = unquote(key).ok_or_else(|| format!("Label wants a quoted key in {action:?}"))?;
        Ok(Part::Label { key, action: action.to_string() })
    };
    let num = |s: &str| s.parse::<usize>().map_err(|_| format!("bad number {s:?} in {action:?}"));
    let field = |name, func| Part::Field { name, func, action: action.to_string() };
    match words.as_slice() {
        [one] => Ok(field(parse_field(one)?, Func::None)),
        [".Label", key] => label(key),
        ["json", arg] => Ok(field(parse_field(arg)?, Func::Json)),
        ["upper", arg] => Ok(field(parse_field(arg)?, Func::Upper)),
        ["lower", arg] => Ok(field(parse_field(arg)?, Func::Lower)),
        ["title", arg] => Ok(field(parse_field(arg)?, Func::Title)),
        ["truncate", arg, n] => Ok(field(parse_field(arg)?, Func::Truncate(num(n)?))),
        ["pad", arg, l, r] => Ok(field(parse_field(arg)?, Func::Pad(num(l)?, num(r)?))),
        _ => Err(format!("function or action not supported: {{{{{action}}}}}")),
    }
}

/// Splits an action into words, keeping a quoted string whole.
fn split_words(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match (c, quoted) {
            ('"', false) => {
                quoted = true;
                start.get_or_insert(i);
            }
            ('"', true) => quoted = false,
            (c, false) if c.is_whitespace() => {
                if let Some(st) = start.take() {
                    out.push(&s[st..i]);
                }
            }
            _ => {
                start.get_or_insert(i);
            }
        }
    }
    if let Some(st) = start {
        out.push(&s[st..]);
    }
    out
}

impl Template {
    /// Parses a template. As docker/cli does, a leading `table` asks for a
    /// header row and aligned columns, and the two-character sequences `\t`
    /// and `\n` stand for a tab and a newline.
    pub fn parse(format: &str) -> Result<Template, TemplateError> {
        let (table, body) = match format.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => (true, rest.trim()),
            _ => (false, format),
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = body.as_str();
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| TemplateError::Parse(format!("unclosed action in {format:?}")))?;
            let action = after[..close].trim().trim_start_matches('-').trim_end_matches('-').trim();
            parts.push(parse_action(action).map_err(TemplateError::Parse)?);
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { source: format.to_string(), table, parts })
    }

    pub fn is_table(&self) -> bool {
        self.table
    }

    /// Whether rendering reads the field: it is named, or `.` (all fields)
    /// is. A lister computes a costly field only when it is read.
    pub fn uses(&self, field: &str) -> bool {
        self.parts.iter().any(|p| match p {
            Part::Field { name: None, .. } => true,
            Part::Field { name: Some(n), .. } => n == field,
            _ => false,
        })
    }

    fn render_one(&self, row: &Row, header: Option<&HeaderFn>) -> Result<String, TemplateError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Label { key, .. } => match header {
                    Some(_) => out.push_str("LABEL"),
                    None => out.push_str(row.labels.get(key).map(String::as_str).unwrap_or("")),
                },
                Part::Field { name, func, action } => {
                    if let Some(h) = header {
                        if let Some(n) = name {
                            match h(n) {
                                Some(words) => out.push_str(&words),
                                None => {
                                    return Err(TemplateError::Exec {
                                        template: self.source.clone(),
                                        action: action.clone(),
                                        message: format!("can't evaluate field {n}"),
                                    })
                                }
                            }
                        }
                        continue;
                    }
                    let value = match name {
                        None => row.json(),
                        Some(n) => match row.get(n) {
                            Some(v) if *func == Func::Json => serde_json::to_string(v).unwrap_or_default(),
                            Some(v) => v.to_string(),
                            None => {
                                return Err(TemplateError::Exec {
                                    template: self.source.clone(),
                                    action: action.clone(),
                                    message: format!("can't evaluate field {n}"),
                                })
                            }
                        },
                    };
                    out.push_str(&apply(func, value));
                }
            }
        }
        Ok(out)
    }

    /// Renders every row. `header` names a field's column (docker's
    /// header words, "CONTAINER ID" for ID), None for a field the record
    /// type lacks: the whole template is checked against it first, so a
    /// bad field fails even when there are no rows.
    pub fn render(&self, rows: &[Row], header: &HeaderFn) -> Result<String, TemplateError> {
        let mut lines = Vec::with_capacity(rows.len() + 1);
        let head = self.render_one(&Row::default(), Some(header))?;
        if self.table {
            lines.push(head);
        }
        for r in rows {
            lines.push(self.render_one(r, None)?);
        }
        if self.table {
            Ok(tabwrite(&lines))
        } else {
            let mut s = String::new();
            for l in lines {
                s.push_str(&l);
                s.push('\n');
            }
            Ok(s)
        }
    }
}

fn apply(func: &Func, v: String) -> String {
    match func {
        Func::None | Func::Json => v,
        Func::Upper => v.to_uppercase(),
        Func::Lower => v.to_lowercase(),
        Func::Title => {
            let mut c = v.chars();
            c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
        }
        Func::Truncate(n) => v.chars().take(*n).collect(),
        Func::Pad(l, r) => format!("{}{v}{}", " ".repeat(*l), " ".repeat(*r)),
    }
}

/// Go's text/tabwriter as docker/cli configures it (minwidth 10, padding
/// 3, spaces): tab-terminated cells are aligned per column, the last cell
/// of a line is not.
pub fn tabwrite(lines: &[String]) -> String {
    let cells: Vec<Vec<&str>> =
        lines.iter().flat_map(|l| l.split('\n')).map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for row in &cells {
        for (i, c) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(c.chars().count() + 3).max(10);
        }
    }
    let mut out = String::new();
    for row in &cells {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            line.push_str(c);
            if i + 1 < row.len() {
                line.extend(std::iter::repeat_n(' ', widths[i] - c.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// docker/cli's Go time format for `CreatedAt`: "2006-01-02 15:04:05 +0000 UTC".
pub fn created_at(rfc3339: &str) -> String {
    match crate::timefmt::parse_rfc3339(rfc3339) {
        Some(t) => {
            let s = crate::container::rfc3339(t.floor() as i64, 0);
            format!("{} {} +0000 UTC", &s[..10], &s[11..19])
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            fields: vec![("ID", "abc".into()), ("Names", "web".into()), ("Image", "busybox".into())],
            labels: [("tier".to_string(), "front".to_string())].into(),
        }
    }

    fn header(n: &str) -> Option<String> {
        match n {
            "ID" => Some("CONTAINER ID".into()),
            "Names" | "Image" => Some(n.to_uppercase()),
            _ => None,
        }
    }

    #[test]
    fn plain_templates_print_one_line_per_record() {
        let t = Template::parse("{{.ID}}: {{.Names}} {{.Label \"tier\"}}").unwrap();
        assert_eq!(t.render(&[row(), row()], &header).unwrap(), "abc: web front\nabc: web front\n");
        let t = Template::parse("{{upper .Names}}|{{truncate .Image 4}}|{{json .Names}}").unwrap();
        assert_eq!(t.render(&[row()], &header).unwrap(), "WEB|busy|\"web\"\n");
    }

    #[test]
    fn json_dot_is_the_fields() {
        let t = Template::parse("{{json .}}").unwrap();
        assert_eq!(
            t.render(&[row()], &header).unwrap(),
            "{\"ID\":\"abc\",\"Image\":\"busybox\",\"Names\":\"web\"}\n"
        );
    }

    #[test]
    fn table_templates_align_like_tabwriter() {
        let t = Template::parse("table {{.ID}}\\t{{.Names}}").unwrap();
        assert!(t.is_table());
        assert_eq!(t.render(&[row()], &header).unwrap(), "CONTAINER ID   NAMES\nabc            web\n");
        let t = Template::parse("table {{.Names}}\t{{.ID}}").unwrap();
        assert_eq!(t.render(&[row()], &header).unwrap(), "NAMES     CONTAINER ID\nweb       abc\n");
    }

    #[test]
    fn unknown_fields_and_bad_actions_fail() {
        let t = Template::parse("{{.Nope}}").unwrap();
        assert!(t.render(&[row()], &header).is_err());
        assert!(t.render(&[], &header).is_err());
        assert!(Template::parse("{{range .}}").is_err());
        assert!(Template::parse("{{.ID").is_err());
        assert_eq!(Choice::parse(Some("json")).unwrap(), Choice::Plain(Format::Json));
        assert!(matches!(Choice::parse(Some("{{.ID}}")).unwrap(), Choice::Template(_)));
    }

    #[test]
    fn uses_names_the_fields_read() {
        let t = Template::parse("table {{.ID}}\\t{{upper .Names}}").unwrap();
        assert!(t.uses("ID") && t.uses("Names") && !t.uses("Mounts"));
        assert!(Template::parse("{{json .}}").unwrap().uses("Mounts"));
        let mut r = row();
        r.set("Names", "db".into());
        r.set("Mounts", "v".into());
        assert_eq!(
            Template::parse("{{.Names}} {{.Mounts}}")
                .unwrap()
                .render(&[r], &|_| Some(String::new()))
                .unwrap(),
            "db v\n"
        );
    }

    #[test]
    fn created_at_like_go() {
        assert_eq!(created_at("2023-11-14T22:13:20.5Z"), "2023-11-14 22:13:20 +0000 UTC");
    }
}
