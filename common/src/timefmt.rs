//! Reading times: RFC 3339 (what state.json and log.jsonl record) and
//! Docker's `--since`/`--until` forms (RFC 3339, a date, unix seconds with
//! an optional fraction, or a Go duration before now such as `10m` or
//! `1h30m`). Writing lives in `container::rfc3339`.

/// Now, in seconds since the epoch.
pub fn now_secs() -> f64 {
    now_nanos() as f64 / 1e9
}

/// Now, in nanoseconds since the epoch.
pub fn now_nanos() -> i128 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    d.as_nanos() as i128
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Howard Hinnant's days-from-civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses RFC 3339 (`2006-01-02T15:04:05.999999999Z07:00`, `Z` or an
/// offset, `T` or a space; also a bare date or a time without zone, taken
/// as UTC as Docker does) into nanoseconds since the epoch.
pub fn parse_rfc3339_nanos(s: &str) -> Option<i128> {
    let s = s.trim();
    if s.len() < 10 {
        return None;
    }
    let (date, rest) = s.split_at(10);
    let mut dp = date.split('-');
    let (y, m, d) = (num(dp.next()?)?, num(dp.next()?)?, num(dp.next()?)?);
    if dp.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    let mut secs: i64 = days * 86400;
    let mut nanos: i64 = 0;
    let mut offset: i64 = 0;
    if !rest.is_empty() {
        let rest =
            rest.strip_prefix('T').or_else(|| rest.strip_prefix('t')).or_else(|| rest.strip_prefix(' '))?;
        if rest.len() < 8 {
            return None;
        }
        let (hms, mut tail) = rest.split_at(8);
        let mut tp = hms.split(':');
        let (hh, mm, ss) = (num(tp.next()?)?, num(tp.next()?)?, num(tp.next()?)?);
        if hh > 23 || mm > 59 || ss > 60 {
            return None;
        }
        secs += hh * 3600 + mm * 60 + ss;
        if let Some(frac) = tail.strip_prefix('.') {
            let end = frac.find(|c: char| !c.is_ascii_digit()).unwrap_or(frac.len());
            let digits = &frac[..end];
            if digits.is_empty() {
                return None;
            }
            let mut padded = digits.chars().take(9).collect::<String>();
            while padded.len() < 9 {
                padded.push('0');
            }
            nanos = padded.parse().ok()?;
            tail = &frac[end..];
        }
        match tail {
            "" | "Z" | "z" => {}
            t if (t.starts_with('+') || t.starts_with('-')) && t.len() == 6 && &t[3..4] == ":" => {
                let sign = if t.starts_with('-') { -1 } else { 1 };
                offset = sign * (num(&t[1..3])? * 3600 + num(&t[4..6])? * 60);
            }
            _ => return None,
        }
    }
    Some((secs - offset) as i128 * 1_000_000_000 + nanos as i128)
}

/// RFC 3339 into (fractional) seconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    parse_rfc3339_nanos(s).map(|n| n as f64 / 1e9)
}

/// A Go duration (`300ms`, `10m`, `1h30m`, `1.5h`) in nanoseconds.
pub fn parse_go_duration(s: &str) -> Option<i128> {
    let mut rest = s.trim();
    let neg = rest.starts_with('-');
    rest = rest.strip_prefix(['-', '+']).unwrap_or(rest);
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if end == 0 {
            return None;
        }
        let value: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let uend = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..uend] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[uend..];
        total += value * unit;
    }
    let n = total as i128;
    Some(if neg { -n } else { n })
}

/// Docker's `--since`/`--until` value into nanoseconds since the epoch:
/// a duration before now (`10m`), RFC 3339 or a date, or unix seconds
/// with an optional fraction (`1700000000.5`).
pub fn parse_timestamp(value: &str, now_nanos: i128) -> Option<i128> {
    let v = value.trim();
    if v != "0" {
        if let Some(d) = parse_go_duration(v) {
            return Some(now_nanos - d);
        }
    }
    if let Some(t) = parse_rfc3339_nanos(v) {
        return Some(t);
    }
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i128 = int.parse().ok()?;
    let nanos: i128 = if frac.is_empty() {
        0
    } else {
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut p = frac.chars().take(9).collect::<String>();
        while p.len() < 9 {
            p.push('0');
        }
        p.parse().ok()?
    };
    Some(secs * 1_000_000_000 + nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let s = crate::container::rfc3339(1_700_000_000, 5);
        assert_eq!(parse_rfc3339_nanos(&s), Some(1_700_000_000_000_000_005));
        assert_eq!(parse_rfc3339_nanos("2023-11-14T23:13:20+01:00"), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_rfc3339_nanos("1970-01-02"), Some(86_400_000_000_000));
        assert_eq!(parse_rfc3339_nanos("2000-02-29T00:00:00.5Z"), Some(951_782_400_500_000_000));
        assert_eq!(parse_rfc3339_nanos("garbage"), None);
        assert_eq!(parse_rfc3339_nanos("2023-13-01T00:00:00Z"), None);
    }

    #[test]
    fn docker_timestamps() {
        let now = 10_000_000_000_000i128;
        assert_eq!(parse_timestamp("10m", now), Some(now - 600_000_000_000));
        assert_eq!(parse_timestamp("1h30m", now), Some(now - 5_400_000_000_000));
        assert_eq!(parse_timestamp("1700000000", now), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_timestamp("1700000000.25", now), Some(1_700_000_000_250_000_000));
        assert_eq!(parse_timestamp("0", now), Some(0));
        assert_eq!(parse_timestamp("soon", now), None);
        assert_eq!(parse_go_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(parse_go_duration("300ms"), Some(300_000_000));
    }
}
