//! NVIDIA GPU evidence verification (SPDM 1.1 measurements, device chain, RIMs).
