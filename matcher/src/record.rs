//! Finger minutiae records: ISO/IEC 19794-2:2005 and ANSI INCITS 378-2004.
//!
//! Both formats are big-endian and start with `"FMR\0"` and a version (`" 20\0"`).
//!
//! ISO/IEC 19794-2:2005 record header (24 bytes):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | `"FMR\0"` |
//! | 4 | 4 | `" 20\0"` (one writer puts `"020\0"`) |
//! | 8 | 4 | record length in bytes |
//! | 12 | 2 | capture equipment: compliance (bits 15-12), id (bits 11-0) |
//! | 14 | 2 + 2 | image width, height in pixels |
//! | 18 | 2 + 2 | x, y resolution in pixels per cm (197 = 500 dpi) |
//! | 22 | 1 | number of finger views |
//! | 23 | 1 | reserved |
//!
//! ANSI INCITS 378-2004 header (26 bytes, or 30 with the long length form): the length at offset 8
//! is a u16, or 0 followed by a u32 when the record is longer than 65,535 bytes; then a 4-byte
//! CBEFF product id (owner, type), and the same fields as ISO from the capture equipment on.
//!
//! Each finger view: finger position (1), view number in the high nibble and impression type in the
//! low nibble (1), finger quality (1), minutiae count N (1), N x 6 bytes of minutiae, a u16 length
//! of extended data, and that many bytes of extension blocks. A minutia: u16 with the type in bits
//! 15-14 (01 ridge ending, 10 bifurcation, 00 other, 11 reserved) and x in bits 13-0; u16 with y
//! in bits 13-0; the angle counter-clockwise from the x axis (ISO: units of 360/256 degrees; ANSI:
//! units of 2 degrees, 0-179); the quality (0-100, 0 meaning "not reported").
//!
//! # Pitfalls handled
//!
//! - **ISO or ANSI**: told apart by the u16 at offset 8. ISO's u32 length puts zero there (for
//!   records under 64 KiB); ANSI's u16 length is at least 26. A zero followed by a u16 under 24
//!   is ANSI's long length form.
//! - **Zero padding after the record**: the declared length frames the record; bytes after it are
//!   ignored.
//! - **`"020\0"` as the version**: accepted as `" 20\0"`.
//! - **Extension block lengths** that do or do not count their own 4-byte header: the extended
//!   data is framed by the view's own length and kept opaque;
//!   [`FingerView::extension_blocks`] splits it under either convention.
//! - **All qualities written as 0**: quality 0 is "not reported" ([`None`]), and the matcher never
//!   uses minutia quality.
//!
//! Anything else that does not add up (a view running past the declared length, bytes left over
//! inside it, the reserved minutia type, an ANSI angle over 179) is refused with a
//! [`RecordError`] that says which byte is wrong.

use thiserror::Error;

/// Which standard a record follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// ISO/IEC 19794-2:2005: 24-byte header, angles in units of 360/256 degrees.
    Iso2005,
    /// ANSI INCITS 378-2004: 26- or 30-byte header with a product id, angles in 2-degree units.
    Ansi2004,
}

/// The kind of ridge feature a minutia marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinutiaKind {
    /// Type bits `01`: a ridge stops.
    RidgeEnding,
    /// Type bits `10`: a ridge splits in two.
    Bifurcation,
    /// Type bits `00`: the extractor did not say.
    Other,
}

/// One minutia as the record states it, before any normalisation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordMinutia {
    /// Ridge ending, bifurcation or unspecified.
    pub kind: MinutiaKind,
    /// Column in pixels, from the left edge of the image.
    pub x: u16,
    /// Row in pixels, from the top edge of the image (rows grow downwards).
    pub y: u16,
    /// Direction in degrees, counter-clockwise from the x axis as the image is viewed, in
    /// `[0, 360)`.
    pub angle_degrees: f32,
    /// Minutia quality 1-100; `None` when the record says 0 ("not reported").
    pub quality: Option<u8>,
}

/// One impression of one finger inside a record.
#[derive(Debug, Clone, PartialEq)]
pub struct FingerView {
    /// Finger position code (0 unknown, 1 right thumb ... 10 left little finger).
    pub position: u8,
    /// View number: several views of the same finger are numbered from 0.
    pub view_number: u8,
    /// Impression type (0 live-scan plain, 1 live-scan rolled, ...).
    pub impression_type: u8,
    /// Finger quality 0-100 as written (many SDKs write 0).
    pub quality: u8,
    /// The minutiae in record order.
    pub minutiae: Vec<RecordMinutia>,
    /// The view's extended data, opaque; see [`FingerView::extension_blocks`].
    pub extended_data: Vec<u8>,
}

