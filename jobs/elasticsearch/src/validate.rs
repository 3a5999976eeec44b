//! Input checks done before any request: the SLM Quartz cron, the date-math snapshot name,
//! the retention, index patterns. Every message starts with the flag it is about.

use crate::error::Error;
use crate::Result;

type Check = std::result::Result<(), String>;

/// Checks an Elasticsearch/Quartz cron: `sec min hour day-of-month month day-of-week [year]`,
/// with exactly one of the two day fields `?`. The seconds field must be one number: anything
/// else runs a snapshot several times a minute.
pub fn validate_cron(expr: &str) -> Result<()> {
    check_cron(expr).map_err(|why| Error::invalid(format!("--schedule: {expr:?} {why}")))
}

fn check_cron(expr: &str) -> Check {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    match fields.len() {
        6 | 7 => {}
        5 => {
            return Err(
                "has 5 fields (a Kubernetes/Unix cron); Elasticsearch needs a Quartz cron with a seconds field \
                 and '?' in one day field, e.g. '0 0 3 * * ?'"
                    .into(),
            )
        }
        n => {
            return Err(format!(
                "has {n} fields; expected 6 or 7: sec min hour day-of-month month day-of-week [year]"
            ))
        }
    }
    if !fields[0].bytes().all(|b| b.is_ascii_digit()) || fields[0].parse::<u32>().map_or(true, |s| s > 59) {
        return Err(format!(
            "seconds field {:?} must be a single number 0-59 (anything else takes several snapshots a minute)",
            fields[0]
        ));
    }
    const MONTHS: &[&str] = &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    check_field(fields[1], "minutes", 0, 59, &[], "")?;
    check_field(fields[2], "hours", 0, 23, &[], "")?;
    check_field(fields[3], "day-of-month", 1, 31, &[], "?LW")?;
    check_field(fields[4], "month", 1, 12, MONTHS, "")?;
    check_field(fields[5], "day-of-week", 1, 7, DAYS, "?L#")?;
    if let Some(year) = fields.get(6) {
        check_field(year, "year", 1970, 2099, &[], "")?;
    }
    match (fields[3] == "?", fields[5] == "?") {
        (true, true) => Err("uses '?' in both day-of-month and day-of-week; use it in exactly one".into()),
        (false, false) => Err(format!(
            "sets both day-of-month {:?} and day-of-week {:?}; one of them must be '?' (e.g. '0 0 3 * * ?')",
            fields[3], fields[5]
        )),
        _ => Ok(()),
    }
}

fn check_field(field: &str, what: &str, min: u32, max: u32, names: &[&str], specials: &str) -> Check {
    let bad = |detail: String| Err(format!("{what} field {field:?}: {detail}"));
    if field == "?" {
        return if specials.contains('?') {
            Ok(())
        } else {
            bad("'?' is only allowed in the day fields".into())
        };
    }
    let value = |v: &str| -> std::result::Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            return Ok(i as u32 + min);
        }
        let n: u32 = v.parse().map_err(|_| format!("{v:?} is not a number"))?;
        if n < min || n > max {
            return Err(format!("{n} is outside {min}-{max}"));
        }
        Ok(n)
    };
    for part in field.split(',') {
        if part.is_empty() {
            return bad("empty list element".into());
        }
        if let Some(checked) = quartz_special(part, specials, &value) {
            checked.or_else(bad)?;
            continue;
        }
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        if let Some(step) = step {
            match step.parse::<u32>() {
                Ok(s) if s >= 1 => {}
                _ => return bad(format!("step {step:?} must be a positive number")),
            }
        }
        if range == "*" {
            continue;
        }
        let checked = match range.split_once('-') {
            Some((a, b)) => value(a).and_then(|_| value(b)).map(|_| ()),
            None => value(range).map(|_| ()),
        };
        if let Err(e) = checked {
            return bad(e);
        }
    }
    Ok(())
}

