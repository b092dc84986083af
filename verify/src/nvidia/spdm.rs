//! SPDM 1.1 GET_MEASUREMENTS request and MEASUREMENTS response (DMTF DSP0274 1.1.x,
//! §10.11), as an NVIDIA Hopper GPU produces them: signed (`Param1` bit 0), all
//! blocks (`Param2 = 0xFF`), DMTF measurement specification, NVIDIA opaque-data TLVs.
//!
//! Parsing is strict: every length is checked before it is used, nothing may follow
//! the signature, every opaque TLV type must be one NVIDIA documents, each at most once.

use core::fmt;

/// SPDM version byte for 1.1.
pub const SPDM_VERSION_11: u8 = 0x11;
/// Request code of GET_MEASUREMENTS.
pub const GET_MEASUREMENTS: u8 = 0xE0;
/// Response code of MEASUREMENTS.
pub const MEASUREMENTS: u8 = 0x60;
/// Length of a GET_MEASUREMENTS request with a signature requested (DSP0274 table 43).
pub const REQUEST_LEN: usize = 37;
/// Length of the raw ECDSA P-384 signature (r ‖ s) that ends the response.
pub const SIGNATURE_LEN: usize = 96;
/// Largest response accepted (the 24-bit record length bounds it well below this).
pub const MAX_RESPONSE_LEN: usize = 1 << 20;
/// DSP0274 §10.11: opaque data is at most 1024 bytes.
pub const MAX_OPAQUE_LEN: usize = 1024;

/// Opaque-data field types NVIDIA defines (nv-local-gpu-verifier `OPAQUE_DATA_TYPES`,
/// without 255 = "invalid"). Anything else is rejected.
const KNOWN_OPAQUE_TYPES: &[(u16, &str)] = &[
    (1, "CERT_ISSUER_NAME"),
    (2, "CERT_AUTHORITY_KEY_IDENTIFIER"),
    (3, "DRIVER_VERSION"),
    (4, "GPU_INFO"),
    (5, "SKU"),
    (6, "VBIOS_VERSION"),
    (7, "MANUFACTURER_ID"),
    (8, "TAMPER_DETECTION"),
    (9, "SMC"),
    (10, "VPR"),
    (11, "NVDEC0_STATUS"),
    (12, "MSRSCNT"),
    (13, "CPRINFO"),
    (14, "BOARD_ID"),
    (15, "CHIP_SKU"),
    (16, "CHIP_SKU_MOD"),
    (17, "PROJECT"),
    (18, "PROJECT_SKU"),
    (19, "PROJECT_SKU_MOD"),
    (20, "FWID"),
    (21, "PROTECTED_PCIE_STATUS"),
    (22, "SWITCH_PDI"),
    (23, "FLOORSWEPT_PORTS"),
    (24, "POSITION_ID"),
    (25, "LOCK_SWITCH_STATUS"),
    (32, "GPU_LINK_CONN"),
    (33, "SYS_ENABLE_STATUS"),
    (34, "OPAQUE_DATA_VERSION"),
    (35, "CHIP_INFO"),
    (36, "FEATURE_FLAG"),
];

/// Opaque type of the driver version (NUL-terminated ASCII).
pub const OPAQUE_DRIVER_VERSION: u16 = 3;
/// Opaque type of the VBIOS version (8 little-endian bytes).
pub const OPAQUE_VBIOS_VERSION: u16 = 6;
/// Opaque type of the firmware id (SHA-384 of the GSP firmware).
pub const OPAQUE_FWID: u16 = 20;

/// Name of an opaque-data type, if NVIDIA defines it.
pub fn opaque_type_name(t: u16) -> Option<&'static str> {
    KNOWN_OPAQUE_TYPES
        .iter()
        .find(|(k, _)| *k == t)
        .map(|(_, n)| *n)
}

/// Why a request or response does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpdmError {
    /// The message ends before a field it declares.
    Truncated(&'static str),
    /// A field holds a value this verifier does not accept.
    Invalid(&'static str, u64),
    /// Bytes follow the last field.
    TrailingBytes(usize),
    /// An opaque-data TLV has a type NVIDIA does not define.
    UnknownOpaqueType(u16),
    /// An opaque-data TLV type appears twice.
    DuplicateOpaqueType(u16),
    /// Two measurement blocks carry the same index.
    DuplicateIndex(u8),
}

impl fmt::Display for SpdmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated(what) => write!(f, "truncated at {what}"),
            Self::Invalid(what, v) => write!(f, "invalid {what}: {v:#x}"),
            Self::TrailingBytes(n) => write!(f, "{n} trailing bytes after the signature"),
            Self::UnknownOpaqueType(t) => write!(f, "unknown opaque-data type {t}"),
            Self::DuplicateOpaqueType(t) => write!(f, "opaque-data type {t} appears twice"),
            Self::DuplicateIndex(i) => write!(f, "measurement index {i} appears twice"),
        }
    }
}

