//! Gives the library the soname of NVIDIA's driver library, `libcuda.so` (a test that
//! loads it by path first makes cudarc's `dlopen("libcuda.so")` find it), and compiles
//! the kernel emulator: the real kernel source (`gpu/src/kernel/aes_gcm.cu`) as C++
//! with the CUDA built-ins of `emu/cuda_shim.h`.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so");
    println!("cargo:rerun-if-changed=emu/emu.cpp");
    println!("cargo:rerun-if-changed=emu/cuda_shim.h");
    println!("cargo:rerun-if-changed=../src/kernel/aes_gcm.cu");
    cc::Build::new()
        .cpp(true)
        .file("emu/emu.cpp")
        .include("emu")
        .include("../src/kernel")
        .flag("-std=c++17")
        .flag("-fno-strict-aliasing")
        .flag("-fvisibility=hidden")
        .flag("-Wno-unknown-pragmas")
        .define("MIN_BLOCKS", "2")
        .opt_level(2)
        .warnings(true)
        .compile("pqcc_kernel_emu");
}
