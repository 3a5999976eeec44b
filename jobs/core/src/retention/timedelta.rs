//! The retention delta: Python `timedelta(...)` argument syntax, parsed (never evaluated),
//! plus the short forms operators type (`30d`, `720h`, `2w`, `90m`, via humantime).
//!
//! The reference pruner built its delta with `eval("timedelta(" + value + ")")`. This module
//! accepts the same argument lists Python accepts when they are made of number literals:
//! keywords `days`, `seconds`, `microseconds`, `milliseconds`, `minutes`, `hours`, `weeks`
//! (and positional arguments in that order, as Python allows), int literals in any base with
//! `_` separators, float literals, unary `+`/`-`, a trailing comma. The arithmetic follows
//! CPython's C implementation (exact integer microseconds, float fractions accumulated and
//! rounded half-to-even), so the delta is the one Python would compute.
//!
//! Refused, each with a one-line error naming `--retention`: anything that is not a number
//! literal (names, calls, operators, parentheses, complex numbers), unknown or repeated
//! keywords, more than seven positional arguments, a positional argument after a keyword,
//! a result Python would overflow on, and a negative total (which would make every backup
//! "expired").

use chrono::TimeDelta;

use crate::error::{Error, Result};

/// The keywords of `timedelta`, in positional order.
const KEYWORDS: [&str; 7] = [
    "days",
    "seconds",
    "microseconds",
    "milliseconds",
    "minutes",
    "hours",
    "weeks",
];

/// Microseconds per unit, same order as [`KEYWORDS`].
const FACTORS: [i128; 7] = [
    86_400_000_000,
    1_000_000,
    1,
    1_000,
    60_000_000,
    3_600_000_000,
    604_800_000_000,
];

/// CPython accumulates the components in this order (indexes into [`KEYWORDS`]); float
/// rounding depends on it.
const ACCUMULATION_ORDER: [usize; 7] = [2, 3, 1, 4, 5, 0, 6];

const US_PER_DAY: i128 = 86_400_000_000;
const MAX_DAYS: i128 = 999_999_999;

/// A parsed retention delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Total microseconds, never negative.
    micros: i128,
}

impl Retention {
    /// Parses the `--retention` value. Python syntax is tried first, then humantime forms.
    pub fn parse(text: &str) -> Result<Retention> {
        match parse_python(text) {
            Ok(micros) => Ok(Retention { micros }),
            Err(PyError::Syntax(why)) if !text.contains('=') => match humantime::parse_duration(text.trim()) {
                Ok(d) => Ok(Retention {
                    micros: d.as_micros() as i128,
                })
                .and_then(Retention::checked),
                Err(_) => Err(invalid(
                    text,
                    &format!("{why}; use Python timedelta keyword syntax such as \"days = 30\" or a duration such as 30d or 720h"),
                )),
            },
            Err(PyError::Syntax(why) | PyError::Value(why)) => Err(invalid(text, &why)),
        }
    }

    fn checked(self) -> Result<Retention> {
        if self.micros.div_euclid(US_PER_DAY) > MAX_DAYS {
            return Err(Error::invalid(format!(
                "--retention: {} days is more than the 999999999 days a timedelta can hold",
                self.micros.div_euclid(US_PER_DAY)
            )));
        }
        Ok(self)
    }

    /// Total microseconds.
    pub fn as_micros(&self) -> i128 {
        self.micros
    }

    /// As a chrono delta (always representable: at most 999999999 days).
    pub fn as_timedelta(&self) -> TimeDelta {
        let secs = self.micros.div_euclid(1_000_000) as i64;
        let nanos = (self.micros.rem_euclid(1_000_000) * 1000) as u32;
        TimeDelta::new(secs, nanos).expect("at most 999999999 days fits a TimeDelta")
    }
}

/// Python's `str(timedelta)`: `30 days, 0:00:00`, `1 day, 12:00:00`, `0:01:30.500000`.
impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let days = self.micros.div_euclid(US_PER_DAY);
        let rest = self.micros.rem_euclid(US_PER_DAY);
        let (secs, us) = (rest / 1_000_000, rest % 1_000_000);
        if days != 0 {
            write!(f, "{days} day{}, ", if days.abs() == 1 { "" } else { "s" })?;
        }
        write!(f, "{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)?;
        if us != 0 {
            write!(f, ".{us:06}")?;
        }
        Ok(())
    }
}