/// A parsed finger minutiae record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// ISO or ANSI, as detected.
    pub format: Format,
    /// ANSI's CBEFF product id (owner in the high half, type in the low half); `None` for ISO.
    pub product_id: Option<u32>,
    /// Capture equipment: compliance in bits 15-12, equipment id in bits 11-0.
    pub capture_equipment: u16,
    /// Image width in pixels.
    pub width: u16,
    /// Image height in pixels.
    pub height: u16,
    /// Horizontal resolution in pixels per centimetre (197 = 500 dpi; 0 if not stated).
    pub x_resolution: u16,
    /// Vertical resolution in pixels per centimetre.
    pub y_resolution: u16,
    /// The finger views, in record order.
    pub views: Vec<FingerView>,
}

/// One block of a view's extended data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionBlock<'a> {
    /// Type code (1 ridge counts, 2 core and delta, others vendor-defined).
    pub type_code: u16,
    /// The block's body, without its 4-byte header.
    pub data: &'a [u8],
}

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    /// Fewer bytes than the fixed header needs.
    #[error(
        "record is {got} bytes, shorter than the {needed}-byte header: is it a minutiae record at all?"
    )]
    TooShort {
        /// Bytes the header needs.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// The first four bytes are not `"FMR\0"`.
    #[error(
        "not a finger minutiae record: starts with {0:02x?}, expected \"FMR\\0\" (46 4d 52 00)"
    )]
    BadMagic([u8; 4]),
    /// A version other than 2.0.
    #[error(
        "unsupported record version {0:02x?}: only ISO/IEC 19794-2:2005 and ANSI INCITS 378-2004 (\" 20\\0\") are read"
    )]
    UnsupportedVersion([u8; 4]),
    /// The declared length is shorter than the header it must contain.
    #[error("declared record length {declared} is shorter than the {header}-byte header")]
    LengthTooSmall {
        /// Declared length.
        declared: u64,
        /// Header size of the detected format.
        header: usize,
    },
    /// The declared length runs past the bytes given.
    #[error("record declares {declared} bytes but only {available} were given: it was cut short")]
    Truncated {
        /// Declared length.
        declared: u64,
        /// Bytes given.
        available: usize,
    },
    /// A finger view runs past the declared record length.
    #[error(
        "finger view {view} needs {needed} bytes at offset {offset}, past the declared length {declared}"
    )]
    ViewOverrun {
        /// Index of the view (0-based).
        view: usize,
        /// Offset of the field that does not fit.
        offset: usize,
        /// Bytes that field needs.
        needed: usize,
        /// Declared record length.
        declared: usize,
    },
    /// Bytes left inside the declared length after the last view.
    #[error(
        "{count} bytes left over after the last finger view at offset {offset}: the view count or a length is wrong"
    )]
    LeftoverBytes {
        /// Where the leftover bytes start.
        offset: usize,
        /// How many there are.
        count: usize,
    },
    /// Minutia type bits `11`, which the standards reserve.
    #[error("finger view {view}, minutia {index}: reserved type bits 11")]
    ReservedMinutiaType {
        /// Index of the view.
        view: usize,
        /// Index of the minutia in the view.
        index: usize,
    },
    /// An ANSI angle over 179 (2-degree units).
    #[error(
        "finger view {view}, minutia {index}: ANSI angle {value} is over 179 (units of 2 degrees)"
    )]
    AngleOutOfRange {
        /// Index of the view.
        view: usize,
        /// Index of the minutia in the view.
        index: usize,
        /// The angle byte.
        value: u8,
    },
    /// Extended data that splits into blocks under neither length convention.
    #[error(
        "extended data of {len} bytes does not split into blocks (with or without counting block headers)"
    )]
    BadExtensionBlocks {
        /// Length of the extended data.
        len: usize,
    },
}

