//! Issue 10 item 12: the empty check gets a time limit and is stopped with everything it
//! started.

mod common;

use common::Backend;

#[test]
fn a_hanging_empty_check_is_stopped_with_its_process_group() {
    let b = Backend::file();
    let out = b.run(&["backup", "--name-template", "g.graph", "--", "echo", "data"]);
    assert_eq!(out.code, 0, "{out:?}");
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("child-alive");
    // The check starts a grandchild that would touch the marker after 3 s if it survived.
    let check = format!("sh -c '(sleep 3; touch {}) & sleep 60'", marker.display());
    let started = std::time::Instant::now();
    let out = b.run(&[
        "restore",
        "g.graph",
        "--empty-check",
        &check,
        "--empty-check-timeout",
        "1s",
        "--",
        "cat",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("did not finish within 1s"), "{out:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(!marker.exists(), "the check's process group was killed");
    let bad = b.run(&["restore", "g.graph", "--empty-check-timeout", "soon", "--", "cat"]);
    assert_eq!(bad.code, 2, "{bad:?}");
}

/// SIGTERM while the empty check runs (the Job deleted): the check and what it started are
/// stopped, the importer never runs, the job ends with one line.
#[test]
fn sigterm_during_the_empty_check_stops_its_process_group() {
    let b = Backend::file();
    let out = b.run(&["backup", "--name-template", "g.graph", "--", "echo", "data"]);
    assert_eq!(out.code, 0, "{out:?}");
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("child-alive");
    let imported = work.path().join("imported");
    let check = format!("sh -c '(sleep 3; touch {}) & sleep 60'", marker.display());
    let import = format!("cat > {}", imported.display());
    let mut cmd = common::sg();
    for (k, v) in b.env() {
        cmd.env(k, v);
    }
    cmd.args(["restore", "g.graph", "--empty-check", &check, "--", "sh", "-c", &import])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let out = common::Run::from(child.wait_with_output().unwrap());
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("interrupted by SIGTERM"), "{out:?}");
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(!marker.exists(), "the check's process group was killed");
    assert!(!imported.exists(), "the importer never ran");
}