/// Quartz specials: L, W, LW, L-n (day-of-month); nL, n#k (day-of-week). `None` when `part`
/// is not one of them.
fn quartz_special(
    part: &str,
    specials: &str,
    value: &dyn Fn(&str) -> std::result::Result<u32, String>,
) -> Option<std::result::Result<(), String>> {
    if specials.contains('L') && (part == "L" || part == "LW") {
        return Some(Ok(()));
    }
    if specials.contains('L') && specials.contains('W') {
        if let Some(n) = part.strip_prefix("L-") {
            return Some(match n.parse::<u32>() {
                Ok(n) if n <= 30 => Ok(()),
                Ok(_) => Err("offset over 30".into()),
                Err(e) => Err(e.to_string()),
            });
        }
        if let Some(n) = part.strip_suffix('W') {
            return Some(value(n).map(drop));
        }
    }
    if specials.contains('#') {
        if let Some((d, k)) = part.split_once('#') {
            return Some(value(d).and_then(|_| {
                if matches!(k, "1" | "2" | "3" | "4" | "5") {
                    Ok(())
                } else {
                    Err(format!("#{k}: the week of the month must be 1-5"))
                }
            }));
        }
        if let Some(d) = part.strip_suffix('L') {
            return Some(value(d).map(drop));
        }
    }
    None
}

const FORBIDDEN_NAME_CHARS: &[char] = &['\\', '/', '*', '?', '"', '<', '>', '|', ',', '#', ' ', ':'];

/// The longest repository, policy or snapshot name Elasticsearch accepts, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Checks a repository, SLM policy or snapshot name the way Elasticsearch does before it
/// creates one (`MetadataCreateIndexService`/`SnapshotsService` rules): not empty, not `.`
/// or `..`, lowercase, none of `\ / * ? " < > | , # :`, no whitespace or control
/// characters, not starting with `_`, `-` or `+`, at most 255 bytes. `flag` names the
/// argument in the message (exit 2).
pub fn validate_name(flag: &str, name: &str) -> Result<()> {
    check_name(name).map_err(|why| Error::invalid(format!("{flag}: {name:?} {why}")))
}

fn check_name(name: &str) -> Check {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name == "." || name == ".." {
        return Err("must not be '.' or '..'".into());
    }
    if name.starts_with(['_', '-', '+']) {
        return Err("must not start with '_', '-' or '+'".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("is {} bytes long; the limit is {MAX_NAME_BYTES}", name.len()));
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace()) {
        return Err(format!("must not contain whitespace ({c:?})"));
    }
    check_static(name)
}

/// Checks a snapshot name template: a plain lowercase name or an Elasticsearch date-math
/// expression such as `<sts-backup-{now{yyyyMMdd-HHmm}}>` or `<snap-{now/d}>`.
pub fn validate_snapshot_name(name: &str) -> Result<()> {
    check_snapshot_name(name).map_err(|why| Error::invalid(format!("--snapshot-name: {name:?} {why}")))
}

fn check_static(text: &str) -> Check {
    if text.chars().any(|c| c.is_uppercase()) {
        return Err("must be lowercase".into());
    }
    if let Some(c) = text
        .chars()
        .find(|c| FORBIDDEN_NAME_CHARS.contains(c) || c.is_control())
    {
        return Err(format!("must not contain {c:?}"));
    }
    Ok(())
}

fn check_snapshot_name(name: &str) -> Check {
    if name.is_empty() {
        return Err("is empty".into());
    }
    let Some(inner) = name.strip_prefix('<') else {
        if name.contains('{') || name.contains('}') || name.ends_with('>') {
            return Err("uses date math but is not enclosed in <...>, e.g. '<sts-backup-{now{yyyyMMdd-HHmm}}>'".into());
        }
        if name.starts_with(['_', '-', '+']) {
            return Err("must not start with '_', '-' or '+'".into());
        }
        return check_static(name);
    };
    let Some(inner) = inner.strip_suffix('>') else {
        return Err("starts with '<' but does not end with '>'".into());
    };
    if inner.is_empty() {
        return Err("is an empty date-math expression".into());
    }
    if inner.starts_with(['_', '-', '+']) {
        return Err("must not start with '_', '-' or '+'".into());
    }
    let mut rest = inner;
    let mut has_math = false;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            None => {
                check_static(&rest.replace("\\{", "").replace("\\}", ""))?;
                break;
            }
            Some(i) if rest.as_bytes()[i] == b'}' => return Err("has an unbalanced '}'".into()),
            Some(i) => {
                check_static(&rest[..i])?;
                // Find the matching close brace (one nesting level for the format).
                let mut depth = 0;
                let mut end = None;
                for (j, c) in rest[i..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = Some(i + j);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let end = end.ok_or("has an unbalanced '{'")?;
                check_math(&rest[i + 1..end])?;
                has_math = true;
                rest = &rest[end + 1..];
            }
        }
    }
    if !has_math {
        return Err("is enclosed in <...> but has no {now...} expression".into());
    }
    Ok(())
}