fn invalid(text: &str, why: &str) -> Error {
    Error::invalid(format!("--retention: {text:?} is not a valid retention: {why}"))
}

#[derive(Debug)]
enum PyError {
    /// Python would not even parse it (or it is not a plain literal argument list).
    Syntax(String),
    /// It parses, but Python's `timedelta` (or our guard) refuses the value.
    Value(String),
}

#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_char(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit()
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<u8> {
        self.s.get(self.pos + n).copied()
    }

    /// Whitespace Python allows between tokens inside parentheses (including newlines and
    /// backslash-newline continuations).
    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\x0c' | b'\n' | b'\r' => self.pos += 1,
                b'\\' if matches!(self.peek_at(1), Some(b'\n')) => self.pos += 2,
                _ => break,
            }
        }
    }

    fn ident(&mut self) -> Option<&'a str> {
        let start = self.pos;
        if !self.peek().is_some_and(is_ident_start) {
            return None;
        }
        while self.peek().is_some_and(is_ident_char) {
            self.pos += 1;
        }
        std::str::from_utf8(&self.s[start..self.pos]).ok()
    }

    /// `digit (["_"] digit)*` in the given radix; returns the digits without underscores.
    /// `leading_underscore` allows `_` before the first digit (after `0x` and friends).
    fn digits(&mut self, radix: u32, leading_underscore: bool) -> Option<String> {
        let mut out = String::new();
        loop {
            let save = self.pos;
            if self.peek() == Some(b'_') && (leading_underscore || !out.is_empty()) {
                self.pos += 1;
            }
            match self.peek() {
                Some(c) if (c as char).is_digit(radix) => {
                    out.push(c as char);
                    self.pos += 1;
                }
                _ => {
                    self.pos = save;
                    break;
                }
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// A Python number literal (int in any base, or float); complex literals are refused.
    fn number(&mut self) -> Result<Num, PyError> {
        let prefixed =
            self.peek() == Some(b'0') && matches!(self.peek_at(1), Some(b'x' | b'X' | b'o' | b'O' | b'b' | b'B'));
        let num = if prefixed {
            self.prefixed_int()?
        } else {
            self.decimal()?
        };
        // Python's tokenizer refuses a number glued to a name (`30d`, `1_`, `0x1g`).
        if self.peek().is_some_and(is_ident_char) || self.peek() == Some(b'.') {
            return Err(syntax("invalid number literal"));
        }
        Ok(num)
    }

    /// `0x…`, `0o…`, `0b…`.
    fn prefixed_int(&mut self) -> Result<Num, PyError> {
        let radix = match self.peek_at(1).map(|c| c.to_ascii_lowercase()) {
            Some(b'x') => 16,
            Some(b'o') => 8,
            _ => 2,
        };
        self.pos += 2;
        let digits = self
            .digits(radix, true)
            .ok_or_else(|| syntax("invalid number literal"))?;
        let value = i128::from_str_radix(&digits, radix).map_err(|_| PyError::Value("number is too large".into()))?;
        Ok(Num::Int(value))
    }

    /// A decimal int or float: `12`, `1.5`, `.5`, `1e3`.
    fn decimal(&mut self) -> Result<Num, PyError> {
        let int_part = self.digits(10, false);
        let mut text = int_part.clone().unwrap_or_default();
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            is_float = true;
            text.push('.');
            let frac = self.digits(10, false);
            if int_part.is_none() && frac.is_none() {
                return Err(syntax("invalid syntax"));
            }
            text.push_str(&frac.unwrap_or_default());
        } else if int_part.is_none() {
            return Err(syntax("expected a number"));
        }
        if let Some(exp) = self.exponent()? {
            text.push_str(&exp);
            is_float = true;
        }
        if matches!(self.peek(), Some(b'j' | b'J')) {
            return Err(PyError::Value(
                "complex numbers are not a valid timedelta component".into(),
            ));
        }
        if is_float {
            return Ok(Num::Float(
                text.parse::<f64>().map_err(|_| syntax("invalid number literal"))?,
            ));
        }
        let digits = int_part.unwrap_or_default();
        if digits.len() > 1 && digits.starts_with('0') && digits.bytes().any(|b| b != b'0') {
            return Err(syntax("leading zeros in decimal integer literals are not permitted"));
        }
        let value = digits
            .parse::<i128>()
            .map_err(|_| PyError::Value("number is too large".into()))?;
        Ok(Num::Int(value))
    }

    /// An exponent (`e-3`), if one follows.
    fn exponent(&mut self) -> Result<Option<String>, PyError> {
        if !matches!(self.peek(), Some(b'e' | b'E')) {
            return Ok(None);
        }
        self.pos += 1;
        let mut exp = String::from("e");
        if let Some(sign @ (b'+' | b'-')) = self.peek() {
            exp.push(sign as char);
            self.pos += 1;
        }
        match self.digits(10, false) {
            Some(d) => {
                exp.push_str(&d);
                Ok(Some(exp))
            }
            None => Err(syntax("invalid decimal literal")),
        }
    }

    /// `('+' | '-')* NUMBER`
    fn value(&mut self) -> Result<Num, PyError> {
        let mut negative = false;
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b'-') => negative = !negative,
                Some(b'+') => {}
                _ => break,
            }
            self.pos += 1;
        }
        match self.peek() {
            Some(c) if c.is_ascii_digit() || c == b'.' => {}
            Some(c) if is_ident_start(c) => {
                return Err(PyError::Syntax(
                    "only number literals are allowed as values (names are never evaluated)".into(),
                ))
            }
            Some(_) => return Err(PyError::Syntax("only number literals are allowed as values".into())),
            None => return Err(PyError::Syntax("a value is missing".into())),
        }
        let num = self.number()?;
        Ok(match (num, negative) {
            (Num::Int(i), true) => Num::Int(-i),
            (Num::Float(f), true) => Num::Float(-f),
            (n, false) => n,
        })
    }
}

