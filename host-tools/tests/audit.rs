//! The audit log end to end: records appended through the library
//! ([`AuditLog::append`]), then every kind of tampering, each judged by the real
//! `pqcc audit verify` binary (exit 0 intact, 1 damaged naming the first bad line,
//! 2 I/O or usage error).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use pqcc_core::{hash, sign::SignerId};
use pqcc_tools::audit::{self, AuditLog, Decision, Record, encode_line, genesis_hash};

const PQCC: &str = env!("CARGO_BIN_EXE_pqcc");

mod common;
use common::TempDir;

fn rec(i: u64) -> Record {
    Record {
        time: 1_764_000_000 + i,
        kind: "driver-module".into(),
        decision: [
            Decision::Valid,
            Decision::Invalid,
            Decision::Allow,
            Decision::Deny,
        ][usize::try_from(i % 4).unwrap()],
        reason: format!("check {i}: \"quoted\", line\nbreak"),
        signer: i
            .is_multiple_of(2)
            .then_some(SignerId([u8::try_from(i % 256).unwrap(); 32])),
        artifact_sha3_256: hash::sha3_256(&[&i.to_be_bytes()]),
        actor: "ci@host".into(),
    }
}

/// A log of `n` records written through the library.
fn make_log(dir: &TempDir, n: u64) -> PathBuf {
    let p = dir.path("audit.log");
    let mut log = AuditLog::open(&p).unwrap();
    for i in 0..n {
        let a = log.append(&rec(i)).unwrap();
        assert_eq!(a.seq, i);
    }
    p
}

fn lines(p: &Path) -> Vec<String> {
    let s = std::fs::read_to_string(p).unwrap();
    s.split_inclusive('\n').map(str::to_owned).collect()
}

fn write_lines(p: &Path, l: &[String]) {
    std::fs::write(p, l.concat()).unwrap();
}

fn verify(p: &Path, extra: &[&str]) -> Output {
    Command::new(PQCC)
        .args(["audit", "verify"])
        .arg(p)
        .args(extra)
        .output()
        .unwrap()
}

/// Runs `pqcc audit verify` (text and JSON) and expects exit 1 naming `line`.
fn expect_bad(p: &Path, line: u64, why: &str) {
    let out = verify(p, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "stdout {stdout}");
    assert!(
        stdout.starts_with(&format!("invalid: line {line}: ")),
        "expected line {line}, got {stdout}"
    );
    assert!(stdout.contains(why), "expected {why:?} in {stdout}");
    let out = verify(p, &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["line"], line);
    assert!(v["reason"].as_str().unwrap().contains(why));
}

