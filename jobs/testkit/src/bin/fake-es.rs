//! `fake-es [--version V] [--port N] [--alias HOST=ADDR]... [--keystore CLIENT:ACCESS:SECRET]
//! [--allow-insecure-settings]`: the testkit's fake Elasticsearch as a process, for tests
//! outside Rust (the cluster suite runs the chart's Jobs in containers against it).
//!
//! Prints `listening URL` on stdout once serving, then takes one JSON command per line on
//! stdin and answers each with one JSON line on stdout — the test's hand on the cluster's
//! state, as the Rust tests call the fake's methods:
//!
//! - `{"cmd":"add_index","name":N,"open":true}`, `{"cmd":"add_index_template","name":N,
//!   "patterns":[..],"data_stream":false}`, `{"cmd":"add_data_stream","name":N,"backing":[..]}`
//! - `{"cmd":"seed_snapshot","repo":R,"name":N,"start_ms":T,"indices":[..],"data_streams":[..]}`
//!   (a finished snapshot written to the repository's bucket)
//! - `{"cmd":"indices"}` → `{"index": open, ...}`; `{"cmd":"repository","name":R}` → its body
//! - `{"cmd":"requests"}` / `{"cmd":"destructive"}` → `[{"method","path","endpoint"}, ...]`
//! - `{"cmd":"clear_log"}`; `{"cmd":"violations"}` → the requests the spec refused (taken)
//!
//! Ends on EOF of stdin; exits 1 if the spec refused any request not yet taken.

use std::io::{BufRead, Write};

use serde_json::{json, Value};
use sts_backup_testkit::fake_es::{FakeEs, FakeOptions, Logged};

fn usage() -> ! {
    eprintln!(
        "usage: fake-es [--version V] [--port N] [--alias HOST=ADDR]... [--keystore CLIENT:ACCESS:SECRET] [--allow-insecure-settings]"
    );
    std::process::exit(2)
}

fn options() -> FakeOptions {
    let mut opts = FakeOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            // FakeOptions holds the version as a &'static str: this one lives as long as the process
            "--version" => opts.version = Box::leak(value().into_boxed_str()),
            "--port" => opts.port = Some(value().parse().unwrap_or_else(|_| usage())),
            "--alias" => {
                let v = value();
                let (host, addr) = v.split_once('=').unwrap_or_else(|| usage());
                opts.host_aliases.push((host.into(), addr.into()));
            }
            "--keystore" => {
                let v = value();
                let mut parts = v.splitn(3, ':');
                let (Some(client), Some(access), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
                    usage()
                };
                opts.keystore.push((client.into(), access.into(), secret.into()));
            }
            "--allow-insecure-settings" => opts.allow_insecure_settings = true,
            _ => usage(),
        }
    }
    opts
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

fn logged(requests: Vec<Logged>) -> Value {
    requests
        .into_iter()
        .map(|r| json!({"method": r.method, "path": r.path, "endpoint": r.endpoint}))
        .collect()
}

fn command(es: &FakeEs, cmd: &Value) -> Result<Value, String> {
    let name = cmd["name"].as_str().unwrap_or_default();
    Ok(match cmd["cmd"].as_str().unwrap_or_default() {
        "add_index" => {
            es.add_index(name, cmd["open"].as_bool().unwrap_or(true));
            json!({"ok": true})
        }
        "add_index_template" => {
            let patterns = strings(cmd, "patterns");
            let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
            es.add_index_template(name, &patterns, cmd["data_stream"].as_bool().unwrap_or(false));
            json!({"ok": true})
        }
        "add_data_stream" => {
            let backing = strings(cmd, "backing");
            let backing: Vec<&str> = backing.iter().map(String::as_str).collect();
            es.add_data_stream(name, &backing);
            json!({"ok": true})
        }
        "seed_snapshot" => {
            let repo = cmd["repo"].as_str().ok_or("seed_snapshot needs repo")?;
            if es.repository(repo).is_none() {
                return Err(format!("repository {repo} is not registered"));
            }
            let (indices, streams) = (strings(cmd, "indices"), strings(cmd, "data_streams"));
            let indices: Vec<&str> = indices.iter().map(String::as_str).collect();
            let streams: Vec<&str> = streams.iter().map(String::as_str).collect();
            let start = cmd["start_ms"].as_i64().ok_or("seed_snapshot needs start_ms")?;
            es.seed_snapshot(repo, name, start, &indices, &streams);
            json!({"ok": true})
        }
        "indices" => json!(es.indices()),
        "repository" => json!(es.repository(name)),
        "requests" => logged(es.requests()),
        "destructive" => logged(es.destructive_requests()),
        "clear_log" => {
            es.clear_log();
            json!({"ok": true})
        }
        "violations" => json!(es.take_violations()),
        other => return Err(format!("unknown command {other:?}")),
    })
}

fn main() {
    let es = FakeEs::start(options());
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening {}", es.url())
        .and_then(|()| out.flush())
        .expect("stdout");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let answer = match serde_json::from_str::<Value>(&line) {
            Ok(cmd) => command(&es, &cmd).unwrap_or_else(|e| json!({"error": e})),
            Err(e) => json!({"error": format!("not JSON: {e}")}),
        };
        writeln!(out, "{answer}").and_then(|()| out.flush()).expect("stdout");
    }
    let violations = es.take_violations();
    if !violations.is_empty() {
        eprintln!(
            "the fake Elasticsearch saw requests the spec does not allow:\n{}",
            violations.join("\n")
        );
        std::process::exit(1);
    }
}
