//! The README's demo, end to end: `scripts/demo.sh` builds everything, starts the real
//! broker, boots the guest under QEMU (TCG) and must reach the workload through
//! evidence → policy → verity → channel → secret, and the workload (pqcc-workload, a
//! tiny Llama served with candle from sealed weights) must open the weights with the
//! released key and generate text. Each attestation `--tamper` mode must end in the
//! guest's FATAL line and power-off, the workload never run, and a non-zero exit;
//! `--tamper key` (the broker releases a wrong model key) must end in the workload's
//! own FATAL line, its exit status 1 reported by pqcc-init, no text, and exit 1.
//! One test, run in order: the modes share `target/demo/`.

use std::path::PathBuf;
use std::process::Command;

fn demo(tamper: Option<&str>) -> (i32, String) {
    let repo = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut c = Command::new("bash");
    c.arg(repo.join("scripts/demo.sh"));
    if let Some(t) = tamper {
        c.args(["--tamper", t]);
    }
    let out = c.output().expect("running scripts/demo.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("--- demo {tamper:?} ---\n{text}");
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn demo_happy_path_and_each_refusal() {
    let (code, out) = demo(None);
    assert_eq!(code, 0, "{out}");
    for stage in [
        "verity    ",
        "evidence  ",
        "policy    broker: unix#1: ACCEPT rule `demo`",
        "channel   ",
        "secret    ",
        "workload  pqcc-workload: weights opened with the released model-key (21 tensors, ",
        "[alice-llama@v1]",
        "workload  pqcc-workload: llama: 2 layers, hidden 64, 4 heads / 2 key-value, context 64, vocab 257",
        "workload  pqcc-workload: prompt \"Alice was \"",
        "workload  pqcc-workload: text \"Alice was ",
        " tokens/s; prompt: 10 tokens in ",
        "power-off ",
        "workload exited with status 0; powering off",
        "audit     valid: 1 records",
    ] {
        assert!(out.contains(stage), "missing `{stage}`:\n{out}");
    }
    assert!(out.contains("secrets received: model-key (32 B)"), "{out}");
    assert!(!out.contains("FATAL"), "{out}");

    for (mode, fatal) in [
        ("model", "pqcc-init: FATAL verity: "),
        (
            "broker-key",
            "pqcc-init: FATAL attest: the Accept is not signed by the configured broker key",
        ),
        (
            "policy",
            "pqcc-init: FATAL attest: broker refused: refused by policy",
        ),
        (
            "broker-down",
            "pqcc-init: FATAL attest: the broker did not come within broker.wait_ms",
        ),
    ] {
        let (code, out) = demo(Some(mode));
        assert_eq!(code, 1, "--tamper {mode}: {out}");
        assert!(
            out.contains(fatal),
            "--tamper {mode}: expected `{fatal}`:\n{out}"
        );
        assert!(
            !out.contains("workload  pqcc-workload:"),
            "--tamper {mode}: workload ran:\n{out}"
        );
        assert!(
            !out.contains("secrets received"),
            "--tamper {mode}: secret arrived:\n{out}"
        );
    }

    // The broker releases a wrong model key: attestation succeeds and the secret
    // arrives, but the sealed weights do not open with it.
    let (code, out) = demo(Some("key"));
    assert_eq!(code, 1, "--tamper key: {out}");
    assert!(out.contains("secrets received: model-key (32 B)"), "{out}");
    assert!(
        out.contains(
            "workload  pqcc-workload: FATAL sealed model: pqcc-manifest.sealed: wrong key"
        ),
        "--tamper key: {out}"
    );
    assert!(
        out.contains("workload exited with status 1; powering off"),
        "--tamper key: {out}"
    );
    assert!(
        out.contains("the workload refused the released key (key)"),
        "--tamper key: {out}"
    );
    assert!(!out.contains("pqcc-workload: text"), "--tamper key: {out}");
    assert!(
        !out.contains("pqcc-workload: weights opened"),
        "--tamper key: {out}"
    );
    assert!(!out.contains("pqcc-init: FATAL"), "--tamper key: {out}");
}
