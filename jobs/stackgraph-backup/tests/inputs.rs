//! Hostile input: values with trailing newlines and control characters, malformed endpoints
//! and prefixes, S3-only flags on `file://`, templates that render bad names at some hours,
//! negative sizes. Each must end in one line naming the field, exit 2 and nothing written, or,
//! where trimming is safe, just work. Never a panic. Secrets never reach the log, at any level.

mod common;

use common::{sg, Backend, Run, BUCKET};
use sts_backup_testkit::{S3Server, ACCESS_KEY, SECRET_KEY};

/// Runs stackgraph-backup with `env` against nothing else.
fn run_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = sg();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run::from(cmd.output().unwrap())
}

/// Exit 2 with exactly one stderr line that names `field`.
#[track_caller]
fn assert_invalid(out: &Run, field: &str) {
    assert_eq!(out.code, 2, "expected exit 2 naming {field}: {out:?}");
    let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line naming {field}: {out:?}");
    assert!(lines[0].contains(field), "the line should name {field}: {out:?}");
    assert!(!out.stderr.contains("panicked"), "{out:?}");
}

#[test]
fn trailing_newlines_in_credentials_and_region_are_trimmed() {
    let backend = Backend::s3();
    let Backend::S3 { server, .. } = &backend else {
        unreachable!()
    };
    let access = format!("{ACCESS_KEY}\n");
    let secret = format!("{SECRET_KEY}\r\n");
    let out = run_env(
        &["backup", "--", "echo", "hello"],
        &[
            ("BACKUP_STORAGE", &format!("s3://{BUCKET}\n")),
            ("S3_ENDPOINT", &format!("{}\n", server.endpoint())),
            ("AWS_ACCESS_KEY_ID", &access),
            ("AWS_SECRET_ACCESS_KEY", &secret),
            ("S3_REGION", "us-east-1\n"),
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");

    // The credentials directory, as a Secret mounted from a YAML block scalar.
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("accesskey"), format!("{ACCESS_KEY}\n")).unwrap();
    std::fs::write(creds.path().join("secretkey"), format!("{SECRET_KEY}\n")).unwrap();
    let out = run_env(
        &["list"],
        &[
            ("BACKUP_STORAGE", &format!("s3://{BUCKET}")),
            ("S3_ENDPOINT", &server.endpoint()),
            ("S3_CREDENTIALS_DIR", &creds.path().display().to_string()),
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn control_characters_in_credentials_and_region_are_refused_without_a_panic() {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let base = |extra: &[(&'static str, String)]| {
        let mut env = vec![
            ("BACKUP_STORAGE", format!("s3://{BUCKET}")),
            ("S3_ENDPOINT", server.endpoint()),
        ];
        env.extend(extra.iter().cloned());
        env
    };
    let bad_access = format!("{ACCESS_KEY}\u{7}x");
    let bad_secret = format!("se\u{1b}[31m{SECRET_KEY}");
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            base(&[
                ("AWS_ACCESS_KEY_ID", bad_access.clone()),
                ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ]),
            "AWS_ACCESS_KEY_ID",
        ),
        (
            base(&[
                ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
                ("AWS_SECRET_ACCESS_KEY", bad_secret.clone()),
            ]),
            "AWS_SECRET_ACCESS_KEY",
        ),
        (
            base(&[
                ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
                ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
                ("AWS_SESSION_TOKEN", "tok\nen".into()),
            ]),
            "AWS_SESSION_TOKEN",
        ),
        (base(&[("S3_REGION", "us-east-1\u{1}".into())]), "--region"),
        (base(&[("S3_REGION", "us east 1".into())]), "--region"),
        (base(&[("S3_REGION", String::new())]), "--region"),
    ];
    for (env, field) in cases {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for args in [&["list"][..], &["backup", "--", "echo", "x"][..]] {
            let out = run_env(args, &env);
            assert_invalid(&out, field);
            assert!(
                !out.stderr.contains(ACCESS_KEY) && !out.stderr.contains(SECRET_KEY),
                "{out:?}"
            );
        }
    }
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("accesskey"), &bad_access).unwrap();
    std::fs::write(creds.path().join("secretkey"), SECRET_KEY).unwrap();
    let out = run_env(
        &["backup", "--", "echo", "x"],
        &[
            ("BACKUP_STORAGE", &format!("s3://{BUCKET}")),
            ("S3_ENDPOINT", &server.endpoint()),
            ("S3_CREDENTIALS_DIR", &creds.path().display().to_string()),
        ],
    );
    assert_invalid(&out, "accesskey");
    assert!(!out.stderr.contains(ACCESS_KEY), "{out:?}");
    assert_eq!(std::fs::read_dir(server.dir.path().join(BUCKET)).unwrap().count(), 0);
}

#[test]
fn bad_prefixes_and_endpoints_are_one_line_and_change_nothing() {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let creds = server.credentials_dir(ACCESS_KEY, SECRET_KEY);
    let long = format!("s3://{BUCKET}/{}", "p".repeat(900));
    let storages = [
        format!("s3://{BUCKET}/a\u{7}b"),
        format!("s3://{BUCKET}/a\nb"),
        format!("s3://{BUCKET}/a//b"),
        format!("s3://{BUCKET}/a\\b"),
        long,
    ];
    for storage in &storages {
        let out = run_env(
            &["backup", "--", "echo", "x"],
            &[
                ("BACKUP_STORAGE", storage),
                ("S3_ENDPOINT", &server.endpoint()),
                ("S3_CREDENTIALS_DIR", &creds.path().display().to_string()),
            ],
        );
        assert_invalid(&out, "--storage");
    }
    let endpoints = [
        "http://",
        "http://exa mple",
        "http://127.0.0.1:99999",
        "http://[::1",
        "ftp://127.0.0.1",
        "127.0.0.1:9000",
        "http://user:pass@127.0.0.1:9000",
        "http://127.0.0.1:9000/?x=1",
    ];
    for endpoint in endpoints {
        for args in [&["list"][..], &["backup", "--", "echo", "x"][..]] {
            let out = run_env(
                args,
                &[
                    ("BACKUP_STORAGE", &format!("s3://{BUCKET}")),
                    ("S3_ENDPOINT", endpoint),
                    ("S3_CREDENTIALS_DIR", &creds.path().display().to_string()),
                ],
            );
            assert_invalid(&out, "--s3-endpoint");
            assert!(!out.stderr.contains("pass@"), "userinfo must not be echoed: {out:?}");
        }
    }
    assert_eq!(std::fs::read_dir(server.dir.path().join(BUCKET)).unwrap().count(), 0);
}

#[test]
fn s3_only_settings_with_a_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("file://{}", dir.path().display());
    let cases: [(&str, &str, &str); 7] = [
        ("S3_ENDPOINT", "http://127.0.0.1:9000", "--s3-endpoint"),
        ("S3_SSE", "AES256", "--sse"),
        ("S3_SSE", "aws:kms", "--sse"),
        ("S3_CREDENTIALS_DIR", "/tmp", "--credentials-dir"),
        ("S3_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt", "--ca-bundle"),
        ("S3_ADDRESSING", "virtual", "--s3-addressing"),
        ("S3_REGION", "eu-west-1", "--region"),
    ];
    for (var, value, field) in cases {
        let out = run_env(
            &["backup", "--", "echo", "x"],
            &[("BACKUP_STORAGE", &storage), (var, value)],
        );
        assert_invalid(&out, field);
    }
    let out = run_env(
        &["backup", "--sse", "aws:kms", "--", "echo", "x"],
        &[("BACKUP_STORAGE", &storage)],
    );
    assert_invalid(&out, "--sse");
    assert!(out.stderr.contains("KMS"), "{out:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // The defaults themselves are fine with a directory.
    let out = run_env(&["backup", "--", "echo", "x"], &[("BACKUP_STORAGE", &storage)]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn name_templates_are_checked_as_templates_not_one_rendering() {
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("file://{}", dir.path().display());
    // Each renders a valid name at some instants and a space, '/' or newline at others.
    for template in [
        "sts-%l.graph",
        "sts-%e.graph",
        "sts-%k.graph",
        "sts-%_H%M.graph",
        "sts-%c.graph",
        "sts-%D.graph",
        "sts-%v.graph",
        "sts-%n%Y.graph",
        "sts-%Y%t.graph",
    ] {
        let out = run_env(
            &["backup", "--name-template", template, "--", "echo", "x"],
            &[("BACKUP_STORAGE", &storage)],
        );
        assert_invalid(&out, "--name-template");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    for good in ["sts-%Y%m%d-%H%M%S.graph", "sts-%-d-%p-%Z.graph", "sts-%s.graph"] {
        let out = run_env(
            &["backup", "--name-template", good, "--", "echo", "x"],
            &[("BACKUP_STORAGE", &storage)],
        );
        assert_eq!(out.code, 0, "{good}: {out:?}");
    }
}

#[test]
fn an_empty_force_argument_appends_nothing() {
    let backend = Backend::file();
    assert_eq!(
        backend
            .run(&["backup", "--name-template", "b.graph", "--", "echo", "x"])
            .code,
        0
    );
    // The importer reports how many arguments it got.
    let import = ["sh", "-c", "cat >/dev/null; echo \"argc=$#\" >&2", "importer"];
    let mut args = vec!["restore", "--force", "b.graph", "--"];
    args.extend(import);
    let out = backend.run_with(&args, &[("RESTORE_FORCE_ARG", "")]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("argc=0"), "{out:?}");
    let out = backend.run_with(&args, &[("RESTORE_FORCE_ARG", "-force")]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("argc=1"), "{out:?}");
}

#[test]
fn names_and_templates_from_yaml_blocks_are_trimmed() {
    let backend = Backend::file();
    let out = backend.run_with(
        &["backup", "--", "echo", "x"],
        &[("BACKUP_STACKGRAPH_SCHEDULED_BACKUP_NAME_TEMPLATE", "t-%Y.graph\n")],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let name = backend.names().pop().unwrap();
    assert!(name.starts_with("t-") && name.ends_with(".graph"), "{name:?}");
    let out = backend.run_with(&["verify"], &[("BACKUP_NAME", &format!("{name}\n"))]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn usage_errors_are_one_line_naming_the_flag() {
    let cases: [(&[&str], &str); 8] = [
        (&["backup", "--part-size", "-5MiB", "--", "echo"], "--part-size"),
        (&["backup", "--retention", "-30d", "--", "echo"], "--retention"),
        (
            &["backup", "--upload-concurrency", "-1", "--", "echo"],
            "--upload-concurrency",
        ),
        (&["backup", "--part-size=-5MiB", "--", "echo"], "--part-size"),
        (&["list", "--bogus"], "--bogus"),
        (&["verify"], "NAME"),
        (&["--log-format", "xml", "list"], "--log-format"),
        (&["no-such-command"], "no-such-command"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("file://{}", dir.path().display());
    for (args, field) in cases {
        let out = run_env(args, &[("BACKUP_STORAGE", &storage)]);
        assert_invalid(&out, field);
    }
    let help = run_env(&["backup", "--help"], &[]);
    assert_eq!(help.code, 0, "{help:?}");
    assert!(help.stdout.contains("--stall-timeout"), "{help:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Credentials never reach the log, at any level, in text or JSON, whichever way they came in.
#[test]
fn no_secret_at_trace_level() {
    let backend = Backend::s3();
    let Backend::S3 { server, creds } = &backend else {
        unreachable!()
    };
    let via_dir = vec![("S3_CREDENTIALS_DIR", creds.path().display().to_string())];
    let via_env = vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
    ];
    let mut n = 0;
    for keys in [&via_dir, &via_env] {
        for rust_log in [
            "trace",
            "trace,aws_sigv4=trace,aws_smithy_runtime=trace,aws_sdk_s3=trace,hyper=trace",
        ] {
            for format in ["text", "json"] {
                n += 1;
                let name = format!("b{n}.graph");
                for args in [
                    vec!["backup", "--name-template", &name, "--", "echo", "data"],
                    vec!["list"],
                    vec!["verify", &name],
                ] {
                    let mut env: Vec<(&str, &str)> = vec![
                        ("BACKUP_STORAGE", "s3://sts-stackgraph-backup"),
                        ("RUST_LOG", rust_log),
                        ("LOG_FORMAT", format),
                    ];
                    let endpoint = server.endpoint();
                    env.push(("S3_ENDPOINT", &endpoint));
                    env.extend(keys.iter().map(|(k, v)| (*k, v.as_str())));
                    let out = run_env(&args, &env);
                    assert_eq!(out.code, 0, "{args:?} {rust_log} {format}: {out:?}");
                    if rust_log.contains("aws_sigv4") {
                        assert!(out.stderr.contains("canonical"), "signing trace should be on: {out:?}");
                    }
                    for secret in [ACCESS_KEY, SECRET_KEY] {
                        assert!(
                            !out.stderr.contains(secret) && !out.stdout.contains(secret),
                            "{secret} printed by {args:?} with RUST_LOG={rust_log}, {format}"
                        );
                    }
                }
            }
        }
    }
}

/// A manifest is read by meaning: upper-case hex is the same checksum, and a manifest over
/// the size limit is an integrity failure (exit 4), not a runtime one, on both backends.
#[test]
fn manifest_hex_case_and_oversize() {
    for backend in [Backend::file(), Backend::s3()] {
        assert_eq!(
            backend
                .run(&["backup", "--name-template", "m.graph", "--", "echo", "x"])
                .code,
            0
        );
        let path = backend.object_path("m.graph.manifest.json");
        let original = std::fs::read_to_string(&path).unwrap();
        let manifest: serde_json::Value = serde_json::from_str(&original).unwrap();
        let mut upper = manifest.clone();
        for field in ["sha256", "raw_sha256"] {
            upper[field] = manifest[field].as_str().unwrap().to_ascii_uppercase().into();
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&upper).unwrap()).unwrap();
        let out = backend.run(&["verify", "m.graph"]);
        assert_eq!(out.code, 0, "upper-case hex is the same checksum: {out:?}");

        let mut padded = serde_json::to_string_pretty(&manifest).unwrap();
        padded.push_str(&" ".repeat(1025 * 1024)); // over the 1 MiB limit (10,000 part digests fit)
        std::fs::write(&path, padded).unwrap();
        let out = backend.run(&["verify", "m.graph"]);
        assert_eq!(out.code, 4, "an oversize manifest is an integrity failure: {out:?}");
        assert!(out.stderr.contains("m.graph"), "{out:?}");
    }
}
