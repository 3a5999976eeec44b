//! Issue 18 item 2 through the binary: manifests signed with an ed25519 key that the bucket
//! never sees. With a trusted key, a backup whose data was replaced and whose digests were
//! recomputed is refused (exit 4), as are unsigned backups, signatures by other keys and an
//! older signed manifest posing under a newer name. Keys are made, and a signature checked,
//! with openssl alone: the format is standard.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Backend, Run};
use sha2::{Digest, Sha256};

const OLD: &str = "sts-backup-20260101-0100.graph";
const NEW: &str = "sts-backup-20260102-0100.graph";

struct Key {
    private: PathBuf,
    public: PathBuf,
}

fn make_key(dir: &Path, name: &str) -> Key {
    let (private, public) = sts_backup_testkit::ed25519_key_pair(dir, name);
    Key { private, public }
}

fn backup(b: &Backend, name: &str, data: &str, key: Option<&Key>) -> Run {
    let template = format!("--name-template={name}");
    let export = format!("printf '{data}'");
    let mut args = vec!["backup", template.as_str()];
    let flag;
    if let Some(key) = key {
        flag = format!("--signing-key={}", key.private.display());
        args.push(&flag);
    }
    args.extend(["--", "sh", "-c", export.as_str()]);
    b.run(&args)
}

fn trusting(b: &Backend, args: &[&str], keys: &[&Key]) -> Run {
    let list: Vec<String> = keys.iter().map(|k| k.public.display().to_string()).collect();
    b.run_with(args, &[("STS_TRUSTED_KEYS", &list.join(","))])
}

fn manifest_path(b: &Backend, name: &str) -> PathBuf {
    b.object_path(&format!("{name}.manifest.json"))
}

fn read_manifest(b: &Backend, name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(manifest_path(b, name)).unwrap()).unwrap()
}

