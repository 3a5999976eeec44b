//! Issue 18 item 3 through the binary: client-side encryption to age X25519 recipients. Keys
//! are made with the Debian `age-keygen`, and a stored backup is decrypted by hand with the
//! `age` CLI: the stored object is a plain age file. Restores refuse, before anything is
//! changed, an encrypted backup without an identity (exit 2) or with identities that are not
//! its recipients (exit 4); a tampered ciphertext or plaintext fails closed (exit 4).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{random_file, sha256_file, Backend, Run};
use sha2::{Digest, Sha256};
use sts_backup_testkit::proxy::{Faults, Proxy};

const NAME: &str = "sts-backup-20260101-0100.graph";
const MIB: usize = 1 << 20;

/// An age identity file written by `age-keygen -o`, and its recipient.
pub struct Key {
    pub file: PathBuf,
    pub recipient: String,
}

pub fn keygen(dir: &Path, name: &str) -> Key {
    let (file, recipient) = common::age_keygen(dir, name);
    Key { file, recipient }
}

fn fingerprint(recipient: &str) -> String {
    hex::encode(&Sha256::digest(recipient.as_bytes())[..8])
}

fn encrypt_to(keys: &[&Key]) -> String {
    keys.iter().map(|k| k.recipient.as_str()).collect::<Vec<_>>().join(",")
}

fn identities(keys: &[&Key]) -> String {
    keys.iter()
        .map(|k| k.file.display().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn backup(b: &Backend, input: &Path, compress: &str, to: &[&Key]) -> Run {
    let template = format!("--name-template={NAME}");
    let args = [
        "backup",
        &template,
        "--compress",
        compress,
        "--",
        "cat",
        input.to_str().unwrap(),
    ];
    b.run_with(&args, &[("STS_ENCRYPT_TO", &encrypt_to(to))])
}

/// Restores into `target` (a file the importer writes) with an emptiness check that leaves a
/// marker when it ran: a refusal before anything destructive leaves neither.
fn restore(b: &Backend, work: &Path, with: &[&Key]) -> (Run, PathBuf, PathBuf) {
    let target = work.join("restored");
    let checked = work.join("empty-check-ran");
    let _ = std::fs::remove_file(&target);
    let _ = std::fs::remove_file(&checked);
    let import = format!("cat > {}", target.display());
    let check = format!("touch {}", checked.display());
    let args = ["restore", NAME, "--empty-check", &check, "--", "sh", "-c", &import];
    let run = match with {
        [] => b.run(&args),
        keys => b.run_with(&args, &[("STS_IDENTITY_FILE", &identities(keys))]),
    };
    (run, target, checked)
}

fn manifest_path(b: &Backend) -> PathBuf {
    b.object_path(&format!("{NAME}.manifest.json"))
}

fn manifest(b: &Backend) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(manifest_path(b)).unwrap()).unwrap()
}