impl std::error::Error for SpdmError {}

/// A bounds-checked cursor over a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SpdmError> {
        let end = self.pos.checked_add(n).ok_or(SpdmError::Truncated(what))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(SpdmError::Truncated(what))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, SpdmError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, SpdmError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u24(&mut self, what: &'static str) -> Result<u32, SpdmError> {
        let b = self.take(3, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
}

/// A parsed GET_MEASUREMENTS request (DSP0274 1.1 table 43, signature requested).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementRequest {
    /// Param2: which measurement(s); NVIDIA asks for all (`0xFF`).
    pub operation: u8,
    /// The requester's nonce.
    pub nonce: [u8; 32],
    /// SlotIDParam: the certificate slot whose key signs the response.
    pub slot_id: u8,
}

impl MeasurementRequest {
    /// Parses exactly [`REQUEST_LEN`] bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, SpdmError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("request SPDMVersion")?;
        if version != SPDM_VERSION_11 {
            return Err(SpdmError::Invalid("request SPDM version", version.into()));
        }
        let code = r.u8("request code")?;
        if code != GET_MEASUREMENTS {
            return Err(SpdmError::Invalid("request code", code.into()));
        }
        let param1 = r.u8("request Param1")?;
        if param1 & 0x01 == 0 {
            return Err(SpdmError::Invalid(
                "request Param1 (signature not requested)",
                param1.into(),
            ));
        }
        if param1 & !0x01 != 0 {
            return Err(SpdmError::Invalid(
                "request Param1 reserved bits",
                param1.into(),
            ));
        }
        let operation = r.u8("request Param2")?;
        if operation != 0xFF {
            return Err(SpdmError::Invalid(
                "request Param2 (not all measurements)",
                operation.into(),
            ));
        }
        let mut nonce = [0u8; 32];
        nonce.copy_from_slice(r.take(32, "request nonce")?);
        let slot_id = r.u8("request SlotIDParam")?;
        if slot_id > 7 {
            return Err(SpdmError::Invalid("request SlotIDParam", slot_id.into()));
        }
        if r.remaining() != 0 {
            return Err(SpdmError::TrailingBytes(r.remaining()));
        }
        Ok(Self {
            operation,
            nonce,
            slot_id,
        })
    }
}

/// One measurement block in DMTF format (DSP0274 1.1 tables 45, 46).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementBlock {
    /// Index of the block (1-based on NVIDIA GPUs).
    pub index: u8,
    /// DMTFSpecMeasurementValueType.
    pub value_type: u8,
    /// The measurement value (a SHA-384 digest on Hopper).
    pub value: Vec<u8>,
}

/// One opaque-data TLV of NVIDIA's format: type u16 LE, length u16 LE, value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpaqueField {
    /// The type (see [`opaque_type_name`]).
    pub field_type: u16,
    /// The value bytes.
    pub value: Vec<u8>,
}

/// A parsed MEASUREMENTS response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementResponse {
    /// Param2: slot id of the signing key.
    pub slot_id: u8,
    /// The measurement blocks, in the order they appear.
    pub blocks: Vec<MeasurementBlock>,
    /// The responder's nonce.
    pub responder_nonce: [u8; 32],
    /// The opaque-data fields, in order.
    pub opaque: Vec<OpaqueField>,
    /// The raw signature r ‖ s.
    pub signature: [u8; SIGNATURE_LEN],
}

impl MeasurementResponse {
    /// Parses a complete response, signature included, with nothing after it.
    pub fn parse(bytes: &[u8]) -> Result<Self, SpdmError> {
        if bytes.len() > MAX_RESPONSE_LEN {
            return Err(SpdmError::Invalid("response length", bytes.len() as u64));
        }
        let mut r = Reader::new(bytes);
        let version = r.u8("response SPDMVersion")?;
        if version != SPDM_VERSION_11 {
            return Err(SpdmError::Invalid("response SPDM version", version.into()));
        }
        let code = r.u8("response code")?;
        if code != MEASUREMENTS {
            return Err(SpdmError::Invalid("response code", code.into()));
        }
        // Param1 is reserved unless the request asked for the block count (Param2 = 0).
        let param1 = r.u8("response Param1")?;
        if param1 != 0 {
            return Err(SpdmError::Invalid("response Param1", param1.into()));
        }
        let param2 = r.u8("response Param2")?;
        if param2 > 7 {
            return Err(SpdmError::Invalid("response Param2 slot id", param2.into()));
        }
        let count = r.u8("NumberOfBlocks")?;
        if count == 0 {
            return Err(SpdmError::Invalid("NumberOfBlocks", 0));
        }
        let record_len = r.u24("MeasurementRecordLength")? as usize;
        let record = r.take(record_len, "measurement record")?;
        let blocks = parse_record(record, count)?;
        let mut responder_nonce = [0u8; 32];
        responder_nonce.copy_from_slice(r.take(32, "response nonce")?);
        let opaque_len = usize::from(r.u16("OpaqueLength")?);
        if opaque_len > MAX_OPAQUE_LEN {
            return Err(SpdmError::Invalid("OpaqueLength", opaque_len as u64));
        }
        let opaque = parse_opaque(r.take(opaque_len, "opaque data")?)?;
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(r.take(SIGNATURE_LEN, "signature")?);
        if r.remaining() != 0 {
            return Err(SpdmError::TrailingBytes(r.remaining()));
        }
        Ok(Self {
            slot_id: param2,
            blocks,
            responder_nonce,
            opaque,
            signature,
        })
    }

