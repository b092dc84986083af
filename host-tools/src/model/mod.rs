//! Model archives: a reproducible tar of a model directory plus a dm-verity hash tree,
//! identified by `name@revision:roothash` (`pqcc model build`, `pqcc model verify`).
//!
//! The archive is byte-identical to GNU tar run with the reproducible flags of
//! `../shared/data/repro-tar/README.md`, padded to 4 KiB as that recipe does, and the
//! hash file byte-identical to `veritysetup format` (format 1, SHA-256, 4096-byte
//! blocks, the given salt and UUID). pqcc writes both itself, in one pass over the
//! model's bytes. The formats and the special-file policy are in
//! `docs/model-archives.md`.
//!
//! - [`tar`]: the tar headers and lengths.
//! - [`scan`]: walking the model directory, in archive order, refusing what GNU tar
//!   would store differently from a plain copy.
//! - [`archive`]: the single-pass writer and the parallel block hashing.
//! - [`verify`]: userspace re-check of an archive.
//! - [`build`]: cache, lock, crash-safe outputs.
//! - [`source`]: directory, Hugging Face snapshot and `ORG/NAME[@REV]` sources.
//! - [`hub`]: downloading `ORG/NAME[@REV]` snapshots (its own HTTP client: every path
//!   built from checked names, every file checked against the hash the hub declared).
//! - [`manifest`]: the signed ModelManifest written with `--key`.
//! - [`cli`]: the subcommands.

pub mod archive;
pub mod build;
pub mod cli;
pub mod hub;
pub mod manifest;
pub mod scan;
pub mod source;
pub mod tar;
pub mod verify;

/// The salt of the recipe (17 bytes).
pub const DEFAULT_SALT: &str = "00010203040506070809101a1b1c1d1e1f";
/// The UUID of the recipe.
pub const DEFAULT_UUID: &str = "645ac31f-7610-42e1-8434-9d733699eac0";
