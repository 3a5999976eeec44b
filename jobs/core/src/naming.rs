//! Backup names: rendering the strftime name template (in UTC, never through a shell) and
//! validating names that arrive from users and scripts.

use chrono::format::{Item, Pad, StrftimeItems};
use chrono::{DateTime, Utc};

use crate::error::{Error, Result};

/// The default template, the reference's name in strftime form.
pub const DEFAULT_NAME_TEMPLATE: &str = "sts-backup-%Y%m%d-%H%M.graph";

/// Suffix of the manifest that commits a backup.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

/// Longest accepted backup name, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// A validated strftime template.
#[derive(Debug, Clone)]
pub struct NameTemplate {
    format: String,
}

impl NameTemplate {
    /// Parses a template. Accepts strftime (`sts-backup-%Y%m%d-%H%M.graph`) and, for values
    /// written for the reference chart, the shell form `sts-backup-$(date +%Y%m%d-%H%M).graph`,
    /// which is translated, not executed.
    pub fn parse(template: &str) -> Result<Self> {
        // Values from YAML blocks and Secrets often end in a newline; that much is trimmed.
        let template = template.trim();
        let format = translate_shell_date(template)?;
        if format.is_empty() {
            return Err(Error::invalid("--name-template: must not be empty"));
        }
        if StrftimeItems::new(&format).any(|item| matches!(item, Item::Error)) {
            return Err(Error::invalid(format!(
                "--name-template: {template:?} is not a valid strftime template"
            )));
        }
        check_items(template, &format)?;
        let template = NameTemplate { format };
        // Widths vary (unpadded fields, `%s`, `%f`): render at instants far apart so a name
        // that is too long, starts with '.' or forms ".." fails before any work.
        for at in sample_instants() {
            let sample = template.render(at);
            validate_name(&sample).map_err(|e| {
                Error::invalid(format!(
                    "--name-template: {template:?} renders an invalid name at {at}: {e}",
                    template = template.format
                ))
            })?;
        }
        Ok(template)
    }

    /// The name for a run started at `now`.
    pub fn render(&self, now: DateTime<Utc>) -> String {
        now.format(&self.format).to_string()
    }

    pub fn as_str(&self) -> &str {
        &self.format
    }
}

/// Checks every piece of the template, not one rendering: a space-padded field (`%e`, `%k`,
/// `%l`, `%_H`) renders a space at some hours only, and literals and whole-date forms (`%c`,
/// `%D`) bring spaces, slashes or newlines.
fn check_items(template: &str, format: &str) -> Result<()> {
    let refuse = |what: String| {
        Err(Error::invalid(format!(
            "--name-template: {template:?} {what}; use zero-padded fields such as %Y%m%d-%H%M%S"
        )))
    };
    for item in StrftimeItems::new(format) {
        match item {
            Item::Literal(text) | Item::Space(text) => {
                if let Some(c) = text.chars().find(|c| !is_name_char(*c)) {
                    return refuse(format!(
                        "contains {c:?} (allowed are letters, digits and {NAME_PUNCTUATION})"
                    ));
                }
            }
            Item::OwnedLiteral(text) | Item::OwnedSpace(text) => {
                if let Some(c) = text.chars().find(|c| !is_name_char(*c)) {
                    return refuse(format!(
                        "contains {c:?} (allowed are letters, digits and {NAME_PUNCTUATION})"
                    ));
                }
            }
            Item::Numeric(_, Pad::Space) => {
                return refuse("has a space-padded field (%e, %k, %l, %_…) that renders a space at some times".into())
            }
            Item::Error => return refuse("is not a valid strftime template".into()),
            _ => {}
        }
    }
    Ok(())
}

/// 1970, a date with every field at its widest, and one far ahead.
fn sample_instants() -> [DateTime<Utc>; 3] {
    let at = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    };
    [
        DateTime::<Utc>::UNIX_EPOCH,
        at("2021-12-29T23:59:59.999999999Z"),
        at("2099-09-30T09:09:09.000000001Z"),
    ]
}