/// What an attacker with write access to the bucket does: new data, every digest
/// recomputed; the signature is kept (it cannot be recomputed without the key).
fn substitute(b: &Backend, name: &str, data: &[u8]) {
    std::fs::write(b.object_path(name), data).unwrap();
    let sha = hex::encode(Sha256::digest(data));
    let mut m = read_manifest(b, name);
    m["size"] = data.len().into();
    m["raw_size"] = data.len().into();
    m["sha256"] = sha.clone().into();
    m["raw_sha256"] = sha.clone().into();
    m["parts"]["sha256"] = serde_json::json!([sha]);
    std::fs::write(manifest_path(b, name), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

#[test]
fn a_substituted_backup_is_refused_only_with_a_trusted_key() {
    let keys = tempfile::tempdir().unwrap();
    let key = make_key(keys.path(), "signer");
    let b = Backend::file();
    assert_eq!(backup(&b, OLD, "the real graph", Some(&key)).code, 0);
    let listed: serde_json::Value =
        serde_json::from_str(trusting(&b, &["list", "-o", "json"], &[&key]).stdout.trim()).unwrap();
    assert!(listed[0]["signed_by"].is_string(), "{listed}");
    assert_eq!(listed[0]["signature_checked"], true, "{listed}");
    assert_eq!(trusting(&b, &["verify", OLD], &[&key]).code, 0);

    substitute(&b, OLD, b"an attacker's graph");
    // Negative control: without a trusted key the substitute passes every checksum.
    let unchecked = b.run(&["verify", OLD]);
    assert_eq!(
        unchecked.code, 0,
        "the substitute should pass without signatures: {unchecked:?}"
    );
    let verify = trusting(&b, &["verify", OLD], &[&key]);
    assert_eq!(verify.code, 4, "{verify:?}");
    assert!(
        verify.stderr.contains("signature of its manifest does not match"),
        "{verify:?}"
    );

    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("restored");
    let import = format!("cat > {}", target.display());
    let restore = trusting(&b, &["restore", OLD, "--", "sh", "-c", &import], &[&key]);
    assert_eq!(restore.code, 4, "{restore:?}");
    assert!(!target.exists(), "the importer must not have run");
    let list = trusting(&b, &["list", "-o", "json"], &[&key]);
    assert_eq!(common::listed_names(&list), Vec::<String>::new(), "{list:?}");
    assert!(list.stderr.contains("cannot be restored"), "{list:?}");

    // The same substitute without its signature: unsigned, refused as such.
    let mut m = read_manifest(&b, OLD);
    m.as_object_mut().unwrap().remove("signature");
    std::fs::write(manifest_path(&b, OLD), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let verify = trusting(&b, &["verify", OLD], &[&key]);
    assert_eq!(verify.code, 4, "{verify:?}");
    assert!(verify.stderr.contains("is not signed"), "{verify:?}");
}

#[test]
fn keys_rotate_and_a_foreign_key_is_refused() {
    let keys = tempfile::tempdir().unwrap();
    let (old, new) = (make_key(keys.path(), "old"), make_key(keys.path(), "new"));
    let b = Backend::file();
    assert_eq!(backup(&b, OLD, "made with the old key", Some(&old)).code, 0);
    assert_eq!(backup(&b, NEW, "made with the new key", Some(&new)).code, 0);
    let both = trusting(&b, &["list", "-o", "json"], &[&new, &old]);
    assert_eq!(common::listed_names(&both), [OLD, NEW], "{both:?}");
    let only_new = trusting(&b, &["verify", OLD], &[&new]);
    assert_eq!(only_new.code, 4, "{only_new:?}");
    assert!(only_new.stderr.contains("not among the trusted keys"), "{only_new:?}");
    assert_eq!(trusting(&b, &["verify", NEW], &[&new]).code, 0);
    // The --latest pick skips what is not trusted.
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("restored");
    let import = format!("cat > {}", target.display());
    let latest = trusting(&b, &["restore", "--latest", "--", "sh", "-c", &import], &[&old]);
    assert_eq!(latest.code, 0, "{latest:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "made with the old key");
}

#[test]
fn an_older_signed_backup_cannot_pose_as_a_newer_one() {
    let keys = tempfile::tempdir().unwrap();
    let key = make_key(keys.path(), "signer");
    let b = Backend::file();
    assert_eq!(backup(&b, OLD, "last month graph", Some(&key)).code, 0);
    // Copied as is: the manifest names the old backup.
    std::fs::copy(b.object_path(OLD), b.object_path(NEW)).unwrap();
    std::fs::copy(manifest_path(&b, OLD), manifest_path(&b, NEW)).unwrap();
    let copied = trusting(&b, &["verify", NEW], &[&key]);
    assert_eq!(copied.code, 4, "{copied:?}");
    assert!(copied.stderr.contains("names another backup"), "{copied:?}");
    // Renamed inside as well, with a newer time: the signature no longer matches.
    let mut m = read_manifest(&b, NEW);
    m["name"] = NEW.into();
    m["created"] = "2026-01-02T01:00:00Z".into();
    std::fs::write(manifest_path(&b, NEW), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let renamed = trusting(&b, &["verify", NEW], &[&key]);
    assert_eq!(renamed.code, 4, "{renamed:?}");
    assert!(renamed.stderr.contains("does not match"), "{renamed:?}");
    // Negative control: without a trusted key the renamed copy passes.
    assert_eq!(b.run(&["verify", NEW]).code, 0);
}

/// An operator can check a manifest with standard tools: the signed bytes are the manifest
/// without `signature`, `run` and `data_etag` as sorted, compact JSON (`jq -cjS`), verified by
/// openssl.
#[test]
fn openssl_verifies_a_manifest_signature() {
    let keys = tempfile::tempdir().unwrap();
    let key = make_key(keys.path(), "signer");
    let b = Backend::file();
    assert_eq!(backup(&b, OLD, "graph", Some(&key)).code, 0);
    let m = read_manifest(&b, OLD);
    let work = tempfile::tempdir().unwrap();
    let sig = work.path().join("sig");
    std::fs::write(&sig, hex::decode(m["signature"]["ed25519"].as_str().unwrap()).unwrap()).unwrap();
    let check = |manifest: &Path| {
        let message = work.path().join("message");
        let jq = Command::new("jq")
            .args(["-cjS", "del(.signature, .run, .data_etag)"])
            .arg(manifest)
            .output()
            .unwrap();
        assert!(jq.status.success());
        std::fs::write(&message, jq.stdout).unwrap();
        Command::new("openssl")
            .args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"])
            .arg(&key.public)
            .arg("-in")
            .arg(&message)
            .arg("-sigfile")
            .arg(&sig)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(check(&manifest_path(&b, OLD)), "openssl should accept the signature");
    // Negative control: one changed byte and openssl refuses it too.
    let changed = work.path().join("changed.json");
    let text = std::fs::read_to_string(manifest_path(&b, OLD)).unwrap();
    std::fs::write(&changed, text.replacen("\"raw_size\": 5", "\"raw_size\": 6", 1)).unwrap();
    assert_ne!(std::fs::read_to_string(&changed).unwrap(), text);
    assert!(!check(&changed), "openssl should refuse a changed manifest");
}

#[test]
fn bad_keys_and_unsigned_backups() {
    let keys = tempfile::tempdir().unwrap();
    let b = Backend::file();
    let garbage = keys.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key").unwrap();
    let flag = format!("--signing-key={}", garbage.display());
    let out = b.run(&["backup", &flag, "--", "echo", "x"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--signing-key"), "{out:?}");
    assert!(b.objects().is_empty(), "nothing written: {:?}", b.objects());
    let missing = b.run_with(&["list"], &[("STS_TRUSTED_KEYS", "/nonexistent.pub.pem")]);
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(missing.stderr.contains("--trusted-key"), "{missing:?}");

    // A backup made without a key is listed without a signature, and refused once keys are trusted.
    let key = make_key(keys.path(), "signer");
    assert_eq!(backup(&b, OLD, "unsigned graph", None).code, 0);
    let listed: serde_json::Value = serde_json::from_str(b.run(&["list", "-o", "json"]).stdout.trim()).unwrap();
    assert!(listed[0]["signed_by"].is_null(), "{listed}");
    let verify = trusting(&b, &["verify", OLD], &[&key]);
    assert_eq!(verify.code, 4, "{verify:?}");
    assert!(verify.stderr.contains("is not signed"), "{verify:?}");
}

/// A StackState backup has no manifest, so no signature: with trusted keys it is listed as
/// not restorable, with the way out (`adopt --signing-key`), and restorable once adopted.
#[test]
fn stackstate_backups_are_signed_when_adopted() {
    let keys = tempfile::tempdir().unwrap();
    let key = make_key(keys.path(), "signer");
    let b = Backend::s3();
    let legacy = "sts-backup-20250301-0200.graph";
    std::fs::write(b.object_path(legacy), b"stackstate graph export\n").unwrap();
    let list = trusting(&b, &["list", "-o", "json"], &[&key]);
    assert_eq!(common::listed_names(&list), Vec::<String>::new(), "{list:?}");
    assert!(list.stderr.contains("adopt --signing-key"), "{list:?}");
    let verify = trusting(&b, &["verify", legacy], &[&key]);
    assert_eq!(verify.code, 4, "{verify:?}");
    // Negative control: without trusted keys it is a legacy backup like before.
    assert_eq!(common::listed_names(&b.run(&["list", "-o", "json"])), [legacy]);
    let flag = format!("--signing-key={}", key.private.display());
    let adopted = b.run(&["adopt", legacy, &flag]);
    assert_eq!(adopted.code, 0, "{adopted:?}");
    assert_eq!(trusting(&b, &["verify", legacy], &[&key]).code, 0);
}

/// With trusted keys an unsigned backup is not restorable, so it never stands in for a
/// signed one under the pruner's floor (here: the retention run after a backup).
#[test]
fn the_floor_counts_only_signed_backups_when_keys_are_trusted() {
    let newest = "sts-backup-20260103-0100.graph";
    let run = |trust: bool| {
        let keys = tempfile::tempdir().unwrap();
        let key = make_key(keys.path(), "signer");
        let b = Backend::file();
        assert_eq!(backup(&b, OLD, "signed", Some(&key)).code, 0);
        assert_eq!(backup(&b, NEW, "unsigned", None).code, 0);
        let template = format!("--name-template={newest}");
        let signing = format!("--signing-key={}", key.private.display());
        let args = [
            "backup",
            &template,
            &signing,
            "--retention=1d",
            "--min-keep=2",
            "--",
            "echo",
            "x",
        ];
        let out = match trust {
            true => trusting(&b, &args, &[&key]),
            false => b.run(&args),
        };
        assert_eq!(out.code, 0, "{out:?}");
        b.objects()
            .into_iter()
            .filter(|o| !o.ends_with(".manifest.json"))
            .collect::<Vec<_>>()
    };
    // Negative control: without trusted keys the floor keeps the two newest backups.
    assert_eq!(run(false), [NEW, newest]);
    assert_eq!(run(true), [OLD, newest], "the unsigned backup does not count");
}

/// A backup job that trusts keys must sign with one of them.
#[test]
fn a_writer_that_trusts_keys_must_sign_with_one_of_them() {
    let keys = tempfile::tempdir().unwrap();
    let (key, other) = (make_key(keys.path(), "signer"), make_key(keys.path(), "other"));
    let b = Backend::file();
    let unsigned = trusting(&b, &["backup", "--", "echo", "x"], &[&key]);
    assert_eq!(unsigned.code, 2, "{unsigned:?}");
    assert!(unsigned.stderr.contains("--signing-key: missing"), "{unsigned:?}");
    let flag = format!("--signing-key={}", other.private.display());
    let foreign = trusting(&b, &["backup", &flag, "--", "echo", "x"], &[&key]);
    assert_eq!(foreign.code, 2, "{foreign:?}");
    assert!(
        foreign.stderr.contains("is not among the --trusted-key keys"),
        "{foreign:?}"
    );
    assert!(b.objects().is_empty(), "nothing written: {:?}", b.objects());
    let signed = trusting(&b, &["backup", &flag, "--", "echo", "x"], &[&key, &other]);
    assert_eq!(signed.code, 0, "{signed:?}");
}
