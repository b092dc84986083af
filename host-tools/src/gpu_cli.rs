//! `pqcc gpu verify` and `pqcc gpu fetch-collateral` (`docs/gpu-attestation.md`).
//!
//! `verify` is offline: evidence, RIMs and revocation data come from files, time
//! from `--at`. `fetch-collateral` is the only part that uses the network: it
//! downloads OCSP responses, CRLs and (optionally) RIMs into a bundle directory
//! that `verify --collateral DIR` reads later.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64ct::{Base64, Encoding};
use clap::{Args, Subcommand};
use pqcc_verify::nvidia::{
    self, Collateral, GpuEvidence, GpuPolicy, Outcome, RevocationPolicy, Rim,
    revocation::ocsp_request, spdm::MeasurementResponse, x509::Cert,
};
use serde_json::json;

/// `pqcc gpu …`
#[derive(Debug, Subcommand)]
pub enum GpuCommand {
    /// Verify NVIDIA GPU evidence (SPDM measurements + device chain) against driver
    /// and VBIOS RIMs, offline, at a given time. Exit 0 when every check passes, 1
    /// when one fails, 2 on usage or I/O errors.
    Verify(VerifyArgs),
    /// Download OCSP responses, CRLs and RIMs into a bundle for `verify --collateral`.
    FetchCollateral(FetchArgs),
}

