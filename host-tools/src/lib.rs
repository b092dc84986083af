//! pqcc host tools: the library behind the `pqcc` binary.
