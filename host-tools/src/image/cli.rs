//! `pqcc image …` subcommands.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{Options, WORKLOAD_DST, build, modules_from_list, split_src_dst, write_atomically};

/// Guest images.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build a deterministic initramfs (newc cpio) for pqcc-init; prints its SHA-256
    /// and SHA-384.
    Build(BuildArgs),
    /// Predict launch measurements of a direct kernel boot: SEV-SNP MEASUREMENT (OVMF,
    /// kernel-hashes table, VMSAs) or TDX MRTD, RTMR1 and RTMR2 (`docs/evidence.md`).
    Measure(crate::evidence_cli::MeasureArgs),
}

/// `pqcc image build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The static pqcc-init binary, installed as /init.
    #[arg(long, value_name = "BIN")]
    pub init: PathBuf,
    /// The guest config, installed as /etc/pqcc/init.toml.
    #[arg(long, value_name = "TOML")]
    pub config: PathBuf,
    /// The workload binary: SRC (installed as /bin/workload) or SRC:/DST.
    #[arg(long, value_name = "BIN[:DST]")]
    pub workload: Option<String>,
    /// Kernel modules (.ko), installed under /lib/modules/ by file name.
    #[arg(long, value_name = "KO", num_args = 1.., conflicts_with = "kernel_release")]
    pub modules: Vec<PathBuf>,
    /// A kernel folder from scripts/guest-kernel.sh: packs the modules of its modules.list.
    #[arg(long, value_name = "DIR")]
    pub kernel_release: Option<PathBuf>,
    /// Extra files, SRC:/DST (repeatable).
    #[arg(long = "file", value_name = "SRC:DST")]
    pub files: Vec<String>,
    /// Compress with gzip (boots slower under TCG than uncompressed).
    #[arg(long)]
    pub gzip: bool,
    /// The image to write.
    #[arg(short = 'o', long = "out", value_name = "PATH")]
    pub out: PathBuf,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs an image subcommand.
pub fn run(cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Measure(a) => crate::evidence_cli::run_measure(&a),
        ImageCommand::Build(a) => {
            let workload = match &a.workload {
                None => None,
                Some(w) if w.contains(":/") => Some(split_src_dst(w)?),
                Some(w) => Some((PathBuf::from(w), WORKLOAD_DST.to_owned())),
            };
            let modules = match &a.kernel_release {
                Some(dir) => modules_from_list(dir)?,
                None => a.modules.clone(),
            };
            let files = a
                .files
                .iter()
                .map(|f| split_src_dst(f))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let img = build(&Options {
                init: a.init.clone(),
                config: a.config.clone(),
                workload,
                modules,
                files,
                gzip: a.gzip,
            })?;
            write_atomically(&a.out, &img.bytes)?;
            for w in &img.warnings {
                eprintln!("pqcc: warning: {w}");
            }
            let (s256, s384) = (hex::encode(img.sha256()), hex::encode(img.sha384()));
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ok": true,
                        "image": a.out.display().to_string(),
                        "bytes": img.bytes.len(),
                        "sha256": s256,
                        "sha384": s384,
                        "files": img.paths,
                    })
                );
            } else {
                println!("sha256 {s256}");
                println!("sha384 {s384}");
                eprintln!(
                    "wrote {} ({} bytes, {} entries)",
                    a.out.display(),
                    img.bytes.len(),
                    img.paths.len()
                );
            }
            Ok(())
        }
    }
}
