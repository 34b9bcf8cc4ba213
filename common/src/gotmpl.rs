//! Go's text/template over a JSON document, for `docker inspect --format`
//! (`{{.State.Running}}`, `{{json .Config.Labels}}`,
//! `{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}`,
//! `{{index .Config.Labels "k"}}`): the subset Docker users write. The
//! listers' flat `--format` templates over table rows are
//! [`crate::template`]'s; this one walks nested values.
//!
//! Supported: text; actions with `{{-`/`-}}` trimming; field chains on
//! `.`, `$` and variables; string, number and boolean literals;
//! pipelines (`X | json`); `if`/`with`/`range` with `else`, `range $v :=`
//! and `range $k, $v :=`; the functions json, index, len, join, split,
//! upper, lower, title, truncate, pad, print, println, printf (%s %d %v
//! %q), eq, ne, not, and, or. Values print as Go's fmt prints decoded
//! JSON: maps as `map[k:v]` (sorted keys), lists as `[a b]`, null as
//! `<nil>`; a key the document lacks is an error, as in docker inspect.

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GoTemplateError {
    #[error("template parsing error: {0}")]
    Parse(String),
    #[error("template: executing {template:?} at <{action}>: {message}")]
    Exec { template: String, action: String, message: String },
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    /// A field chain on `.` (empty: `.` itself).
    Dot(Vec<String>),
    /// `$` (empty name) or `$name`, then a field chain.
    Var(String, Vec<String>),
    Lit(Value),
    /// A function by name.
    Ident(String),
    /// `(pipeline)` and a field chain on its value.
    Sub(Box<Pipeline>, Vec<String>),
}

/// One command of a pipeline: a function and its arguments, or one operand.
type Cmd = Vec<Arg>;