/// What an attacker with write access to the bucket (and no signing key) does after changing
/// the stored object: every stored digest recomputed, so `verify` without a key passes.
fn recompute_stored_digests(b: &Backend) {
    let data = std::fs::read(b.object_path(NAME)).unwrap();
    let mut m = manifest(b);
    let part = m["parts"]["size"].as_u64().unwrap() as usize;
    m["size"] = data.len().into();
    m["sha256"] = hex::encode(Sha256::digest(&data)).into();
    m["parts"]["sha256"] = data.chunks(part).map(|c| hex::encode(Sha256::digest(c))).collect();
    std::fs::write(manifest_path(b), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

/// What a forger with write access to the bucket (and no signing key) does: replaces the
/// stored object with `input` encrypted to `to` by the age CLI, and recomputes the stored
/// digests.
fn replace_with_age_file(b: &Backend, to: &Key, input: &Path) {
    let out = Command::new("age")
        .args(["-r", &to.recipient, "-o"])
        .arg(b.object_path(NAME))
        .arg(input)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    recompute_stored_digests(b);
}

fn age_decrypt(key: &Key, object: &Path) -> Vec<u8> {
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&key.file)
        .arg(object)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn round_trip_with_two_recipients(b: &Backend, compress: &str) {
    let work = tempfile::tempdir().unwrap();
    let (one, two) = (keygen(work.path(), "one"), keygen(work.path(), "two"));
    let input = random_file(work.path(), 9 * MIB + 4321, 7);
    let out = backup(b, &input, compress, &[&one, &two]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains("AGE-SECRET-KEY"), "{out:?}");

    let m = manifest(b);
    assert_eq!(m["format"], 3, "{m}");
    assert_eq!(m["encryption"]["scheme"], "age-x25519", "{m}");
    assert_eq!(
        m["encryption"]["recipients"],
        serde_json::json!([fingerprint(&one.recipient), fingerprint(&two.recipient)]),
        "{m}"
    );
    assert_eq!(m["raw_sha256"], sha256_file(&input), "{m}");
    assert_eq!(m["raw_size"], std::fs::metadata(&input).unwrap().len(), "{m}");
    // The stored object is an age file, the manifest's digests are of it.
    let object = b.object_path(NAME);
    let stored = std::fs::read(&object).unwrap();
    assert!(stored.starts_with(b"age-encryption.org/v1\n"), "not an age file");
    assert_eq!(m["sha256"], hex::encode(Sha256::digest(&stored)), "{m}");
    let plain = std::fs::read(&input).unwrap();
    assert!(
        !stored.windows(64).any(|w| w == &plain[MIB..MIB + 64]),
        "plaintext in the stored object"
    );

    // Decrypted by hand with the age CLI (then zstd), it is the export.
    let mut by_hand = age_decrypt(&two, &object);
    if compress == "zstd" {
        by_hand = zstd_decode(&by_hand);
    }
    assert!(by_hand == plain, "age -d did not give the export back");

    let listed: serde_json::Value = serde_json::from_str(b.run(&["list", "-o", "json"]).stdout.trim()).unwrap();
    assert_eq!(listed[0]["encrypted_to"], m["encryption"]["recipients"], "{listed}");
    // Verify needs no key; either identity restores.
    let verify = b.run(&["verify", NAME]);
    assert_eq!(verify.code, 0, "{verify:?}");
    for key in [&one, &two] {
        let (run, target, _) = restore(b, work.path(), &[key]);
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(sha256_file(&target), sha256_file(&input));
    }
    // With an identity, verify proves the plaintext too.
    let verify = b.run_with(&["verify", NAME], &[("STS_IDENTITY_FILE", &identities(&[&one]))]);
    assert_eq!(verify.code, 0, "{verify:?}");
}

fn zstd_decode(data: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.zst");
    std::fs::write(&path, data).unwrap();
    let out = Command::new("zstd").arg("-dc").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn two_recipients_either_restores_s3() {
    round_trip_with_two_recipients(&Backend::s3(), "none");
}

#[test]
fn two_recipients_either_restores_with_zstd_file() {
    round_trip_with_two_recipients(&Backend::file(), "zstd");
}

#[test]
fn a_wrong_or_missing_identity_is_refused_before_anything_changes() {
    let b = Backend::file();
    let work = tempfile::tempdir().unwrap();
    let (one, other) = (keygen(work.path(), "one"), keygen(work.path(), "other"));
    let input = random_file(work.path(), MIB, 3);
    assert_eq!(backup(&b, &input, "zstd", &[&one]).code, 0);

    let (run, target, checked) = restore(&b, work.path(), &[&other]);
    assert_eq!(run.code, 4, "{run:?}");
    let line = format!(
        "backup {NAME:?} is encrypted to {}; none of the given identities matches",
        fingerprint(&one.recipient)
    );
    assert!(run.stderr.contains(&line), "{run:?}");
    assert!(!target.exists() && !checked.exists(), "the target was touched");

    let (run, target, checked) = restore(&b, work.path(), &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("--identity") && run.stderr.contains("STS_IDENTITY_FILE"),
        "{run:?}"
    );
    assert!(!target.exists() && !checked.exists(), "the target was touched");

    // Several identities: one matching is enough (negative control of the refusals above).
    let (run, target, checked) = restore(&b, work.path(), &[&other, &one]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(checked.exists());
    assert_eq!(sha256_file(&target), sha256_file(&input));

    // verify with a wrong identity is refused too; without any it checks the stored bytes.
    let verify = b.run_with(&["verify", NAME], &[("STS_IDENTITY_FILE", &identities(&[&other]))]);
    assert_eq!(verify.code, 4, "{verify:?}");
}

#[test]
fn bad_keys_are_invalid_input_naming_the_flag_not_the_secret() {
    let b = Backend::file();
    let work = tempfile::tempdir().unwrap();
    let input = random_file(work.path(), 1000, 1);
    let out = b.run(&[
        "backup",
        "--encrypt-to",
        "age1notarecipient",
        "--",
        "cat",
        input.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("--encrypt-to") && out.stderr.contains("age1notarecipient"),
        "{out:?}"
    );
    assert!(b.objects().is_empty(), "{:?}", b.objects());

    let one = keygen(work.path(), "one");
    assert_eq!(backup(&b, &input, "none", &[&one]).code, 0);
    let broken = work.path().join("broken.key");
    std::fs::write(&broken, "# a comment\nAGE-SECRET-KEY-1SECRETBUTBROKEN\n").unwrap();
    let (run, target, checked) = restore(
        &b,
        work.path(),
        &[&Key {
            file: broken.clone(),
            recipient: String::new(),
        }],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("--identity") && run.stderr.contains(&broken.display().to_string()),
        "{run:?}"
    );
    assert!(!run.stderr.contains("SECRETBUTBROKEN"), "the key leaked: {run:?}");
    assert!(!target.exists() && !checked.exists());
}

/// A changed ciphertext whose stored digests were recomputed (no signing key): age's chunk
/// authentication stops the restore. The untouched backup restores (negative control).
#[test]
fn tampered_ciphertext_with_recomputed_digests_fails_closed() {
    let b = Backend::file();
    let work = tempfile::tempdir().unwrap();
    let one = keygen(work.path(), "one");
    let input = random_file(work.path(), 6 * MIB + 17, 5);
    assert_eq!(backup(&b, &input, "none", &[&one]).code, 0);
    let (run, _, _) = restore(&b, work.path(), &[&one]);
    assert_eq!(run.code, 0, "negative control: the untouched backup restores: {run:?}");

    let object = b.object_path(NAME);
    let mut stored = std::fs::read(&object).unwrap();
    let at = 5 * MIB;
    stored[at] ^= 0x01;
    std::fs::write(&object, &stored).unwrap();
    recompute_stored_digests(&b);
    let verify = b.run(&["verify", NAME]);
    assert_eq!(
        verify.code, 0,
        "without a key only the stored digests are checked: {verify:?}"
    );

    let (run, target, _) = restore(&b, work.path(), &[&one]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("decrypting"), "{run:?}");
    let got = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
    assert!(
        got < at as u64,
        "{got} bytes reached the importer, the change is at {at}"
    );
    let verify = b.run_with(&["verify", NAME], &[("STS_IDENTITY_FILE", &identities(&[&one]))]);
    assert_eq!(verify.code, 4, "{verify:?}");
}

/// A whole substitute, encrypted to the same (public) recipient with the age CLI, stored
/// digests recomputed: age accepts it, the plaintext check refuses it, and the end of it never
/// reaches the importer. The same substitute with the plaintext digest recomputed as well
/// restores: without signatures, encryption does not prove who wrote a backup (README).
#[test]
fn a_substitute_encrypted_to_the_recipient_is_caught_by_the_plaintext_check() {
    let b = Backend::file();
    let work = tempfile::tempdir().unwrap();
    let one = keygen(work.path(), "one");
    let input = random_file(work.path(), 3 * MIB, 11);
    assert_eq!(backup(&b, &input, "none", &[&one]).code, 0);

    let forged = random_file(work.path(), 3 * MIB, 12);
    replace_with_age_file(&b, &one, &forged);
    let (run, target, _) = restore(&b, work.path(), &[&one]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("the decrypted data is"), "{run:?}");
    let got = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
    assert!(
        got <= (2 * MIB) as u64,
        "{got} bytes reached the importer before the verdict"
    );

    // Negative control: the attacker also rewrites the plaintext digest.
    let mut m = manifest(&b);
    m["raw_sha256"] = sha256_file(&forged).into();
    std::fs::write(manifest_path(&b), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let (run, target, _) = restore(&b, work.path(), &[&one]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(sha256_file(&target), sha256_file(&forged));
}

/// Peak memory of an encrypted, compressed backup and restore stays flat (GNU time): within a
/// few MiB of the same run unencrypted (age adds 64 KiB chunks, a 256 KiB pipe and the 1 MiB
/// held back), and at most 64 MiB in an optimized build (the debug build's own footprint is
/// larger; `tests/bench/run.sh` checks the release build unencrypted).
#[test]
fn memory_stays_flat_when_encrypting() {
    let b = Backend::s3();
    let work = tempfile::tempdir().unwrap();
    let one = keygen(work.path(), "one");
    let input = random_file(work.path(), 40 * MIB, 21);
    let identity = one.file.display().to_string();
    let mut peaks = Vec::new();
    for (run, encrypt) in [("plain", None), ("encrypted", Some(one.recipient.as_str()))] {
        let template = format!("--name-template=sts-backup-2026010{}-0100.graph", peaks.len() + 1);
        let mut backup_args = vec!["backup", template.as_str(), "--compress", "zstd"];
        if let Some(recipient) = encrypt {
            backup_args.extend(["--encrypt-to", recipient]);
        }
        backup_args.extend(["--", "cat", input.to_str().unwrap()]);
        let (out, backup_kib) = peak_rss(&b, &backup_args, &[]);
        assert_eq!(out.code, 0, "{out:?}");
        let name = b.names().pop().unwrap();
        let target = work.path().join(run);
        let import = format!("cat > {}", target.display());
        let restore_args = ["restore", &name, "--identity", &identity, "--", "sh", "-c", &import];
        let (out, restore_kib) = peak_rss(&b, &restore_args, &[]);
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(sha256_file(&target), sha256_file(&input));
        eprintln!("peak RSS for 40 MiB, {run}: backup {backup_kib} KiB, restore {restore_kib} KiB");
        peaks.push((backup_kib, restore_kib));
    }
    let ((plain_backup, plain_restore), (backup_kib, restore_kib)) = (peaks[0], peaks[1]);
    assert!(
        backup_kib <= plain_backup + 8 * 1024,
        "encrypting grew the backup's peak from {plain_backup} to {backup_kib} KiB"
    );
    assert!(
        restore_kib <= plain_restore + 8 * 1024,
        "decrypting grew the restore's peak from {plain_restore} to {restore_kib} KiB"
    );
    if !cfg!(debug_assertions) {
        for (what, kib) in [("backup", backup_kib), ("restore", restore_kib)] {
            assert!(kib <= 64 * 1024, "{what} peaked at {kib} KiB");
        }
    }
}

/// Runs the binary under GNU time; returns the run and its peak RSS in KiB.
fn peak_rss(b: &Backend, args: &[&str], extra_env: &[(&str, &str)]) -> (Run, u64) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("rss");
    let sg = common::sg();
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-f").arg("%M").arg("-o").arg(&report).arg(sg.get_program());
    for (k, v) in sg.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.args(args);
    for (k, v) in b.env() {
        cmd.env(k, v);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let run = Run::from(cmd.output().unwrap());
    let kib = std::fs::read_to_string(&report).unwrap().trim().parse().unwrap();
    (run, kib)
}

/// `replicate` copies an encrypted backup without any key (it checks the stored digests), and
/// the copy restores with the identity.
#[test]
fn an_encrypted_backup_replicates_without_a_key_and_restores_from_the_copy() {
    let b = Backend::file();
    let copy = Backend::file();
    let work = tempfile::tempdir().unwrap();
    let one = keygen(work.path(), "one");
    let input = random_file(work.path(), 5 * MIB + 3, 9);
    assert_eq!(backup(&b, &input, "zstd", &[&one]).code, 0);
    let to = format!("file://{}", copy.object_dir().display());
    let out = b.run(&["replicate", "--to", &to]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(&format!("copied {NAME}")), "{out:?}");
    assert_eq!(manifest(&copy)["encryption"], manifest(&b)["encryption"]);
    let (run, target, _) = restore(&copy, work.path(), &[&one]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(sha256_file(&target), sha256_file(&input));
}

/// The most a restore reads of an encrypted object to judge its age header before anything
/// changes (`catalogue::START_READ`).
const START_READ: u64 = 64 * 1024;

/// A `--force` restore whose importer leaves a marker the moment it starts (a forced import
/// may wipe the target before reading a byte) and whose emptiness check leaves one too.
/// Returns the run and the two markers: (importer started, empty check ran).
fn forced_restore(b: &Backend, work: &Path, with: &Key, extra_env: &[(&str, &str)]) -> (Run, PathBuf, PathBuf) {
    let target = work.join("forced");
    let started = work.join("importer-started");
    let checked = work.join("empty-check-ran");
    for path in [&target, &started, &checked] {
        let _ = std::fs::remove_file(path);
    }
    let import = format!("touch {}; cat > {}", started.display(), target.display());
    let check = format!("touch {}", checked.display());
    let args = [
        "restore",
        NAME,
        "--force",
        "--empty-check",
        &check,
        "--",
        "sh",
        "-c",
        &import,
    ];
    let identity = with.file.display().to_string();
    let mut env = vec![("STS_IDENTITY_FILE", identity.as_str())];
    env.extend_from_slice(extra_env);
    (b.run_with(&args, &env), started, checked)
}

/// Gap in issue 18 item 3: a manifest naming identity A's fingerprint over an object encrypted
/// to B (written with the age CLI, stored digests recomputed, no signing) passes every
/// manifest-only check. The restore reads the age header (one bounded range) and refuses
/// before the emptiness check and the importer run: exit 4, neither marker. The untouched
/// backup, restored the same way, starts both (control of the markers). On S3 the bytes the
/// server sends are counted: the header read adds at most [`START_READ`] to one read of the
/// object.
fn a_header_for_another_key_is_refused_before_anything_starts(b: &Backend) {
    let work = tempfile::tempdir().unwrap();
    let (a, other) = (keygen(work.path(), "a"), keygen(work.path(), "other"));
    let input = random_file(work.path(), 3 * MIB + 5, 13);
    assert_eq!(backup(b, &input, "none", &[&a]).code, 0);

    let proxy = match b {
        Backend::S3 { server, .. } => Some(Proxy::start(server.port, Faults::default())),
        Backend::File(_) => None,
    };
    let endpoint = proxy.as_ref().map(|p| format!("http://127.0.0.1:{}", p.port));
    let via: Vec<(&str, &str)> = endpoint.iter().map(|e| ("S3_ENDPOINT", e.as_str())).collect();
    let (run, started, checked) = forced_restore(b, work.path(), &a, &via);
    assert_eq!(run.code, 0, "control: the untouched backup restores: {run:?}");
    assert!(started.exists() && checked.exists(), "control: the markers work");
    assert_eq!(sha256_file(&work.path().join("forced")), sha256_file(&input));
    if let Some(proxy) = &proxy {
        let size = std::fs::metadata(b.object_path(NAME)).unwrap().len();
        let served = proxy.downstream();
        eprintln!("an encrypted restore of {size} stored bytes: {served} bytes served");
        assert!(
            served >= size,
            "{served} bytes served: the restore did not go through the proxy"
        );
        // Besides the header read: the manifest and HTTP response headers, a few KiB.
        assert!(
            served <= size + START_READ + 16 * 1024,
            "{served} bytes served for {size}: more than one read plus the header's {START_READ}"
        );
    }

    replace_with_age_file(b, &other, &input);
    // On S3 the manifest also records the object's ETag: the forger drops it.
    let mut m = manifest(b);
    m.as_object_mut().unwrap().remove("data_etag");
    std::fs::write(manifest_path(b), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    assert_eq!(
        m["encryption"]["recipients"],
        serde_json::json!([fingerprint(&a.recipient)])
    );
    let verify = b.run(&["verify", NAME]);
    assert_eq!(verify.code, 0, "the stored digests agree: {verify:?}");

    let (run, started, checked) = forced_restore(b, work.path(), &a, &via);
    assert!(!started.exists(), "the importer was started: {run:?}");
    assert!(!checked.exists(), "the emptiness check ran before the refusal: {run:?}");
    assert_eq!(run.code, 4, "{run:?}");
    let line = format!(
        "backup {NAME:?}: the stored object's age header does not open with the identities matching {}",
        fingerprint(&a.recipient)
    );
    assert!(run.stderr.contains(&line), "{run:?}");
}

#[test]
fn a_header_for_another_key_is_refused_before_anything_starts_file() {
    a_header_for_another_key_is_refused_before_anything_starts(&Backend::file());
}

#[test]
fn a_header_for_another_key_is_refused_before_anything_starts_s3() {
    a_header_for_another_key_is_refused_before_anything_starts(&Backend::s3());
}

/// A backup small enough that its whole first part is the header read: the part is checked
/// against its digest there. A flipped byte in the header (digests not recomputed) is named
/// as a corrupt part 1 before anything starts; flipped back, the backup restores (control).
#[test]
fn a_small_first_part_is_verified_with_the_header_read() {
    let b = Backend::file();
    let work = tempfile::tempdir().unwrap();
    let a = keygen(work.path(), "a");
    let input = random_file(work.path(), 1000, 17);
    assert_eq!(backup(&b, &input, "none", &[&a]).code, 0);
    let object = b.object_path(NAME);
    let stored = std::fs::read(&object).unwrap();
    assert!((stored.len() as u64) < START_READ);
    let mut bad = stored.clone();
    bad[40] ^= 0x20;
    std::fs::write(&object, &bad).unwrap();

    let (run, started, checked) = forced_restore(&b, work.path(), &a, &[]);
    assert!(
        !started.exists() && !checked.exists(),
        "something ran before the refusal: {run:?}"
    );
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("is corrupt: part 1 (bytes 0.."), "{run:?}");

    std::fs::write(&object, &stored).unwrap();
    let (run, started, _) = forced_restore(&b, work.path(), &a, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(started.exists());
    assert_eq!(sha256_file(&work.path().join("forced")), sha256_file(&input));
}
