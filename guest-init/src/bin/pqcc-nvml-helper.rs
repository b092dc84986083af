//! `pqcc-nvml-helper --library PATH`: loads NVML and answers pqcc-init's requests on
//! stdin/stdout ([`pqcc_init::nvml_helper`]). Build it dynamically linked (without
//! `+crt-static`) and ship it with its loader and glibc in the initramfs.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let library = match args.as_slice() {
        [] => "libnvidia-ml.so.1",
        [flag, lib] if flag == "--library" && !lib.is_empty() => lib.as_str(),
        _ => {
            eprintln!("usage: pqcc-nvml-helper [--library PATH]");
            std::process::exit(2);
        }
    };
    std::process::exit(pqcc_init::nvml_helper::helper_main(library))
}