#[derive(Debug, Clone, PartialEq)]
struct Pipeline {
    /// `$k, $v :=` (range) or `$x :=`.
    decl: Vec<String>,
    cmds: Vec<Cmd>,
    source: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Print(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct GoTemplate {
    source: String,
    nodes: Vec<Node>,
}

fn parse_err(m: impl Into<String>) -> GoTemplateError {
    GoTemplateError::Parse(m.into())
}

/// Splits an action into words: quoted strings whole, `|` alone.
fn lex(s: &str) -> Result<Vec<String>, GoTemplateError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut lit = String::from('"');
                let mut closed = false;
                while let Some(d) = chars.next() {
                    lit.push(d);
                    if d == '\\' {
                        if let Some(e) = chars.next() {
                            lit.push(e);
                        }
                    } else if d == '"' {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return Err(parse_err(format!("unterminated quoted string in {s:?}")));
                }
                out.push(lit);
            }
            '|' | ',' | '(' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(c.to_string());
            }
            ')' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                // `(...).Field`: the chain belongs to the parenthesis.
                let mut tok = String::from(")");
                while let Some(&d) = chars.peek() {
                    if d == '.' || d.is_ascii_alphanumeric() || d == '_' {
                        tok.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(tok);
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

fn chain(s: &str) -> Vec<String> {
    s.split('.').filter(|p| !p.is_empty()).map(String::from).collect()
}

fn parse_arg(w: &str) -> Result<Arg, GoTemplateError> {
    if let Some(rest) = w.strip_prefix('$') {
        let (name, fields) = match rest.find('.') {
            Some(i) => (&rest[..i], chain(&rest[i..])),
            None => (rest, Vec::new()),
        };
        return Ok(Arg::Var(name.to_string(), fields));
    }
    if w.starts_with('.') {
        return Ok(Arg::Dot(chain(w)));
    }
    if w.starts_with('"') {
        let v: Value = serde_json::from_str(w).map_err(|_| parse_err(format!("bad string {w}")))?;
        return Ok(Arg::Lit(v));
    }
    if w == "true" || w == "false" {
        return Ok(Arg::Lit(Value::Bool(w == "true")));
    }
    if w == "nil" {
        return Ok(Arg::Lit(Value::Null));
    }
    if let Ok(n) = w.parse::<i64>() {
        return Ok(Arg::Lit(Value::from(n)));
    }
    if w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Ok(Arg::Ident(w.to_string()));
    }
    Err(parse_err(format!("unexpected {w:?} in command")))
}

fn parse_pipeline(src: &str, allow_decl: bool) -> Result<Pipeline, GoTemplateError> {
    let words = lex(src)?;
    let mut decl = Vec::new();
    let mut rest: &[String] = &words;
    if allow_decl {
        if let Some(pos) = words.iter().position(|w| w == ":=") {
            decl = words[..pos]
                .iter()
                .filter(|w| *w != ",")
                .map(|w| {
                    w.strip_prefix('$')
                        .map(String::from)
                        .ok_or_else(|| parse_err(format!("bad variable {w}")))
                })
                .collect::<Result<_, _>>()?;
            rest = &words[pos + 1..];
        }
    }
    let mut pos = 0;
    let cmds = parse_cmds(rest, &mut pos, src)?;
    if pos != rest.len() {
        return Err(parse_err(format!("unexpected ) in {src:?}")));
    }
    Ok(Pipeline { decl, cmds, source: src.to_string() })
}

/// Commands separated by `|`, up to a `)` (left for the caller) or the end.
fn parse_cmds(words: &[String], pos: &mut usize, src: &str) -> Result<Vec<Cmd>, GoTemplateError> {
    let mut cmds = Vec::new();
    let mut cmd: Cmd = Vec::new();
    while *pos < words.len() {
        let w = &words[*pos];
        if w.starts_with(')') {
            break;
        }
        *pos += 1;
        match w.as_str() {
            "|" => {
                if cmd.is_empty() {
                    return Err(parse_err(format!("missing command in {src:?}")));
                }
                cmds.push(std::mem::take(&mut cmd));
            }
            "," => {}
            "(" => {
                let inner = parse_cmds(words, pos, src)?;
                let close = words.get(*pos).ok_or_else(|| parse_err(format!("unclosed ( in {src:?}")))?;
                *pos += 1;
                let fields = chain(&close[1..]);
                cmd.push(Arg::Sub(
                    Box::new(Pipeline { decl: Vec::new(), cmds: inner, source: src.to_string() }),
                    fields,
                ));
            }
            _ => cmd.push(parse_arg(w)?),
        }
    }
    if cmd.is_empty() {
        return Err(parse_err(format!("missing value for command in {src:?}")));
    }
    cmds.push(cmd);
    Ok(cmds)
}

enum Tok {
    Text(String),
    Action(String),
}

fn tokens(src: &str) -> Result<Vec<Tok>, GoTemplateError> {
    let mut out = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let mut text = rest[..open].to_string();
        if trim_next {
            text = text.trim_start().to_string();
        }
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or_else(|| parse_err(format!("unclosed action in {src:?}")))?;
        let mut action = &after[..close];
        if let Some(a) = action.strip_prefix('-').filter(|a| a.starts_with(char::is_whitespace)) {
            text = text.trim_end().to_string();
            action = a;
        }
        trim_next = false;
        if let Some(a) = action.strip_suffix('-').filter(|a| a.ends_with(char::is_whitespace)) {
            trim_next = true;
            action = a;
        }
        if !text.is_empty() {
            out.push(Tok::Text(text));
        }
        out.push(Tok::Action(action.trim().to_string()));
        rest = &after[close + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    if !text.is_empty() {
        out.push(Tok::Text(text.to_string()));
    }
    Ok(out)
}

/// Parses nodes up to an `else` or `end` (returned) or the end of input.
fn parse_nodes(
    toks: &mut std::iter::Peekable<std::vec::IntoIter<Tok>>,
) -> Result<(Vec<Node>, Option<String>), GoTemplateError> {
    let mut nodes = Vec::new();
    while let Some(t) = toks.next() {
        match t {
            Tok::Text(s) => nodes.push(Node::Text(s)),
            Tok::Action(a) => {
                if a.starts_with("/*") {
                    continue;
                }
                let (kw, rest) = match a.split_once(char::is_whitespace) {
                    Some((k, r)) => (k, r.trim()),
                    None => (a.as_str(), ""),
                };
                match kw {
                    "end" | "else" => return Ok((nodes, Some(a.clone()))),
                    "if" | "with" | "range" => {
                        let p = parse_pipeline(rest, kw == "range" || kw == "with")?;
                        let (body, stop) = parse_nodes(toks)?;
                        let els = match stop.as_deref() {
                            Some("end") => Vec::new(),
                            Some("else") => match parse_nodes(toks)? {
                                (e, Some(s)) if s == "end" => e,
                                _ => return Err(parse_err(format!("unexpected EOF: {kw} without end"))),
                            },
                            _ => return Err(parse_err(format!("unexpected EOF: {kw} without end"))),
                        };
                        nodes.push(match kw {
                            "if" => Node::If(p, body, els),
                            "with" => Node::With(p, body, els),
                            _ => Node::Range(p, body, els),
                        });
                    }
                    _ => nodes.push(Node::Print(parse_pipeline(&a, true)?)),
                }
            }
        }
    }
    Ok((nodes, None))
}

impl GoTemplate {
    pub fn parse(src: &str) -> Result<GoTemplate, GoTemplateError> {
        let mut toks = tokens(src)?.into_iter().peekable();
        let (nodes, stop) = parse_nodes(&mut toks)?;
        if let Some(s) = stop {
            return Err(parse_err(format!("unexpected {{{{{s}}}}}")));
        }
        Ok(GoTemplate { source: src.to_string(), nodes })
    }

    /// Renders the template with `doc` as `.` and `$`.
    pub fn render(&self, doc: &Value) -> Result<String, GoTemplateError> {
        let mut out = String::new();
        let mut vars = vec![(String::new(), doc.clone())];
        self.exec(&self.nodes, doc, &mut vars, &mut out)?;
        Ok(out)
    }

    fn fail(&self, p: &Pipeline, message: String) -> GoTemplateError {
        GoTemplateError::Exec { template: self.source.clone(), action: p.source.clone(), message }
    }

    fn exec(
        &self,
        nodes: &[Node],
        dot: &Value,
        vars: &mut Vec<(String, Value)>,
        out: &mut String,
    ) -> Result<(), GoTemplateError> {
        for n in nodes {
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Print(p) => {
                    let v = self.eval(p, dot, vars)?;
                    if p.decl.is_empty() {
                        out.push_str(&show(&v));
                    } else {
                        for d in &p.decl {
                            vars.push((d.clone(), v.clone()));
                        }
                    }
                }
                Node::If(p, then, els) => {
                    let v = self.eval(p, dot, vars)?;
                    self.exec(if truth(&v) { then } else { els }, dot, vars, out)?;
                }
                Node::With(p, then, els) => {
                    let v = self.eval(p, dot, vars)?;
                    if truth(&v) {
                        let mark = vars.len();
                        for d in &p.decl {
                            vars.push((d.clone(), v.clone()));
                        }
                        self.exec(then, &v, vars, out)?;
                        vars.truncate(mark);
                    } else {
                        self.exec(els, dot, vars, out)?;
                    }
                }
                Node::Range(p, body, els) => {
                    let v = self.eval(p, dot, vars)?;
                    let items: Vec<(Value, Value)> = match &v {
                        Value::Array(a) => {
                            a.iter().enumerate().map(|(i, x)| (Value::from(i), x.clone())).collect()
                        }
                        Value::Object(o) => {
                            let mut keys: Vec<&String> = o.keys().collect();
                            keys.sort();
                            keys.into_iter().map(|k| (Value::from(k.clone()), o[k].clone())).collect()
                        }
                        Value::Null => Vec::new(),
                        other => {
                            return Err(self.fail(p, format!("range can't iterate over {}", show(other))))
                        }
                    };
                    if items.is_empty() {
                        self.exec(els, dot, vars, out)?;
                    }
                    for (k, x) in items {
                        let mark = vars.len();
                        match p.decl.as_slice() {
                            [] => {}
                            [one] => vars.push((one.clone(), x.clone())),
                            [key, val, ..] => {
                                vars.push((key.clone(), k));
                                vars.push((val.clone(), x.clone()));
                            }
                        }
                        self.exec(body, &x, vars, out)?;
                        vars.truncate(mark);
                    }
                }
            }
        }
        Ok(())
    }

    fn eval(&self, p: &Pipeline, dot: &Value, vars: &[(String, Value)]) -> Result<Value, GoTemplateError> {
        let mut prev: Option<Value> = None;
        for cmd in &p.cmds {
            prev = Some(self.command(p, cmd, dot, vars, prev)?);
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    fn operand(
        &self,
        p: &Pipeline,
        a: &Arg,
        dot: &Value,
        vars: &[(String, Value)],
    ) -> Result<Value, GoTemplateError> {
        Ok(match a {
            Arg::Dot(fields) => walk(dot, fields).map_err(|m| self.fail(p, m))?,
            Arg::Var(name, fields) => {
                let v = vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v)
                    .ok_or_else(|| self.fail(p, format!("undefined variable: ${name}")))?;
                walk(v, fields).map_err(|m| self.fail(p, m))?
            }
            Arg::Lit(v) => v.clone(),
            Arg::Sub(inner, fields) => {
                walk(&self.eval(inner, dot, vars)?, fields).map_err(|m| self.fail(p, m))?
            }
            Arg::Ident(f) => return Err(self.fail(p, format!("{f} is not a value"))),
        })
    }

    fn command(
        &self,
        p: &Pipeline,
        cmd: &Cmd,
        dot: &Value,
        vars: &[(String, Value)],
        piped: Option<Value>,
    ) -> Result<Value, GoTemplateError> {
        let Some(Arg::Ident(f)) = cmd.first() else {
            if cmd.len() != 1 || piped.is_some() {
                return Err(self.fail(p, "can't give argument to non-function".into()));
            }
            return self.operand(p, &cmd[0], dot, vars);
        };
        let mut args: Vec<Value> =
            cmd[1..].iter().map(|a| self.operand(p, a, dot, vars)).collect::<Result<_, _>>()?;
        args.extend(piped);
        let want = |n: usize| -> Result<(), GoTemplateError> {
            if args.len() == n {
                Ok(())
            } else {
                Err(self.fail(p, format!("wrong number of args for {f}: want {n} got {}", args.len())))
            }
        };
        let s = |v: &Value| show(v);
        Ok(match f.as_str() {
            "json" => {
                want(1)?;
                Value::String(serde_json::to_string(&args[0]).unwrap_or_default())
            }
            "index" => {
                let mut v = args.first().cloned().unwrap_or(Value::Null);
                for k in &args[1..] {
                    v = match (&v, k) {
                        (Value::Object(o), Value::String(key)) => o.get(key).cloned().unwrap_or(Value::Null),
                        (Value::Array(a), Value::Number(n)) => {
                            let i = n.as_u64().unwrap_or(u64::MAX) as usize;
                            a.get(i)
                                .cloned()
                                .ok_or_else(|| self.fail(p, format!("index out of range: {i}")))?
                        }
                        (Value::Null, _) => Value::Null,
                        _ => return Err(self.fail(p, format!("can't index item of type {}", kind(&v)))),
                    };
                }
                v
            }
            "len" => {
                want(1)?;
                Value::from(match &args[0] {
                    Value::Array(a) => a.len(),
                    Value::Object(o) => o.len(),
                    Value::String(t) => t.len(),
                    other => return Err(self.fail(p, format!("len of type {}", kind(other)))),
                })
            }
            "join" => {
                want(2)?;
                let parts: Vec<String> = match &args[0] {
                    Value::Array(a) => a.iter().map(s).collect(),
                    other => vec![s(other)],
                };
                Value::String(parts.join(&s(&args[1])))
            }
            "split" => {
                want(2)?;
                Value::Array(s(&args[0]).split(&s(&args[1])).map(|x| Value::String(x.to_string())).collect())
            }
            "upper" => {
                want(1)?;
                Value::String(s(&args[0]).to_uppercase())
            }
            "lower" => {
                want(1)?;
                Value::String(s(&args[0]).to_lowercase())
            }
            "title" => {
                want(1)?;
                let t = s(&args[0]);
                let mut c = t.chars();
                Value::String(c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default())
            }
            "truncate" => {
                want(2)?;
                let n = args[1].as_u64().unwrap_or(0) as usize;
                Value::String(s(&args[0]).chars().take(n).collect())
            }
            "pad" => {
                want(3)?;
                let (l, r) = (args[1].as_u64().unwrap_or(0) as usize, args[2].as_u64().unwrap_or(0) as usize);
                Value::String(format!("{}{}{}", " ".repeat(l), s(&args[0]), " ".repeat(r)))
            }
            "print" => Value::String(args.iter().map(s).collect::<Vec<_>>().join("")),
            "println" => Value::String(args.iter().map(s).collect::<Vec<_>>().join(" ") + "\n"),
            "printf" => {
                let Some(Value::String(fmt)) = args.first() else {
                    return Err(self.fail(p, "printf wants a format string".into()));
                };
                Value::String(printf(fmt, &args[1..]))
            }
            "eq" | "ne" => {
                want(2)?;
                let same =
                    args[0] == args[1] || (args[0].is_number() && args[0].as_f64() == args[1].as_f64());
                Value::Bool(same == (f == "eq"))
            }
            "not" => {
                want(1)?;
                Value::Bool(!truth(&args[0]))
            }
            "and" => args.iter().find(|v| !truth(v)).or(args.last()).cloned().unwrap_or(Value::Null),
            "or" => args.iter().find(|v| truth(v)).or(args.last()).cloned().unwrap_or(Value::Null),
            _ => return Err(self.fail(p, format!("function {f:?} not defined"))),
        })
    }
}

/// A field chain, as Docker's inspect templates walk the document: a key
/// the map lacks is an error (docker runs them with missingkey=error), a
/// field of nothing is nothing.
fn walk(v: &Value, fields: &[String]) -> Result<Value, String> {
    let mut cur = v.clone();
    for f in fields {
        cur = match cur {
            Value::Object(mut o) => o.remove(f).ok_or_else(|| format!("map has no entry for key {f:?}"))?,
            Value::Null => Value::Null,
            other => return Err(format!("can't evaluate field {f} in type {}", kind(&other))),
        };
    }
    Ok(cur)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

fn truth(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A value as Go's fmt prints it with %v.
pub fn show(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(show).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            format!(
                "map[{}]",
                keys.iter().map(|k| format!("{k}:{}", show(&o[*k]))).collect::<Vec<_>>().join(" ")
            )
        }
    }
}

fn printf(fmt: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut it = args.iter();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('q') => out.push_str(
                &serde_json::to_string(&show(it.next().unwrap_or(&Value::Null))).unwrap_or_default(),
            ),
            Some(_) => out.push_str(&show(it.next().unwrap_or(&Value::Null))),
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        serde_json::json!({
            "Id": "abc",
            "Name": "/web",
            "State": {"Running": true, "Pid": 42, "ExitCode": 0, "Status": "running"},
            "Config": {"Labels": {"tier": "front", "a.b": "c"}, "Env": ["A=1", "PATH=/bin"], "Image": "busybox"},
            "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.2"}, "db": {"IPAddress": "10.0.0.3"}},
                                "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}},
            "Mounts": [],
            "Nothing": null
        })
    }