const MAGIC: &[u8; 4] = b"FMR\0";
const VERSIONS: [&[u8; 4]; 2] = [b" 20\0", b"020\0"];
const ISO_HEADER: usize = 24;
const ANSI_HEADER: usize = 26;
const ANSI_LONG_HEADER: usize = 30;
const VIEW_HEADER: usize = 4;
const MINUTIA_BYTES: usize = 6;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Framing decided from the first bytes: format, declared length, header size.
fn detect(bytes: &[u8]) -> Result<(Format, u64, usize), RecordError> {
    if bytes.len() < 12 {
        return Err(RecordError::TooShort {
            needed: ISO_HEADER,
            got: bytes.len(),
        });
    }
    let magic: [u8; 4] = bytes[0..4].try_into().expect("4 bytes");
    if &magic != MAGIC {
        return Err(RecordError::BadMagic(magic));
    }
    let version: [u8; 4] = bytes[4..8].try_into().expect("4 bytes");
    if !VERSIONS.contains(&&version) {
        return Err(RecordError::UnsupportedVersion(version));
    }
    let high = be16(bytes, 8);
    let low = be16(bytes, 10);
    Ok(if high as usize >= ANSI_HEADER {
        (Format::Ansi2004, u64::from(high), ANSI_HEADER)
    } else if high == 0 && (low as usize) < ISO_HEADER {
        // ANSI's long form: 0x0000 then a u32 length. An ISO record would need at least 24 here.
        if bytes.len() < 14 {
            return Err(RecordError::TooShort {
                needed: ANSI_LONG_HEADER,
                got: bytes.len(),
            });
        }
        (
            Format::Ansi2004,
            u64::from(be32(bytes, 10)),
            ANSI_LONG_HEADER,
        )
    } else {
        (Format::Iso2005, u64::from(be32(bytes, 8)), ISO_HEADER)
    })
}

/// Parses an ISO/IEC 19794-2:2005 or ANSI INCITS 378-2004 record, telling them apart by the u16
/// at offset 8. Bytes after the declared length (zero padding) are ignored.
pub fn parse(bytes: &[u8]) -> Result<Record, RecordError> {
    let (format, declared, header) = detect(bytes)?;
    if declared < header as u64 {
        return Err(RecordError::LengthTooSmall { declared, header });
    }
    if declared > bytes.len() as u64 {
        return Err(RecordError::Truncated {
            declared,
            available: bytes.len(),
        });
    }
    let bytes = &bytes[..declared as usize];
    let end = bytes.len();
    let (product_id, at) = match (format, header) {
        (Format::Iso2005, _) => (None, 12),
        (Format::Ansi2004, ANSI_HEADER) => (Some(be32(bytes, 10)), 14),
        (Format::Ansi2004, _) => (Some(be32(bytes, 14)), 18),
    };
    let view_count = bytes[at + 10] as usize;
    let mut record = Record {
        format,
        product_id,
        capture_equipment: be16(bytes, at),
        width: be16(bytes, at + 2),
        height: be16(bytes, at + 4),
        x_resolution: be16(bytes, at + 6),
        y_resolution: be16(bytes, at + 8),
        views: Vec::with_capacity(view_count),
    };
    let mut at = header;
    let need = |view: usize, offset: usize, needed: usize| {
        if offset + needed > end {
            Err(RecordError::ViewOverrun {
                view,
                offset,
                needed,
                declared: end,
            })
        } else {
            Ok(())
        }
    };
    for view in 0..view_count {
        need(view, at, VIEW_HEADER)?;
        let count = bytes[at + 3] as usize;
        let mut finger = FingerView {
            position: bytes[at],
            view_number: bytes[at + 1] >> 4,
            impression_type: bytes[at + 1] & 0x0f,
            quality: bytes[at + 2],
            minutiae: Vec::with_capacity(count),
            extended_data: Vec::new(),
        };
        at += VIEW_HEADER;
        need(view, at, count * MINUTIA_BYTES)?;
        for index in 0..count {
            let m = &bytes[at..at + MINUTIA_BYTES];
            let first = be16(m, 0);
            let kind = match first >> 14 {
                0b01 => MinutiaKind::RidgeEnding,
                0b10 => MinutiaKind::Bifurcation,
                0b00 => MinutiaKind::Other,
                _ => return Err(RecordError::ReservedMinutiaType { view, index }),
            };
            let angle_degrees = match format {
                Format::Iso2005 => f32::from(m[4]) * (360.0 / 256.0),
                Format::Ansi2004 if m[4] < 180 => f32::from(m[4]) * 2.0,
                Format::Ansi2004 => {
                    return Err(RecordError::AngleOutOfRange {
                        view,
                        index,
                        value: m[4],
                    });
                }
            };
            finger.minutiae.push(RecordMinutia {
                kind,
                x: first & 0x3fff,
                y: be16(m, 2) & 0x3fff,
                angle_degrees,
                quality: (m[5] != 0).then_some(m[5]),
            });
            at += MINUTIA_BYTES;
        }
        need(view, at, 2)?;
        let extended = be16(bytes, at) as usize;
        at += 2;
        need(view, at, extended)?;
        finger.extended_data = bytes[at..at + extended].to_vec();
        at += extended;
        record.views.push(finger);
    }
    if at != end {
        return Err(RecordError::LeftoverBytes {
            offset: at,
            count: end - at,
        });
    }
    Ok(record)
}