/// Parses the argument list and computes the total microseconds like CPython does.
fn parse_python(text: &str) -> Result<i128, PyError> {
    let mut lx = Lexer {
        s: text.as_bytes(),
        pos: 0,
    };
    let mut args = Arguments::default();
    loop {
        lx.skip_ws();
        if lx.peek().is_none() {
            break;
        }
        let keyword = lx.keyword();
        let value = lx.value()?;
        args.place(keyword, value)?;
        if !lx.separator()? {
            break;
        }
    }
    // A lone "," is `timedelta(,)`: a syntax error in Python.
    if args.values.iter().all(Option::is_none) && text.contains(',') {
        return Err(syntax("invalid syntax (empty argument)"));
    }
    total_micros(&args.values)
}

/// The seven `timedelta` arguments as they are given, positional first.
#[derive(Default)]
struct Arguments {
    values: [Option<Num>; 7],
    positional: usize,
    seen_keyword: bool,
}

impl Arguments {
    fn place(&mut self, keyword: Option<&str>, value: Num) -> Result<(), PyError> {
        match keyword {
            Some(name) => {
                let idx = KEYWORDS.iter().position(|k| *k == name).ok_or_else(|| {
                    PyError::Value(format!(
                        "unknown keyword {name:?}; timedelta takes {}",
                        KEYWORDS.join(", ")
                    ))
                })?;
                if self.values[idx].is_some() {
                    return Err(PyError::Value(format!("{name} is given more than once")));
                }
                self.values[idx] = Some(value);
                self.seen_keyword = true;
            }
            None => {
                if self.seen_keyword {
                    return Err(syntax("a positional argument follows a keyword argument"));
                }
                if self.positional >= KEYWORDS.len() {
                    return Err(PyError::Value("timedelta takes at most 7 arguments".into()));
                }
                self.values[self.positional] = Some(value);
                self.positional += 1;
            }
        }
        Ok(())
    }
}

