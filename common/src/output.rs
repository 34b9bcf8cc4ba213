//! Output formats: JSON Lines by default when stdout is not a terminal,
//! aligned tables for people (`--format table`, which the wrapper asks for).

use std::io::IsTerminal;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Table,
}

impl Format {
    /// The format named by `--format`, else JSON unless stdout is a terminal.
    pub fn choose(flag: Option<&str>) -> Result<Format, String> {
        match flag {
            Some("json") => Ok(Format::Json),
            Some("table") => Ok(Format::Table),
            Some(other) => Err(format!("unknown format {other:?}: expected json or table")),
            None if std::io::stdout().is_terminal() => Ok(Format::Table),
            None => Ok(Format::Json),
        }
    }
}

/// Renders rows as Docker does: columns padded to their widest cell and
/// separated by three spaces, the last column unpadded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows.iter()) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Sizes as Docker prints them: decimal units with three significant digits ("4.26MB").
pub fn human_size_decimal(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{}{}", three_significant(value), UNITS[unit])
}

/// Sizes in binary units, as `docker stats` prints memory ("1.5MiB").
pub fn human_size_binary(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{}{}", three_significant(value), UNITS[unit])
}

fn three_significant(v: f64) -> String {
    // Go's %.3g, as docker/go-units prints sizes.
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// "2 minutes ago", in the words `docker ps` and `docker images` use.
pub fn human_duration(secs: u64) -> String {
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".into(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if s < 2 * 3600 => "About an hour".into(),
        s if s < 48 * 3600 => format!("{} hours", s / 3600),
        s if s < 14 * 86400 => format!("{} days", s / 86400),
        s if s < 60 * 86400 => format!("{} weeks", s / (7 * 86400)),
        s if s < 2 * 365 * 86400 => format!("{} months", s / (30 * 86400)),
        s => format!("{} years", s / (365 * 86400)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size_decimal(0), "0B");
        assert_eq!(human_size_decimal(999), "999B");
        assert_eq!(human_size_decimal(4_261_000), "4.26MB");
        assert_eq!(human_size_decimal(74_800_000), "74.8MB");
        assert_eq!(human_size_decimal(1_000_000), "1MB");
        assert_eq!(human_size_binary(1536), "1.5KiB");
        assert_eq!(human_size_binary(52_428_800), "50MiB");
    }

    #[test]
    fn table_pads_columns() {
        let t = table(&["A", "BB"], &[vec!["xxxx".into(), "y".into()]]);
        assert_eq!(t, "A      BB\nxxxx   y\n");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(150), "2 minutes");
        assert_eq!(human_duration(3 * 86400), "3 days");
    }
}