    fn r(t: &str) -> String {
        GoTemplate::parse(t).unwrap().render(&doc()).unwrap()
    }

    #[test]
    fn fields_and_values_print_as_go_does() {
        assert_eq!(r("{{.State.Running}} {{.State.Pid}} {{.Name}}"), "true 42 /web");
        assert_eq!(r("{{.Config.Env}}"), "[A=1 PATH=/bin]");
        assert_eq!(r("{{.Config.Labels}}"), "map[a.b:c tier:front]");
        assert_eq!(r("{{.Nothing}}|{{.Nothing.Deeper}}|{{.Mounts}}"), "<nil>|<nil>|[]");
        let e = GoTemplate::parse("{{.State.Missing}}").unwrap().render(&doc()).unwrap_err();
        assert!(e.to_string().contains("map has no entry for key \"Missing\""), "{e}");
        assert_eq!(r("{{json .Config.Labels}}"), r#"{"a.b":"c","tier":"front"}"#);
        assert_eq!(r("{{.Config.Labels | json}}"), r#"{"a.b":"c","tier":"front"}"#);
        assert_eq!(r(r#"{{index .Config.Labels "a.b"}}"#), "c");
        assert_eq!(r(r#"{{(index (index .NetworkSettings.Ports "80/tcp") 0).HostPort}}"#), "8080");
    }

    #[test]
    fn range_if_with_and_variables() {
        assert_eq!(r("{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"), "172.17.0.2 10.0.0.3 ");
        assert_eq!(
            r("{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}};{{end}}"),
            "bridge=172.17.0.2;db=10.0.0.3;"
        );
        assert_eq!(
            r(r#"{{range $p, $b := .NetworkSettings.Ports}}{{$p}} -> {{(index $b 0).HostPort}}{{end}}"#),
            "80/tcp -> 8080"
        );
        assert_eq!(r("{{range .Mounts}}x{{else}}none{{end}}"), "none");
        assert_eq!(r("{{if .State.Running}}up{{else}}down{{end}}"), "up");
        assert_eq!(r("{{if eq .State.Status \"running\"}}yes{{end}}"), "yes");
        assert_eq!(r("{{with .Config}}{{.Image}}{{end}}"), "busybox");
        assert_eq!(r("{{- range .Config.Env }}\n  {{ . }}\n{{- end }}"), "\n  A=1\n  PATH=/bin");
        assert_eq!(r("x {{- range .Config.Env -}} \n {{ . }} {{- end }}"), "xA=1PATH=/bin");
        assert_eq!(r("{{join .Config.Env \",\"}} {{len .Config.Env}} {{upper .Id}}"), "A=1,PATH=/bin 2 ABC");
        assert_eq!(r(r#"{{printf "%s:%d" .Id .State.Pid}}"#), "abc:42");
        assert_eq!(r("{{$.Id}}{{range .Config.Env}}{{$.Id}}{{end}}"), "abcabcabc");
    }

    #[test]
    fn errors() {
        assert!(GoTemplate::parse("{{range .X}}").is_err());
        assert!(GoTemplate::parse("{{end}}").is_err());
        assert!(GoTemplate::parse("{{.X").is_err());
        assert!(GoTemplate::parse("{{nosuch .X}}").unwrap().render(&doc()).is_err());
        assert!(GoTemplate::parse("{{range .Id}}{{end}}").unwrap().render(&doc()).is_err());
    }
}