/// `now[+-Nunit]*[/unit][{format[|timezone]}]`
fn check_math(expr: &str) -> Check {
    let (math, format) = match expr.find('{') {
        Some(i) => {
            let f = expr[i + 1..]
                .strip_suffix('}')
                .ok_or("has a date format that is not closed with '}'")?;
            (&expr[..i], Some(f))
        }
        None => (expr, None),
    };
    let Some(mut ops) = math.strip_prefix("now") else {
        return Err(format!("date-math expression {{{expr}}} must start with 'now'"));
    };
    const UNITS: &str = "yMwdhHms";
    while !ops.is_empty() {
        let c = ops.as_bytes()[0];
        match c {
            b'+' | b'-' => {
                let digits = ops[1..].bytes().take_while(u8::is_ascii_digit).count();
                let unit = ops[1 + digits..].chars().next();
                if digits == 0 || !unit.is_some_and(|u| UNITS.contains(u)) {
                    return Err(format!("date math {math:?}: expected e.g. now-1d or now+2h"));
                }
                ops = &ops[2 + digits..];
            }
            b'/' => {
                let unit = ops[1..].chars().next();
                if !unit.is_some_and(|u| UNITS.contains(u)) {
                    return Err(format!("date math {math:?}: rounding needs a unit, e.g. now/d"));
                }
                ops = &ops[2..];
            }
            _ => return Err(format!("date math {math:?}: unexpected {:?}", c as char)),
        }
    }
    if let Some(format) = format {
        let pattern = format.split('|').next().unwrap_or("");
        if pattern.is_empty() {
            return Err("has an empty date format".into());
        }
        if let Some(c) = pattern
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
        {
            return Err(format!(
                "date format {pattern:?} must not contain {c:?} (snapshot names cannot)"
            ));
        }
        // Text fields render upper-case letters (Jan, Mon, AM), which snapshot names refuse.
        if pattern.contains("MMM") || pattern.contains(['E', 'a', 'G', 'z', 'Z', 'L', 'c', 'B', 'O', 'V', 'X', 'x']) {
            return Err(format!(
                "date format {pattern:?} renders text or zones; use numeric fields such as yyyyMMdd-HHmm"
            ));
        }
    }
    Ok(())
}

/// Checks an Elasticsearch time value such as `30d`, `12h`.
pub fn validate_expire_after(value: &str) -> Result<()> {
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    let unit = &value[digits..];
    if digits == 0 || !matches!(unit, "d" | "h" | "m" | "s" | "ms" | "micros" | "nanos") {
        return Err(Error::invalid(format!(
            "--expire-after: {value:?} is not a time value such as 30d, 12h or 90m"
        )));
    }
    if value[..digits].parse::<u64>().map_or(true, |n| n == 0) {
        return Err(Error::invalid(format!(
            "--expire-after: {value:?} would expire every snapshot at once; use e.g. 30d"
        )));
    }
    Ok(())
}

/// Retention must keep something: `min_count` at least 1 (an unset or 0 `min_count` lets
/// SLM delete every snapshot, es#106584) and not above `max_count`.
pub fn validate_retention(min_count: u32, max_count: u32) -> Result<()> {
    if min_count == 0 {
        return Err(Error::invalid(
            "--min-count: 0 lets retention delete every snapshot; keep at least 1 (default 5)",
        ));
    }
    if max_count == 0 {
        return Err(Error::invalid(
            "--max-count: 0 would delete every snapshot; use at least --min-count",
        ));
    }
    if min_count > max_count {
        return Err(Error::invalid(format!(
            "--min-count: {min_count} is greater than --max-count {max_count}"
        )));
    }
    Ok(())
}

/// A comma-separated multi-index pattern (`sts*,-sts_tmp*`), matched like Elasticsearch does
/// against snapshot contents: `*` wildcards, `-` exclusions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPattern {
    text: String,
    terms: Vec<(bool, String)>,
}

