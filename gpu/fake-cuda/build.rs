//! Gives the library the soname of NVIDIA's driver library, `libcuda.so`: a test that
//! loads it by path first makes cudarc's `dlopen("libcuda.so")` find it.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so");
}