    /// The value of an opaque field, if present.
    pub fn opaque_field(&self, field_type: u16) -> Option<&[u8]> {
        self.opaque
            .iter()
            .find(|f| f.field_type == field_type)
            .map(|f| f.value.as_slice())
    }

    /// The measurement block with this index.
    pub fn block(&self, index: u8) -> Option<&MeasurementBlock> {
        self.blocks.iter().find(|b| b.index == index)
    }

    /// The driver version string (opaque type 3, one trailing NUL removed).
    pub fn driver_version(&self) -> Result<String, String> {
        let raw = self
            .opaque_field(OPAQUE_DRIVER_VERSION)
            .ok_or("no DRIVER_VERSION opaque field")?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        if raw.is_empty() || !raw.iter().all(|b| b.is_ascii_graphic()) {
            return Err("DRIVER_VERSION is empty or not printable ASCII".into());
        }
        Ok(String::from_utf8_lossy(raw).into_owned())
    }

    /// The VBIOS version as NVIDIA prints it, e.g. `96.00.5e.00.01` (opaque type 6:
    /// bytes 3, 2, 1, 0, 4 in hex, dotted, lower case).
    pub fn vbios_version(&self) -> Result<String, String> {
        let raw = self
            .opaque_field(OPAQUE_VBIOS_VERSION)
            .ok_or("no VBIOS_VERSION opaque field")?;
        let b: [u8; 8] = raw
            .try_into()
            .map_err(|_| format!("VBIOS_VERSION is {} bytes, expected 8", raw.len()))?;
        Ok(format!(
            "{:02x}.{:02x}.{:02x}.{:02x}.{:02x}",
            b[3], b[2], b[1], b[0], b[4]
        ))
    }
}

fn parse_record(record: &[u8], count: u8) -> Result<Vec<MeasurementBlock>, SpdmError> {
    let mut r = Reader::new(record);
    let mut blocks: Vec<MeasurementBlock> = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let index = r.u8("block Index")?;
        if index == 0 || index == 0xFF {
            return Err(SpdmError::Invalid("block Index", index.into()));
        }
        if blocks.iter().any(|b| b.index == index) {
            return Err(SpdmError::DuplicateIndex(index));
        }
        let spec = r.u8("block MeasurementSpecification")?;
        if spec != 0x01 {
            return Err(SpdmError::Invalid(
                "MeasurementSpecification (not DMTF)",
                spec.into(),
            ));
        }
        let size = usize::from(r.u16("block MeasurementSize")?);
        let mut m = Reader::new(r.take(size, "block Measurement")?);
        let value_type = m.u8("DMTFSpecMeasurementValueType")?;
        let value_size = usize::from(m.u16("DMTFSpecMeasurementValueSize")?);
        let value = m.take(value_size, "DMTFSpecMeasurementValue")?.to_vec();
        if m.remaining() != 0 {
            return Err(SpdmError::Invalid(
                "MeasurementSize vs DMTF value size",
                size as u64,
            ));
        }
        blocks.push(MeasurementBlock {
            index,
            value_type,
            value,
        });
    }
    if r.remaining() != 0 {
        return Err(SpdmError::Invalid(
            "MeasurementRecordLength vs NumberOfBlocks",
            record.len() as u64,
        ));
    }
    Ok(blocks)
}

fn parse_opaque(data: &[u8]) -> Result<Vec<OpaqueField>, SpdmError> {
    let mut r = Reader::new(data);
    let mut out: Vec<OpaqueField> = Vec::new();
    while r.remaining() > 0 {
        let field_type = r.u16("opaque type")?;
        let len = usize::from(r.u16("opaque length")?);
        let value = r.take(len, "opaque value")?.to_vec();
        if opaque_type_name(field_type).is_none() {
            return Err(SpdmError::UnknownOpaqueType(field_type));
        }
        if out.iter().any(|f| f.field_type == field_type) {
            return Err(SpdmError::DuplicateOpaqueType(field_type));
        }
        out.push(OpaqueField { field_type, value });
    }
    Ok(out)
}