/// Punctuation allowed in backup names besides letters and digits.
const NAME_PUNCTUATION: &str = "._+:=@,-";

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || NAME_PUNCTUATION.contains(c)
}

/// `$(date +FMT)` and `$(date -u +FMT)` become `FMT`; any other shell syntax is refused.
fn translate_shell_date(template: &str) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find(')')
            .ok_or_else(|| Error::invalid(format!("--name-template: unclosed \"$(\" in {template:?}")))?;
        let inner = after[..end].trim();
        let fmt = inner
            .strip_prefix("date -u +")
            .or_else(|| inner.strip_prefix("date +"))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "--name-template: only $(date +FORMAT) is understood, not $({inner}); use a strftime template such as {DEFAULT_NAME_TEMPLATE}"
                ))
            })?;
        out.push_str(fmt.trim_matches(|c| c == '\'' || c == '"'));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if out.contains('`') || out.contains('$') {
        return Err(Error::invalid(format!(
            "--name-template: shell syntax in {template:?} is not supported; use a strftime template"
        )));
    }
    Ok(out)
}

/// Checks a backup name. Names become object keys and file names, and arrive from restore
/// scripts, so only a conservative alphabet is allowed: letters, digits and `._+:=@,-`;
/// no leading dot, no `..`, at most [`MAX_NAME_LEN`] bytes, and never the manifest suffix.
pub fn validate_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("name is longer than {MAX_NAME_LEN} bytes"));
    }
    if let Some(c) = name.chars().find(|c| !is_name_char(*c)) {
        return Err(format!(
            "name {name:?} contains {c:?}; allowed are letters, digits and {NAME_PUNCTUATION}"
        ));
    }
    if name.starts_with('.') || name.contains("..") {
        return Err(format!("name {name:?} must not start with '.' or contain '..'"));
    }
    if name.ends_with(MANIFEST_SUFFIX) {
        return Err(format!("name {name:?} must not end with {MANIFEST_SUFFIX}"));
    }
    Ok(())
}

/// The key of the manifest that commits backup `name`.
pub fn manifest_key(name: &str) -> String {
    format!("{name}{MANIFEST_SUFFIX}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2021, 2, 16, 3, 0, 59).unwrap()
    }

    #[test]
    fn renders_default_template_in_utc() {
        let t = NameTemplate::parse(DEFAULT_NAME_TEMPLATE).unwrap();
        assert_eq!(t.render(at()), "sts-backup-20210216-0300.graph");
    }

    #[test]
    fn translates_the_reference_shell_form() {
        for shell in [
            "sts-backup-$(date +%Y%m%d-%H%M).graph",
            "sts-backup-$(date -u +%Y%m%d-%H%M).graph",
            "sts-backup-$(date +'%Y%m%d-%H%M').graph",
        ] {
            let t = NameTemplate::parse(shell).unwrap();
            assert_eq!(t.render(at()), "sts-backup-20210216-0300.graph", "{shell}");
        }
    }

    #[test]
    fn refuses_other_shell_syntax_and_bad_strftime() {
        for bad in [
            "x-$(rm -rf /).graph",
            "x-`date`.graph",
            "x-$HOME.graph",
            "x-$(date +%Y",
            "x-%Q.graph",
            "x-%l.graph",
            "x-%e.graph",
            "x-%c.graph",
            "x-%D.graph",
            "x-%n.graph",
            "",
            "a/%Y.graph",
            "../%Y",
        ] {
            let err = NameTemplate::parse(bad).unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{bad}: {err}");
            assert!(err.to_string().starts_with("--name-template"), "{err}");
        }
    }

    #[test]
    fn validates_names() {
        assert!(validate_name("sts-backup-20210216-0300.graph").is_ok());
        for bad in [
            "",
            "a/b",
            "../x",
            ".hidden",
            "a..b",
            "a b",
            "a\nb",
            "a&b",
            "a\"b",
            "x.manifest.json",
            &"a".repeat(201),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