#[test]
fn intact_log_verifies() {
    let d = TempDir::new("intact");
    let p = make_log(&d, 6);
    let out = verify(&p, &[]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("valid: 6 records, head "), "{stdout}");
    let out = verify(&p, &["--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["records"], 6);
    // The head is the hash of the last line's exact bytes.
    let l = lines(&p);
    assert_eq!(
        v["head_sha3_256"],
        hex::encode(hash::sha3_256(&[l[5].as_bytes()]))
    );
    // Each record's `prev` is the hash of the line before it.
    for w in l.windows(2) {
        let next: serde_json::Value = serde_json::from_str(&w[1]).unwrap();
        assert_eq!(
            next["prev"],
            hex::encode(hash::sha3_256(&[w[0].as_bytes()]))
        );
    }
    let first: serde_json::Value = serde_json::from_str(&l[0]).unwrap();
    assert_eq!(first["prev"], hex::encode(genesis_hash()));
    assert_eq!(first["signer"], SignerId([0; 32]).to_string());
    let second: serde_json::Value = serde_json::from_str(&l[1]).unwrap();
    assert_eq!(second["signer"], serde_json::Value::Null);
    assert_eq!(second["decision"], "invalid");
    // An empty log is intact, with zero records.
    let e = d.path("empty.log");
    std::fs::write(&e, b"").unwrap();
    let out = verify(&e, &["--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["records"], 0);
}

#[test]
fn modified_record() {
    let d = TempDir::new("modified");
    let p = make_log(&d, 5);
    let mut l = lines(&p);
    l[2] = l[2].replace("\"decision\":\"allow\"", "\"decision\":\"deny\"");
    write_lines(&p, &l);
    expect_bad(&p, 3, "record modified");
}

#[test]
fn modified_last_record() {
    let d = TempDir::new("modlast");
    let p = make_log(&d, 4);
    let mut l = lines(&p);
    l[3] = l[3].replace("\"time\":1764000003", "\"time\":1764000009");
    write_lines(&p, &l);
    expect_bad(&p, 4, "record modified");
}

#[test]
fn modified_record_with_recomputed_hash() {
    // The editor re-derives the record's own hash: the next line's `prev` breaks.
    let d = TempDir::new("modrehash");
    let p = make_log(&d, 5);
    let mut l = lines(&p);
    let v: serde_json::Value = serde_json::from_str(&l[1]).unwrap();
    let mut prev = [0u8; 32];
    hex::decode_to_slice(v["prev"].as_str().unwrap(), &mut prev).unwrap();
    let mut forged = rec(1);
    forged.decision = Decision::Valid;
    l[1] = encode_line(&forged, 1, &prev);
    write_lines(&p, &l);
    expect_bad(&p, 3, "prev does not match");
}

#[test]
fn edited_formatting() {
    let d = TempDir::new("format");
    let p = make_log(&d, 3);
    let mut l = lines(&p);
    l[1] = l[1].replacen("\"seq\":1", "\"seq\": 1", 1);
    write_lines(&p, &l);
    expect_bad(&p, 2, "canonical");
}

#[test]
fn deleted_record() {
    let d = TempDir::new("deleted");
    let p = make_log(&d, 5);
    let mut l = lines(&p);
    l.remove(2);
    write_lines(&p, &l);
    expect_bad(&p, 3, "seq is 3, expected 2");
}

#[test]
fn deleted_first_record() {
    let d = TempDir::new("delfirst");
    let p = make_log(&d, 3);
    let mut l = lines(&p);
    l.remove(0);
    write_lines(&p, &l);
    expect_bad(&p, 1, "seq is 1, expected 0");
}

#[test]
fn reordered_records() {
    let d = TempDir::new("reordered");
    let p = make_log(&d, 5);
    let mut l = lines(&p);
    l.swap(1, 3);
    write_lines(&p, &l);
    expect_bad(&p, 2, "seq is 3, expected 1");
}

#[test]
fn inserted_record() {
    let d = TempDir::new("inserted");
    let p = make_log(&d, 4);
    let mut l = lines(&p);
    // A well-formed record slotted in after line 2, chained from line 2 and numbered to
    // fit: the record after it no longer chains.
    let prev = hash::sha3_256(&[l[1].as_bytes()]);
    let mut extra = rec(99);
    extra.decision = Decision::Allow;
    l.insert(2, encode_line(&extra, 2, &prev));
    write_lines(&p, &l);
    expect_bad(&p, 4, "seq is 2, expected 3");
    // A duplicated line (replayed record).
    let d2 = TempDir::new("dup");
    let p2 = make_log(&d2, 3);
    let mut l = lines(&p2);
    let dup = l[1].clone();
    l.insert(2, dup);
    write_lines(&p2, &l);
    expect_bad(&p2, 3, "seq is 1, expected 2");
}

#[test]
fn inserted_record_renumbered() {
    // Inserting and renumbering everything after: the record after the insertion
    // does not chain from it.
    let d = TempDir::new("renumber");
    let p = make_log(&d, 3);
    let mut l = lines(&p);
    let prev = hash::sha3_256(&[l[0].as_bytes()]);
    let inserted = encode_line(&rec(50), 1, &prev);
    // Renumber the old records 1, 2 as 2, 3, keeping their `prev` values.
    let mut out = vec![l[0].clone(), inserted];
    for (i, line) in l.drain(1..).enumerate() {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let mut pv = [0u8; 32];
        hex::decode_to_slice(v["prev"].as_str().unwrap(), &mut pv).unwrap();
        out.push(encode_line(&rec(i as u64 + 1), i as u64 + 2, &pv));
    }
    write_lines(&p, &out);
    expect_bad(&p, 3, "prev does not match");
}

#[test]
fn truncated_last_line() {
    let d = TempDir::new("truncated");
    let p = make_log(&d, 4);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 20]).unwrap();
    expect_bad(&p, 4, "no newline");
    // Only the final newline missing.
    std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
    expect_bad(&p, 4, "no newline");
}

#[test]
fn truncated_whole_records_found_with_anchor() {
    let d = TempDir::new("anchor");
    let p = make_log(&d, 5);
    let out = verify(&p, &["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let head = v["head_sha3_256"].as_str().unwrap().to_owned();
    // The log grows: the old head is still an anchor inside it.
    AuditLog::open(&p).unwrap().append(&rec(5)).unwrap();
    assert_eq!(verify(&p, &["--anchor", &head]).status.code(), Some(0));
    // Cut two whole records: the writer's anchor file (LOG.head) finds it ...
    let l = lines(&p);
    write_lines(&p, &l[..4]);
    let out = verify(&p, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("invalid: line 5: missing"), "{stdout}");
    // ... without it (deleted too), the chain alone cannot tell ...
    let anchor = audit::anchor_path(&p);
    let kept = std::fs::read(&anchor).unwrap();
    std::fs::remove_file(&anchor).unwrap();
    assert_eq!(verify(&p, &[]).status.code(), Some(0));
    std::fs::write(&anchor, kept).unwrap();
    // ... a head kept elsewhere can, and names the first missing line.
    let out = verify(&p, &["--anchor", &head]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("invalid: line 5: missing"), "{stdout}");
    // A malformed anchor is a usage error.
    assert_eq!(verify(&p, &["--anchor", "xyz"]).status.code(), Some(2));
}

#[test]
fn bad_json() {
    let d = TempDir::new("badjson");
    let p = make_log(&d, 3);
    let mut l = lines(&p);
    l[1] = "{\"seq\":1,\n".into();
    write_lines(&p, &l);
    expect_bad(&p, 2, "not a JSON object");
    let mut l = lines(&p);
    l[1] = "[1,2,3]\n".into();
    write_lines(&p, &l);
    expect_bad(&p, 2, "not a JSON object");
    let mut l = lines(&p);
    l[1] = "\n".into();
    write_lines(&p, &l);
    expect_bad(&p, 2, "empty line");
    std::fs::write(&p, b"\xff\xfe garbage\n").unwrap();
    expect_bad(&p, 1, "not UTF-8");
}

#[test]
fn seq_gap() {
    // Every record well-formed and chained, but seq jumps from 1 to 3.
    let d = TempDir::new("seqgap");
    let p = d.path("audit.log");
    let mut prev = genesis_hash();
    let mut l = Vec::new();
    for (i, seq) in [0u64, 1, 3].into_iter().enumerate() {
        let line = encode_line(&rec(i as u64), seq, &prev);
        prev = hash::sha3_256(&[line.as_bytes()]);
        l.push(line);
    }
    write_lines(&p, &l);
    expect_bad(&p, 3, "seq is 3, expected 2");
}

#[test]
fn bad_fields() {
    let d = TempDir::new("fields");
    let p = make_log(&d, 2);
    let good = lines(&p);
    for (from, to, why) in [
        (
            "\"decision\":\"valid\"",
            "\"decision\":\"maybe\"",
            "decision",
        ),
        ("\"v\":1,", "\"v\":2,", "unsupported version"),
        ("\"actor\":", "\"extra\":1,\"actor\":", "unexpected field"),
        ("\"signer\":\"did:pqaid:", "\"signer\":\"did:x:", "signer"),
    ] {
        let mut l = good.clone();
        assert!(l[0].contains(from), "{from}");
        l[0] = l[0].replacen(from, to, 1);
        write_lines(&p, &l);
        expect_bad(&p, 1, why);
    }
}

#[test]
fn append_refuses_damaged_log() {
    let d = TempDir::new("refuse");
    let p = make_log(&d, 3);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 5]).unwrap();
    let err = AuditLog::open(&p).unwrap().append(&rec(3)).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("refusing to append"), "{msg}");
    assert!(msg.contains("line 3"), "{msg}");
    // Nothing was written.
    assert_eq!(std::fs::read(&p).unwrap(), &bytes[..bytes.len() - 5]);
}

#[test]
fn concurrent_appends_stay_chained() {
    let d = TempDir::new("concurrent");
    let p = d.path("audit.log");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                // Each thread its own open file description, as separate processes.
                let mut log = AuditLog::open(&p).unwrap();
                for i in 0..10 {
                    log.append(&rec(t * 100 + i)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let i = audit::verify_file(&p, None).unwrap().unwrap();
    assert_eq!(i.records, 40);
    assert_eq!(verify(&p, &[]).status.code(), Some(0));
}

#[test]
fn io_and_usage_errors_exit_2() {
    let d = TempDir::new("io");
    let out = verify(&d.path("missing.log"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.log"));
    // A directory is an I/O error, not damage.
    assert_eq!(verify(&d.0, &[]).status.code(), Some(2));
    let out = Command::new(PQCC)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    for args in [
        &["audit", "--help"][..],
        &["audit", "verify", "--help"],
        &["--help"],
        &["--version"],
    ] {
        let out = Command::new(PQCC).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
}

/// After its first append, an `AuditLog` checks only its own last line and what others
/// added since: lines appended by another writer are checked (a bad one is refused),
/// a rewritten last line is refused, and so is a log cut shorter than the writer left it
/// (by this writer, and by a new one through the anchor file).
#[test]
fn later_appends_check_what_changed() {
    let d = TempDir::new("incremental");
    let p = make_log(&d, 3);
    let mut mine = AuditLog::open(&p).unwrap();
    assert_eq!(mine.append(&rec(3)).unwrap().seq, 3);
    // Another writer appends two records: both are checked and chained from.
    let mut other = AuditLog::open(&p).unwrap();
    other.append(&rec(4)).unwrap();
    other.append(&rec(5)).unwrap();
    assert_eq!(mine.append(&rec(6)).unwrap().seq, 6);
    assert_eq!(audit::verify_file(&p, None).unwrap().unwrap().records, 7);

    // A line added behind the log's back that does not chain: refused.
    let good = std::fs::read(&p).unwrap();
    let mut l = lines(&p);
    let forged = l[6].replace("\"seq\":6", "\"seq\":7");
    l.push(forged);
    write_lines(&p, &l);
    let msg = format!("{:#}", mine.append(&rec(7)).unwrap_err());
    assert!(
        msg.contains("refusing to append") && msg.contains("line 8"),
        "{msg}"
    );

    // The last line replaced by a different, well-formed record chained from its
    // predecessor (longer, so the file did not shrink): the chain alone cannot tell,
    // but it is not the line that was written, so it is refused.
    std::fs::write(&p, &good).unwrap();
    let mut l = lines(&p);
    let mut other = rec(6);
    other.reason.push_str(" (rewritten later)");
    l[6] = audit::encode_line(&other, 6, &hash::sha3_256(&[l[5].as_bytes()]));
    write_lines(&p, &l);
    assert_eq!(audit::verify_file(&p, None).unwrap().unwrap().records, 7);
    let msg = format!("{:#}", mine.append(&rec(7)).unwrap_err());
    assert!(msg.contains("line 7 changed"), "{msg}");

    // Cut back to three records (shorter than this writer left it): refused, by this
    // writer (it knows the length) ...
    std::fs::write(&p, &good).unwrap();
    let l = lines(&p);
    write_lines(&p, &l[..3]);
    let msg = format!("{:#}", mine.append(&rec(3)).unwrap_err());
    assert!(
        msg.contains("shorter than") && msg.contains("cut off"),
        "{msg}"
    );
    // ... and by a new one (a restarted broker), through the anchor file LOG.head.
    let msg = format!(
        "{:#}",
        AuditLog::open(&p).unwrap().append(&rec(3)).unwrap_err()
    );
    assert!(
        msg.contains("lost records") && msg.contains("record 7"),
        "{msg}"
    );
    // The log restored, appending goes on.
    std::fs::write(&p, &good).unwrap();
    assert_eq!(AuditLog::open(&p).unwrap().append(&rec(7)).unwrap().seq, 7);
}