/// Arguments of `pqcc gpu verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The evidence: a `PQGE` blob (certificates included), or NVML's attestation
    /// report (SPDM request ‖ response) as binary or hex text.
    #[arg(long, value_name = "FILE")]
    pub evidence: PathBuf,
    /// The device certificate chain (PEM, leaf first). Required unless the evidence
    /// is a blob.
    #[arg(long, value_name = "FILE")]
    pub cert_chain: Option<PathBuf>,
    /// RIM files (driver and VBIOS, any order).
    #[arg(long = "rim", value_name = "FILE", num_args = 1.., required = true)]
    pub rims: Vec<PathBuf>,
    /// The nonce the request must carry (64 hex digits).
    #[arg(long, value_name = "HEX")]
    pub nonce: String,
    /// Time to judge certificates and revocation data at (Unix seconds).
    #[arg(long, value_name = "UNIX")]
    pub at: u64,
    /// Offline revocation bundle (from `pqcc gpu fetch-collateral`).
    #[arg(long, value_name = "DIR")]
    pub collateral: Option<PathBuf>,
    /// Oldest acceptable CRL / OCSP status, in seconds before --at.
    #[arg(long, value_name = "SECS", default_value_t = 7 * 24 * 3600)]
    pub max_age: u64,
    /// Do not check revocation (the check is reported as skipped). For sample data
    /// whose revocation status can no longer be fetched.
    #[arg(long, conflicts_with = "collateral")]
    pub insecure_no_revocation: bool,
    /// Fail when the report carries no FWID opaque field.
    #[arg(long)]
    pub require_fwid: bool,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pqcc gpu fetch-collateral`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Bundle directory to write (`crl/`, `ocsp/`, `rim/`); created if missing.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Device certificate chain (PEM, leaf first) whose status to fetch.
    #[arg(long, value_name = "FILE")]
    pub cert_chain: Option<PathBuf>,
    /// Evidence (blob or report): its chain if a blob, and its versions for --fetch-rims.
    #[arg(long, value_name = "FILE")]
    pub evidence: Option<PathBuf>,
    /// RIM files whose signing chain status to fetch.
    #[arg(long = "rim", value_name = "FILE")]
    pub rims: Vec<PathBuf>,
    /// Also download the driver and VBIOS RIMs named by the evidence's versions.
    #[arg(long, requires = "evidence")]
    pub fetch_rims: bool,
    /// OCSP responder.
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://ocsp.ndis.nvidia.com/"
    )]
    pub ocsp_url: String,
    /// RIM service base URL (the RIM id is appended).
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://rim.attestation.nvidia.com/v1/rim/"
    )]
    pub rim_service: String,
    /// Also download the CRLs named in the certificates' CRL distribution points.
    #[arg(long)]
    pub crls: bool,
    /// Per-request timeout in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    pub timeout: u64,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `pqcc gpu` command; returns the exit status (0, 1 or 2).
pub fn run(cmd: GpuCommand) -> i32 {
    let r = match cmd {
        GpuCommand::Verify(a) => verify(&a),
        GpuCommand::FetchCollateral(a) => fetch(&a).map(|()| true),
    };
    match r {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    }
}

/// Reads evidence from a blob, a binary report or a hex report (+ PEM chain).
pub fn load_evidence(evidence: &Path, chain: Option<&Path>) -> anyhow::Result<GpuEvidence> {
    let bytes = std::fs::read(evidence).with_context(|| format!("read {}", evidence.display()))?;
    if bytes.starts_with(nvidia::evidence::MAGIC) {
        if chain.is_some() {
            bail!("--cert-chain given with an evidence blob that carries its own chain");
        }
        return GpuEvidence::from_blob(&bytes).with_context(|| format!("{}", evidence.display()));
    }
    let report = if bytes.starts_with(&[0x11, 0xE0]) {
        bytes
    } else {
        GpuEvidence::report_from_hex(&bytes).with_context(|| format!("{}", evidence.display()))?
    };
    let chain = chain.context("--cert-chain is required unless the evidence is a PQGE blob")?;
    let pem = std::fs::read(chain).with_context(|| format!("read {}", chain.display()))?;
    GpuEvidence::from_report_and_pem(&report, &pem).with_context(|| format!("{}", chain.display()))
}

fn parse_nonce(hex_str: &str) -> anyhow::Result<[u8; 32]> {
    let v = hex::decode(hex_str.trim()).context("--nonce is not hex")?;
    v.try_into()
        .map_err(|v: Vec<u8>| anyhow::anyhow!("--nonce is {} bytes, expected 32", v.len()))
}

fn verify(a: &VerifyArgs) -> anyhow::Result<bool> {
    let nonce = parse_nonce(&a.nonce)?;
    let evidence = load_evidence(&a.evidence, a.cert_chain.as_deref())?;
    let mut rims = Vec::new();
    for p in &a.rims {
        rims.push(Rim {
            source: p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            bytes: std::fs::read(p).with_context(|| format!("read {}", p.display()))?,
        });
    }
    let collateral = match &a.collateral {
        Some(d) => Some(Collateral::load_dir(d).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let policy = GpuPolicy {
        revocation: if a.insecure_no_revocation {
            RevocationPolicy::InsecureSkip
        } else {
            RevocationPolicy::Require {
                max_age_secs: a.max_age,
            }
        },
        require_report_fwid: a.require_fwid,
    };
    let report = nvidia::verify(&evidence, &rims, &policy, &nonce, a.at, collateral.as_ref());
    let ok = report.all_passed();
    if a.json {
        let checks: Vec<_> = report
            .checks
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "outcome": match c.outcome {
                        Outcome::Pass => "pass",
                        Outcome::Fail => "fail",
                        Outcome::Skipped => "skipped",
                    },
                    "detail": c.detail,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "ok": ok,
                "verified": ok,
                "at": a.at,
                "driver_version": report.driver_version,
                "vbios_version": report.vbios_version,
                "checks": checks,
            })
        );
    } else {
        print!("{report}");
        println!(
            "GPU evidence {} at {}",
            if ok { "VERIFIED" } else { "NOT VERIFIED" },
            a.at
        );
    }
    Ok(ok)
}

fn agent(timeout: u64) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(timeout))
        .build()
}

const MAX_DOWNLOAD: u64 = 16 << 20;

fn read_body(resp: ureq::Response) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut body = Vec::new();
    resp.into_reader()
        .take(MAX_DOWNLOAD + 1)
        .read_to_end(&mut body)?;
    if body.len() as u64 > MAX_DOWNLOAD {
        bail!("response larger than {MAX_DOWNLOAD} bytes");
    }
    Ok(body)
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("part");
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}

fn fetch(a: &FetchArgs) -> anyhow::Result<()> {
    let agent = agent(a.timeout);
    for sub in ["crl", "ocsp", "rim"] {
        std::fs::create_dir_all(a.out.join(sub))
            .with_context(|| format!("create {}", a.out.join(sub).display()))?;
    }
    let mut chains: Vec<(String, Vec<Cert>, usize)> = Vec::new();
    let mut evidence = None;
    if let Some(e) = &a.evidence {
        let bytes = std::fs::read(e).with_context(|| format!("read {}", e.display()))?;
        if bytes.starts_with(nvidia::evidence::MAGIC) {
            evidence = Some(GpuEvidence::from_blob(&bytes)?);
        } else {
            let report = if bytes.starts_with(&[0x11, 0xE0]) {
                bytes
            } else {
                GpuEvidence::report_from_hex(&bytes)?
            };
            if report.len() <= nvidia::spdm::REQUEST_LEN {
                bail!("{}: report too short", e.display());
            }
            evidence = Some(GpuEvidence {
                request: report[..nvidia::spdm::REQUEST_LEN].to_vec(),
                response: report[nvidia::spdm::REQUEST_LEN..].to_vec(),
                certs: Vec::new(),
            });
        }
    }
    let mut device_ders = evidence
        .as_ref()
        .map(|e| e.certs.clone())
        .unwrap_or_default();
    if let Some(p) = &a.cert_chain {
        let pem = std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
        device_ders = nvidia::x509::pem_chain_to_der(&pem).map_err(anyhow::Error::msg)?;
    }
    if !device_ders.is_empty() {
        let certs = device_ders
            .iter()
            .map(|d| Cert::from_der(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::msg)?;
        // Like the verifier: the leaf (an alias key made at boot) is not looked up.
        chains.push(("device".into(), certs, 1));
    }
    let mut rim_files: Vec<(String, Vec<u8>)> = Vec::new();
    for p in &a.rims {
        rim_files.push((
            p.display().to_string(),
            std::fs::read(p).with_context(|| format!("read {}", p.display()))?,
        ));
    }
    let mut fetched = Vec::new();
    let mut failures = Vec::new();

    if a.fetch_rims {
        let ev = evidence.as_ref().context("--fetch-rims needs --evidence")?;
        let resp = MeasurementResponse::parse(&ev.response)
            .map_err(|e| anyhow::anyhow!("evidence response: {e}"))?;
        let ids = rim_ids(&resp).map_err(anyhow::Error::msg)?;
        for id in ids {
            let url = format!("{}{id}", a.rim_service);
            match fetch_rim(&agent, &url) {
                Ok(xml) => {
                    let path = a.out.join("rim").join(format!("{id}.swidtag"));
                    write_file(&path, &xml)?;
                    fetched.push(json!({"kind": "rim", "id": id, "file": path}));
                    rim_files.push((id, xml));
                }
                Err(e) => failures.push(format!("RIM {id} from {url}: {e:#}")),
            }
        }
    }
    for (name, xml) in &rim_files {
        match rim_embedded_chain(xml) {
            Ok(certs) => chains.push((name.clone(), certs, 0)),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    if chains.is_empty() {
        bail!("nothing to fetch: give --cert-chain, --evidence and/or --rim");
    }
    let mut seen = Vec::new();
    for (label, certs, first) in &chains {
        for i in *first..certs.len().saturating_sub(1) {
            let (cert, issuer) = (&certs[i], &certs[i + 1]);
            if seen.contains(&cert.der) {
                continue;
            }
            seen.push(cert.der.clone());
            let req = ocsp_request(cert, issuer).map_err(anyhow::Error::msg)?;
            let r = agent
                .post(&a.ocsp_url)
                .set("Content-Type", "application/ocsp-request")
                .send_bytes(&req)
                .map_err(anyhow::Error::from)
                .and_then(read_body)
                .and_then(|body| {
                    nvidia::revocation::ocsp_response_status(&body).map_err(anyhow::Error::msg)?;
                    Ok(body)
                });
            match r {
                Ok(body) => {
                    let fp = hex::encode(&sha384(&cert.der)[..16]);
                    let path = a.out.join("ocsp").join(format!("{fp}.der"));
                    write_file(&path, &body)?;
                    fetched.push(json!({"kind": "ocsp", "chain": label, "subject": cert.name(), "file": path}));
                }
                Err(e) => failures.push(format!("OCSP for {} ({label}): {e:#}", cert.name())),
            }
            if a.crls {
                for url in cert.crl_distribution_uris() {
                    let r = agent
                        .get(&url)
                        .call()
                        .map_err(anyhow::Error::from)
                        .and_then(read_body)
                        .and_then(|body| {
                            nvidia::revocation::check_crl_parses(&body)
                                .map_err(anyhow::Error::msg)?;
                            Ok(body)
                        });
                    match r {
                        Ok(body) => {
                            let fp = hex::encode(&sha384(url.as_bytes())[..16]);
                            let path = a.out.join("crl").join(format!("{fp}.crl"));
                            write_file(&path, &body)?;
                            fetched.push(json!({"kind": "crl", "url": url, "file": path}));
                        }
                        Err(e) => failures.push(format!("CRL {url}: {e:#}")),
                    }
                }
            }
        }
    }
    if a.json {
        println!(
            "{}",
            json!({
                "ok": failures.is_empty(),
                "out": a.out,
                "fetched": fetched,
                "failures": failures,
            })
        );
    } else {
        for f in &fetched {
            println!("fetched {}", f);
        }
        for f in &failures {
            println!("FAILED  {f}");
        }
    }
    if !failures.is_empty() {
        bail!("{} download(s) failed", failures.len());
    }
    Ok(())
}

fn sha384(b: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha384::digest(b).to_vec()
}

/// RIM service ids for the evidence's driver and VBIOS (as NVIDIA's verifier forms
/// them): `NV_GPU_DRIVER_GH100_<driver>` and
/// `NV_GPU_VBIOS_<PROJECT>_<PROJECT_SKU>_<CHIP_SKU>_<VBIOS without dots>`.
pub fn rim_ids(resp: &MeasurementResponse) -> Result<Vec<String>, String> {
    let field = |t: u16, name: &str| -> Result<String, String> {
        let raw = resp
            .opaque_field(t)
            .ok_or_else(|| format!("no {name} opaque field"))?;
        let s: String = raw
            .iter()
            .take_while(|b| **b != 0)
            .map(|b| char::from(*b))
            .collect();
        let s = s.trim().to_ascii_uppercase();
        if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
            return Err(format!("{name} opaque field is not a plain identifier"));
        }
        Ok(s)
    };
    let driver = resp.driver_version()?;
    if !driver
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.')
    {
        return Err("driver version is not a plain identifier".into());
    }
    let vbios = resp.vbios_version()?.replace('.', "").to_ascii_uppercase();
    Ok(vec![
        format!("NV_GPU_DRIVER_GH100_{driver}"),
        format!(
            "NV_GPU_VBIOS_{}_{}_{}_{vbios}",
            field(17, "PROJECT")?,
            field(18, "PROJECT_SKU")?,
            field(15, "CHIP_SKU")?
        ),
    ])
}

fn fetch_rim(agent: &ureq::Agent, url: &str) -> anyhow::Result<Vec<u8>> {
    let body = read_body(agent.get(url).call()?)?;
    let v: serde_json::Value =
        serde_json::from_slice(&body).context("RIM service answer is not JSON")?;
    let b64 = v["rim"]
        .as_str()
        .context("RIM service answer has no \"rim\" string")?;
    let xml = Base64::decode_vec(b64).map_err(|_| anyhow::anyhow!("\"rim\" is not base64"))?;
    nvidia::xml::parse(&xml).map_err(|e| anyhow::anyhow!("RIM is not acceptable XML: {e}"))?;
    Ok(xml)
}

/// The certificates embedded in a RIM's signature (not verified here: only used to
/// know whose status to fetch).
fn rim_embedded_chain(xml: &[u8]) -> Result<Vec<Cert>, String> {
    nvidia::rim::embedded_certificates(xml)
}
