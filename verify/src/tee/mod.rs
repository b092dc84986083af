//! TDX quote and SEV-SNP report verification; launch measurement prediction.
