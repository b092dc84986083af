//! `pqcc-init` binary: a thin wrapper over [`pqcc_init::boot`].

fn main() {
    // Outside a guest (PID ≠ 1) it would mount over the host's /proc and power the
    // host off: refuse.
    if std::process::id() != 1 {
        eprintln!("pqcc-init: must run as PID 1 of a guest; refusing");
        std::process::exit(2);
    }
    pqcc_init::boot(&mut pqcc_init::BrokerAttestation)
}
