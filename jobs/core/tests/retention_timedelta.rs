//! `--retention` against the real oracle: CPython's `timedelta(...)`. Each input is handed
//! to `python3` as `timedelta(<input>)` (our fixed table only, with no builtins), and our
//! parser must agree: same microseconds and same `str()` where Python accepts a
//! non-negative delta, an error where Python raises or the delta is negative.

use std::io::Write;
use std::process::{Command, Stdio};

use sts_backup_core::retention::Retention;

/// Inputs where we must match Python exactly.
const ORACLE: &[&str] = &[
    "days = 30",
    "days=30",
    "weeks=2, hours=12",
    "days=1.5",
    "days=.5",
    "days=5.",
    "days=1.e1",
    "days=.5e1",
    "days=1e+2",
    "days=1E2",
    "hours=1e-3",
    "seconds=1.5e-7",
    "microseconds=0.5",
    "microseconds=1.5",
    "microseconds=2.5",
    "microseconds=-0.5, seconds=1",
    "milliseconds=0.0005",
    "minutes=0.1",
    "hours=0.1, minutes=0.1, seconds=0.1",
    "weeks=0.1, days=0.1, hours=0.1, milliseconds=0.3",
    "seconds=86399.9999995",
    "weeks=1e-6, microseconds=0.5",
    "days=0.000001157407407407407",
    "days=1_000",
    "days=0x10",
    "days=0X_1f",
    "days=0o17",
    "days=0b101",
    "30",
    "1, 2, 3, 4, 5, 6, 7",
    "1.5, 3600",
    "days=1,",
    "",
    "  days = 30  ",
    "days=\n30",
    "days = 30,\n hours = 1",
    "days=-1",
    "days=2, hours=-1",
    "days=--1",
    "days=+1",
    "days=- 1",
    "days=-0.5, hours=13",
    "years=1",
    "months=1",
    "Days=1",
    "days=30, days=1",
    "30, days=1",
    "days=1, 2",
    "1, 2, 3, 4, 5, 6, 7, 8",
    "days=30)",
    "days=__import__('os').getpid()",
    "days=x",
    "days=1j",
    "days=1e400",
    "days=999999999",
    "days=999999999, hours=23, minutes=59, seconds=59, microseconds=999999",
    "days=1000000000",
    "days=01",
    "days=00",
    "days=01.5",
    "days=1__0",
    "days=1_",
    "days=1.2.3",
    "days=30d",
    "days=1 2",
    "days==1",
    "days=",
    "=1",
    ",",
    "days=1,,",
    ",days=1",
    "days=0x",
    "days=0b2",
    "days=1e",
    "days=5 days",
];

/// Python accepts these (they are expressions, not literals); we refuse them on purpose
/// because the value is parsed, never evaluated.
const REFUSED_ON_PURPOSE: &[&str] = &[
    "days=30) + timedelta(days=1",
    "days=30*2",
    "days=(30)",
    "days=True",
    "days=~1",
    "days=1 if 1 else 2",
];

/// Short forms Python does not know: humantime durations, microseconds expected.
const SHORT_FORMS: &[(&str, i128)] = &[
    ("30d", 30 * 86_400_000_000),
    ("720h", 720 * 3_600_000_000),
    ("2w", 14 * 86_400_000_000),
    ("90m", 90 * 60_000_000),
    ("1h 30m", 90 * 60_000_000),
    ("45s", 45_000_000),
];

const ORACLE_SCRIPT: &str = r#"
import json, sys
from datetime import timedelta
for line in sys.stdin:
    text = json.loads(line)
    try:
        td = eval("timedelta(" + text + ")", {"__builtins__": {}, "timedelta": timedelta})
        us = td // timedelta(microseconds=1)
        print(json.dumps({"ok": str(us), "str": str(td)}))
    except BaseException as e:
        print(json.dumps({"err": type(e).__name__ + ": " + str(e)}))
"#;

fn python(inputs: &[&str]) -> Vec<serde_json::Value> {
    let mut child = Command::new("python3")
        .args(["-c", ORACLE_SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed for the timedelta oracle test");
    {
        let mut stdin = child.stdin.take().unwrap();
        for input in inputs {
            writeln!(stdin, "{}", serde_json::to_string(input).unwrap()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn agrees_with_cpython_timedelta() {
    let answers = python(ORACLE);
    assert_eq!(answers.len(), ORACLE.len());
    let (mut accepted, mut refused) = (0, 0);
    let mut mismatches = Vec::new();
    for (input, answer) in ORACLE.iter().zip(&answers) {
        let ours = Retention::parse(input);
        match answer
            .get("ok")
            .and_then(|v| v.as_str())
            .map(|v| v.parse::<i128>().unwrap())
        {
            Some(us) if us >= 0 => match ours {
                Err(e) => mismatches.push(format!("{input:?}: Python gives {answer}, we refuse: {e}")),
                Ok(r) if r.as_micros() != us || r.to_string() != answer["str"].as_str().unwrap() => mismatches.push(
                    format!("{input:?}: Python gives {answer}, we {} ({} us)", r, r.as_micros()),
                ),
                Ok(_) => accepted += 1,
            },
            _ => match ours {
                Ok(r) => mismatches.push(format!(
                    "{input:?}: Python says {answer}, we accept {r} ({} us)",
                    r.as_micros()
                )),
                Err(e) => {
                    let err = e.to_string();
                    assert!(err.starts_with("--retention: "), "{err}");
                    assert!(!err.contains('\n'), "{err}");
                    refused += 1;
                }
            },
        }
    }
    assert!(
        mismatches.is_empty(),
        "disagreements with Python:\n{}",
        mismatches.join("\n")
    );
    eprintln!(
        "timedelta oracle: {} inputs, {accepted} accepted like Python, {refused} refused",
        ORACLE.len()
    );
    assert!(accepted >= 30 && refused >= 30, "the table should exercise both sides");
}

#[test]
fn refuses_expressions_python_would_evaluate() {
    let answers = python(REFUSED_ON_PURPOSE);
    for (input, answer) in REFUSED_ON_PURPOSE.iter().zip(&answers) {
        assert!(
            answer.get("ok").is_some(),
            "{input:?} is meant to be valid Python: {answer}"
        );
        let err = Retention::parse(input).expect_err(input).to_string();
        assert!(err.starts_with("--retention: "), "{err}");
    }
}

#[test]
fn accepts_short_forms() {
    for (input, us) in SHORT_FORMS {
        assert_eq!(Retention::parse(input).unwrap().as_micros(), *us, "{input}");
    }
}