impl<'a> Lexer<'a> {
    /// `NAME =` before a value, if present (`==` is not an assignment).
    fn keyword(&mut self) -> Option<&'a str> {
        let save = self.pos;
        let name = self.ident()?;
        self.skip_ws();
        if self.peek() == Some(b'=') && self.peek_at(1) != Some(b'=') {
            self.pos += 1;
            Some(name)
        } else {
            self.pos = save;
            None
        }
    }

    /// The `,` after a value: `Ok(false)` at the end of the input.
    fn separator(&mut self) -> Result<bool, PyError> {
        self.skip_ws();
        match self.peek() {
            None => return Ok(false),
            Some(b',') => self.pos += 1,
            Some(_) => {
                let rest: String = String::from_utf8_lossy(&self.s[self.pos..]).chars().take(20).collect();
                return Err(syntax(&format!("unexpected {rest:?} after a value")));
            }
        }
        self.skip_ws();
        if self.peek() == Some(b',') {
            return Err(syntax("invalid syntax (empty argument)"));
        }
        Ok(true)
    }
}

fn syntax(why: &str) -> PyError {
    PyError::Syntax(why.to_string())
}

fn overflow() -> PyError {
    PyError::Value("the delta is too large for a timedelta".into())
}

/// CPython's `delta_new`/`accum`: integer parts exactly, float fractions summed into
/// `leftover` and rounded half-to-even at the end.
fn total_micros(args: &[Option<Num>; 7]) -> Result<i128, PyError> {
    let mut x: i128 = 0;
    let mut leftover = 0.0f64;
    for idx in ACCUMULATION_ORDER {
        let Some(num) = args[idx] else { continue };
        let factor = FACTORS[idx];
        match num {
            Num::Int(i) => {
                x = i
                    .checked_mul(factor)
                    .and_then(|p| x.checked_add(p))
                    .ok_or_else(overflow)?;
            }
            Num::Float(f) => {
                if !f.is_finite() {
                    return Err(PyError::Value("the value is infinite".into()));
                }
                let int_part = f.trunc();
                let frac = f - int_part;
                if int_part.abs() >= 1e36 {
                    return Err(overflow());
                }
                x = (int_part as i128)
                    .checked_mul(factor)
                    .and_then(|p| x.checked_add(p))
                    .ok_or_else(overflow)?;
                if frac == 0.0 {
                    continue;
                }
                let scaled = factor as f64 * frac;
                let scaled_int = scaled.trunc();
                x = x.checked_add(scaled_int as i128).ok_or_else(overflow)?;
                leftover += scaled - scaled_int;
            }
        }
    }
    if leftover != 0.0 {
        let mut whole = leftover.round();
        if (whole - leftover).abs() == 0.5 {
            let odd = (x & 1) as f64;
            whole = 2.0 * ((leftover + odd) * 0.5).round() - odd;
        }
        x = x.checked_add(whole as i128).ok_or_else(overflow)?;
    }
    let days = x.div_euclid(US_PER_DAY);
    if days.abs() > MAX_DAYS {
        return Err(PyError::Value(format!(
            "{days} days is more than the 999999999 days a timedelta can hold"
        )));
    }
    if x < 0 {
        return Err(PyError::Value(
            "the delta is negative, which would expire every backup".into(),
        ));
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(text: &str) -> i128 {
        Retention::parse(text)
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
            .as_micros()
    }

    #[test]
    fn parses_the_reference_default_and_friends() {
        assert_eq!(us("days = 30"), 30 * US_PER_DAY);
        assert_eq!(us("weeks=2, hours=12"), 14 * US_PER_DAY + 12 * 3_600_000_000);
        assert_eq!(us("days=1.5"), 36 * 3_600_000_000);
        assert_eq!(us("30d"), 30 * US_PER_DAY);
        assert_eq!(us("720h"), 30 * US_PER_DAY);
        assert_eq!(us("2w"), 14 * US_PER_DAY);
        assert_eq!(us("90m"), 90 * 60_000_000);
        assert_eq!(Retention::parse("days = 30").unwrap().to_string(), "30 days, 0:00:00");
        assert_eq!(
            Retention::parse("days=1.5").unwrap().as_timedelta(),
            TimeDelta::hours(36)
        );
    }

    #[test]
    fn refuses_code_and_garbage_naming_the_flag() {
        for bad in [
            "days=30) + __import__('os').system('x'",
            "days=__import__('os')",
            "days=30, days=1",
            "years=1",
            "days=-1",
            "days=30 garbage",
            "30 dayz",
            "days=",
            ",",
        ] {
            let err = Retention::parse(bad).unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{bad}");
            let msg = err.to_string();
            assert!(msg.starts_with("--retention: "), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }
}
