//! The README's demo, end to end: `scripts/demo.sh` builds everything, starts the real
//! broker, boots the guest under QEMU (TCG) and must reach the workload through
//! evidence → policy → verity → channel → secret; each `--tamper` mode must end in the
//! guest's FATAL line and power-off, the workload never run, and a non-zero exit.
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
        "workload  demo-workload: weights opened with the released model-key",
        "workload  demo-workload: prompt \"Alice was \"",
        "power-off ",
        "audit     valid: 1 records",
    ] {
        assert!(out.contains(stage), "missing `{stage}`:\n{out}");
    }
    assert!(out.contains("secrets received: model-key (32 B)"), "{out}");

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
            !out.contains("demo-workload: prompt"),
            "--tamper {mode}: workload ran:\n{out}"
        );
        assert!(
            !out.contains("secrets received"),
            "--tamper {mode}: secret arrived:\n{out}"
        );
    }
}
