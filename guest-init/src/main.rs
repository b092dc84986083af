//! `pqcc-init` binary: a thin wrapper over [`pqcc_init::run`].

fn main() {
    if let Err(e) = pqcc_init::run() {
        eprintln!("pqcc-init: FATAL init: {e}");
        std::process::exit(1);
    }
}