impl FingerView {
    /// Splits the extended data into blocks (type u16, length u16, body). Writers disagree on
    /// whether the length counts the 4-byte block header: the convention that tiles the data
    /// exactly is used, the standard's (header counted) first.
    pub fn extension_blocks(&self) -> Result<Vec<ExtensionBlock<'_>>, RecordError> {
        split_blocks(&self.extended_data, true)
            .or_else(|| split_blocks(&self.extended_data, false))
            .ok_or(RecordError::BadExtensionBlocks {
                len: self.extended_data.len(),
            })
    }
}

fn split_blocks(data: &[u8], counts_header: bool) -> Option<Vec<ExtensionBlock<'_>>> {
    let mut blocks = Vec::new();
    let mut at = 0;
    while at < data.len() {
        if at + 4 > data.len() {
            return None;
        }
        let len = be16(data, at + 2) as usize;
        let body = if counts_header {
            len.checked_sub(4)?
        } else {
            len
        };
        let start = at + 4;
        if start + body > data.len() {
            return None;
        }
        blocks.push(ExtensionBlock {
            type_code: be16(data, at),
            data: &data[start..start + body],
        });
        at = start + body;
    }
    Some(blocks)
}

impl Record {
    /// Writes the record in its [`Format`] (ISO angles rounded to 360/256-degree units, ANSI to
    /// 2-degree units). ANSI records over 65,535 bytes use the long length form. What the format
    /// cannot hold is cut: views past 255, minutiae past 255 per view, coordinates to 14 bits,
    /// extended data past 65,535 bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let body: usize = self
            .views
            .iter()
            .take(255)
            .map(|v| {
                VIEW_HEADER
                    + v.minutiae.len().min(255) * MINUTIA_BYTES
                    + 2
                    + v.extended_data.len().min(0xffff)
            })
            .sum();
        let mut out = Vec::with_capacity(ANSI_LONG_HEADER + body);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(VERSIONS[0]);
        match self.format {
            Format::Iso2005 => {
                out.extend_from_slice(&((ISO_HEADER + body) as u32).to_be_bytes());
            }
            Format::Ansi2004 => {
                let short = ANSI_HEADER + body;
                if short <= usize::from(u16::MAX) {
                    out.extend_from_slice(&(short as u16).to_be_bytes());
                } else {
                    out.extend_from_slice(&[0, 0]);
                    out.extend_from_slice(&((ANSI_LONG_HEADER + body) as u32).to_be_bytes());
                }
                out.extend_from_slice(&self.product_id.unwrap_or(0).to_be_bytes());
            }
        }
        for field in [
            self.capture_equipment,
            self.width,
            self.height,
            self.x_resolution,
            self.y_resolution,
        ] {
            out.extend_from_slice(&field.to_be_bytes());
        }
        out.push(self.views.len().min(255) as u8);
        out.push(0);
        for view in self.views.iter().take(255) {
            let count = view.minutiae.len().min(255);
            out.extend_from_slice(&[
                view.position,
                (view.view_number << 4) | (view.impression_type & 0x0f),
                view.quality,
                count as u8,
            ]);
            for m in &view.minutiae[..count] {
                let kind: u16 = match m.kind {
                    MinutiaKind::RidgeEnding => 0b01,
                    MinutiaKind::Bifurcation => 0b10,
                    MinutiaKind::Other => 0b00,
                };
                out.extend_from_slice(&((kind << 14) | (m.x & 0x3fff)).to_be_bytes());
                out.extend_from_slice(&(m.y & 0x3fff).to_be_bytes());
                let angle = m.angle_degrees.rem_euclid(360.0);
                out.push(match self.format {
                    Format::Iso2005 => ((angle * 256.0 / 360.0).round() as u32 % 256) as u8,
                    Format::Ansi2004 => ((angle / 2.0).round() as u32 % 180) as u8,
                });
                out.push(m.quality.unwrap_or(0));
            }
            let extended = &view.extended_data[..view.extended_data.len().min(0xffff)];
            out.extend_from_slice(&(extended.len() as u16).to_be_bytes());
            out.extend_from_slice(extended);
        }
        out
    }
}