impl IndexPattern {
    /// Parses a pattern for `flag`; refuses empty patterns and ones that select everything
    /// (`*`, `_all`), which would also restore or snapshot internal indices.
    pub fn parse(text: &str, flag: &str) -> Result<IndexPattern> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim) {
            if term.is_empty() {
                return Err(Error::invalid(format!("{flag}: {text:?} has an empty element")));
            }
            let (exclude, name) = match term.strip_prefix('-') {
                Some(n) if !terms.is_empty() => (true, n),
                _ => (false, term),
            };
            if !exclude && (name == "_all" || name.chars().all(|c| c == '*')) {
                return Err(Error::invalid(format!(
                    "{flag}: {term:?} selects every index, including internal ones such as .slm-history-*; \
                     name a pattern such as sts*"
                )));
            }
            if name.chars().any(|c| c.is_uppercase() || "\\/?\"<>| #".contains(c)) {
                return Err(Error::invalid(format!("{flag}: {term:?} is not a valid index pattern")));
            }
            terms.push((exclude, name.to_string()));
        }
        Ok(IndexPattern {
            text: text.to_string(),
            terms,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, name: &str) -> bool {
        let mut hit = false;
        for (exclude, term) in &self.terms {
            if glob(term, name) {
                hit = !exclude;
            }
        }
        hit
    }
}

/// `*`-only glob match.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(p) => rest = &rest[p + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron() {
        for ok in [
            "0 0 3 * * ?",
            "0 30 1 * * ?",
            "0 0 3 ? * MON-FRI",
            "0 0/15 * * * ?",
            "0 0 3 L * ?",
            "0 0 3 ? * 6#3",
            "0 0 3 * * ? 2030",
        ] {
            check_cron(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "0 3 * * *",
            "0 0 3 * * *",
            "0 0 3 ? * ?",
            "* 0 3 * * ?",
            "0 60 3 * * ?",
            "0 0 24 * * ?",
            "0 0 3 * 13 ?",
            "x",
            "0 0 3 * * ? 1900",
        ] {
            assert!(check_cron(bad).is_err(), "{bad}");
        }
        assert!(validate_cron("0 3 * * *")
            .unwrap_err()
            .to_string()
            .starts_with("--schedule: "));
    }

    #[test]
    fn names() {
        for ok in [
            "<sts-backup-{now{yyyyMMdd-HHmm}}>",
            "<snap-{now/d}>",
            "<nightly-{now-1d/d{yyyy.MM.dd|+01:00}}>",
            "plain-name",
        ] {
            check_snapshot_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "Upper",
            "<sts-{now{yyyyMMdd}}",
            "sts-{now}",
            "<sts-{later}>",
            "<sts-{now{MMM}}>",
            "<sts-{now{yyyy}>",
            "<sts>",
            "_x",
            "a b",
        ] {
            assert!(check_snapshot_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resource_names() {
        for ok in [
            "sts-backup",
            "auto-sts-backup",
            "sts-backup-20261120-0300-ppss8nx40yk",
            "a.b",
            "x",
        ] {
            check_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let long = "a".repeat(256);
        for bad in [
            "",
            ".",
            "..",
            "Upper",
            "a/b",
            "a\\b",
            "a*",
            "a?",
            "a\"b",
            "a<b",
            "a>b",
            "a|b",
            "a,b",
            "a#b",
            "a b",
            "a\tb",
            "a\nb",
            "_x",
            "-x",
            "+x",
            "a:b",
            long.as_str(),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name(&"a".repeat(255)).unwrap();
        assert!(validate_name("--repository", "..")
            .unwrap_err()
            .to_string()
            .starts_with("--repository: \"..\" must not be"));
    }

    #[test]
    fn retention_and_expiry() {
        assert!(validate_retention(5, 30).is_ok());
        assert!(validate_retention(0, 30).is_err());
        assert!(validate_retention(31, 30).is_err());
        assert!(validate_expire_after("30d").is_ok());
        assert!(validate_expire_after("30 days").is_err());
        assert!(validate_expire_after("0d").is_err());
    }

    #[test]
    fn patterns() {
        let p = IndexPattern::parse("sts*,-sts_tmp*", "--indices").unwrap();
        assert!(p.matches("sts_topology"));
        assert!(!p.matches("sts_tmp_1"));
        assert!(!p.matches(".slm-history-7"));
        assert!(IndexPattern::parse("*", "--indices").is_err());
        assert!(IndexPattern::parse("_all", "--indices").is_err());
        assert!(IndexPattern::parse("", "--indices").is_err());
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b", "ab_"));
    }
}
