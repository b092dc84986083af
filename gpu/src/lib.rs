//! `pqcc-gpu`: moves sealed pqcc channel frames to the GPU and opens them there.
