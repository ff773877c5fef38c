//! EF01 instructions, confirmation codes and reply payloads: pure values.

/// An instruction to the module (the payload of a command packet).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // field names follow the datasheet; each variant says what it does
pub enum Instruction {
    /// 0x01: capture a finger image into the image buffer.
    GenImg,
    /// 0x02: extract features from the image into character buffer 1 or 2.
    Img2Tz { buffer: u8 },
    /// 0x03: compare character buffers 1 and 2.
    Match,
    /// 0x04: search the library for the character buffer.
    Search { buffer: u8, start: u16, count: u16 },
    /// 0x05: merge buffers 1 and 2 into a template.
    RegModel,
    /// 0x06: store a buffer into a library slot.
    Store { buffer: u8, page: u16 },
    /// 0x07: load a library slot into a buffer.
    LoadChar { buffer: u8, page: u16 },
    /// 0x08: upload a buffer to the host (data packets follow the ack).
    UpChar { buffer: u8 },
    /// 0x09: download a buffer from the host (the host sends data packets after the ack).
    DownChar { buffer: u8 },
    /// 0x0C: delete `count` slots from `page`.
    DeleteChar { page: u16, count: u16 },
    /// 0x0D: erase the whole library.
    Empty,
    /// 0x0E: set a system parameter.
    SetSysPara { parameter: u8, value: u8 },
    /// 0x0F: read the 16 bytes of system parameters.
    ReadSysPara,
    /// 0x12: set the password.
    SetPwd { password: u32 },
    /// 0x13: verify the password.
    VfyPwd { password: u32 },
    /// 0x14: ask the module for a 32-bit random number (R503 manual: confirmation code, then
    /// 4 bytes, big-endian).
    GetRandomCode,
    /// 0x1B: search, faster on modules that support it.
    HighSpeedSearch { buffer: u8, start: u16, count: u16 },
    /// 0x1D: number of stored templates.
    TemplateNum,
    /// 0x1F: occupancy bitmap of 256 slots.
    ReadIndexTable { page: u8 },
    /// 0x35: R503 Aura LED.
    AuraLedConfig {
        control: u8,
        speed: u8,
        colour: u8,
        count: u8,
    },
    /// 0x3D: soft reset; the module reboots and sends 0x55 when it is ready again.
    SoftReset,
    /// 0x40: handshake, answered with confirmation 0x00 (R503 manual).
    HandShake,
    /// 0x53: GetEcho, answered with confirmation 0x55 (what Adafruit's `check_module` sends).
    GetEcho,
}

impl Instruction {
    /// The command packet payload.
    pub fn encode(&self) -> Vec<u8> {
        use Instruction::*;
        let be = |v: u16| v.to_be_bytes();
        match *self {
            GenImg => vec![0x01],
            Img2Tz { buffer } => vec![0x02, buffer],
            Match => vec![0x03],
            Search {
                buffer,
                start,
                count,
            } => [&[0x04, buffer][..], &be(start), &be(count)].concat(),
            RegModel => vec![0x05],
            Store { buffer, page } => [&[0x06, buffer][..], &be(page)].concat(),
            LoadChar { buffer, page } => [&[0x07, buffer][..], &be(page)].concat(),
            UpChar { buffer } => vec![0x08, buffer],
            DownChar { buffer } => vec![0x09, buffer],
            DeleteChar { page, count } => [&[0x0C][..], &be(page), &be(count)].concat(),
            Empty => vec![0x0D],
            SetSysPara { parameter, value } => vec![0x0E, parameter, value],
            ReadSysPara => vec![0x0F],
            SetPwd { password } => [&[0x12][..], &password.to_be_bytes()].concat(),
            VfyPwd { password } => [&[0x13][..], &password.to_be_bytes()].concat(),
            GetRandomCode => vec![0x14],
            HighSpeedSearch {
                buffer,
                start,
                count,
            } => [&[0x1B, buffer][..], &be(start), &be(count)].concat(),
            TemplateNum => vec![0x1D],
            ReadIndexTable { page } => vec![0x1F, page],
            AuraLedConfig {
                control,
                speed,
                colour,
                count,
            } => vec![0x35, control, speed, colour, count],
            SoftReset => vec![0x3D],
            HandShake => vec![0x40],
            GetEcho => vec![0x53],
        }
    }

    /// Decodes a command payload (the simulator's side). `None` for unknown or short payloads.
    pub fn decode(p: &[u8]) -> Option<Self> {
        use Instruction::*;
        let u16_at = |i: usize| Some(u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]));
        let u32_at = |i: usize| {
            Some(u32::from_be_bytes([
                *p.get(i)?,
                *p.get(i + 1)?,
                *p.get(i + 2)?,
                *p.get(i + 3)?,
            ]))
        };
        let byte = |i: usize| p.get(i).copied();
        Some(match *p.first()? {
            0x01 => GenImg,
            0x02 => Img2Tz { buffer: byte(1)? },
            0x03 => Match,
            0x04 => Search {
                buffer: byte(1)?,
                start: u16_at(2)?,
                count: u16_at(4)?,
            },
            0x05 => RegModel,
            0x06 => Store {
                buffer: byte(1)?,
                page: u16_at(2)?,
            },
            0x07 => LoadChar {
                buffer: byte(1)?,
                page: u16_at(2)?,
            },
            0x08 => UpChar { buffer: byte(1)? },
            0x09 => DownChar { buffer: byte(1)? },
            0x0C => DeleteChar {
                page: u16_at(1)?,
                count: u16_at(3)?,
            },
            0x0D => Empty,
            0x0E => SetSysPara {
                parameter: byte(1)?,
                value: byte(2)?,
            },
            0x0F => ReadSysPara,
            0x12 => SetPwd {
                password: u32_at(1)?,
            },
            0x13 => VfyPwd {
                password: u32_at(1)?,
            },
            0x14 => GetRandomCode,
            0x1B => HighSpeedSearch {
                buffer: byte(1)?,
                start: u16_at(2)?,
                count: u16_at(4)?,
            },
            0x1D => TemplateNum,
            0x1F => ReadIndexTable { page: byte(1)? },
            0x35 => AuraLedConfig {
                control: byte(1)?,
                speed: byte(2)?,
                colour: byte(3)?,
                count: byte(4)?,
            },
            0x3D => SoftReset,
            0x40 => HandShake,
            0x53 => GetEcho,
            _ => return None,
        })
    }

    /// Datasheet name, for logs and errors.
    pub fn name(&self) -> &'static str {
        use Instruction::*;
        match self {
            GenImg => "GenImg",
            Img2Tz { .. } => "Img2Tz",
            Match => "Match",
            Search { .. } => "Search",
            RegModel => "RegModel",
            Store { .. } => "Store",
            LoadChar { .. } => "LoadChar",
            UpChar { .. } => "UpChar",
            DownChar { .. } => "DownChar",
            DeleteChar { .. } => "DeletChar",
            Empty => "Empty",
            SetSysPara { .. } => "SetSysPara",
            ReadSysPara => "ReadSysPara",
            SetPwd { .. } => "SetPwd",
            VfyPwd { .. } => "VfyPwd",
            GetRandomCode => "GetRandomCode",
            HighSpeedSearch { .. } => "HighSpeedSearch",
            TemplateNum => "TemplateNum",
            ReadIndexTable { .. } => "ReadIndexTable",
            AuraLedConfig { .. } => "AuraLedConfig",
            SoftReset => "SoftReset",
            HandShake => "HandShake",
            GetEcho => "GetEcho",
        }
    }
}

/// A confirmation code, the first byte of every acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Confirm(pub u8);

#[allow(missing_docs)]
impl Confirm {
    pub const OK: Confirm = Confirm(0x00);
    pub const RECEIVE_ERROR: Confirm = Confirm(0x01);
    pub const NO_FINGER: Confirm = Confirm(0x02);
    pub const IMAGE_FAILED: Confirm = Confirm(0x03);
    pub const IMAGE_MESSY: Confirm = Confirm(0x06);
    pub const TOO_FEW_FEATURES: Confirm = Confirm(0x07);
    pub const NO_MATCH: Confirm = Confirm(0x08);
    pub const NOT_FOUND: Confirm = Confirm(0x09);
    pub const MERGE_FAILED: Confirm = Confirm(0x0A);
    pub const BAD_PAGE: Confirm = Confirm(0x0B);
    pub const BAD_TEMPLATE: Confirm = Confirm(0x0C);
    pub const UPLOAD_FAILED: Confirm = Confirm(0x0D);
    pub const CANNOT_RECEIVE: Confirm = Confirm(0x0E);
    pub const DELETE_FAILED: Confirm = Confirm(0x10);
    pub const CLEAR_FAILED: Confirm = Confirm(0x11);
    pub const WRONG_PASSWORD: Confirm = Confirm(0x13);
    pub const NO_VALID_IMAGE: Confirm = Confirm(0x15);
    pub const FLASH_ERROR: Confirm = Confirm(0x18);
    pub const INVALID_REGISTER: Confirm = Confirm(0x1A);
    pub const LIBRARY_FULL: Confirm = Confirm(0x1F);
    pub const WRONG_ADDRESS: Confirm = Confirm(0x20);
    pub const PASSWORD_REQUIRED: Confirm = Confirm(0x21);
    pub const TEMPLATE_EMPTY: Confirm = Confirm(0x22);
    pub const LIBRARY_EMPTY: Confirm = Confirm(0x24);
    pub const TIMEOUT: Confirm = Confirm(0x26);
    pub const ALREADY_ENROLLED: Confirm = Confirm(0x27);
    pub const SENSOR_ERROR: Confirm = Confirm(0x29);
    /// The answer to GetEcho (0x53); also the lone byte a module sends when it has booted.
    pub const MODULE_OK: Confirm = Confirm(0x55);
    pub const UNSUPPORTED: Confirm = Confirm(0xFC);
    pub const HARDWARE_ERROR: Confirm = Confirm(0xFD);
    pub const COMMAND_FAILED: Confirm = Confirm(0xFE);

    /// The datasheet's meaning.
    pub fn description(self) -> &'static str {
        match self.0 {
            0x00 => "ok",
            0x01 => "receive error",
            0x02 => "no finger",
            0x03 => "image capture failed",
            0x06 => "image too messy",
            0x07 => "too few features",
            0x08 => "no match",
            0x09 => "not found in library",
            0x0A => "merge failed",
            0x0B => "page id out of range",
            0x0C => "bad template",
            0x0D => "upload failed",
            0x0E => "cannot receive data packets",
            0x0F => "image upload failed",
            0x10 => "delete failed",
            0x11 => "clear failed",
            0x13 => "wrong password",
            0x15 => "no valid image",
            0x18 => "flash write error",
            0x1A => "invalid register",
            0x1F => "library full",
            0x20 => "wrong address",
            0x21 => "password must be verified",
            0x22 => "template empty",
            0x24 => "library empty",
            0x26 => "timeout",
            0x27 => "fingerprint already enrolled",
            0x29 => "sensor hardware error",
            0x55 => "module ok",
            0xFC => "unsupported command",
            0xFD => "hardware error",
            0xFE => "command failed",
            _ => "unknown confirmation code",
        }
    }
}

impl std::fmt::Display for Confirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#04x} ({})", self.0, self.description())
    }
}

/// The 16 bytes answered to ReadSysPara.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemParameters {
    /// Status register.
    pub status: u16,
    /// System identifier code.
    pub system_id: u16,
    /// Library size (number of template slots).
    pub library_size: u16,
    /// Security level 1..5.
    pub security_level: u16,
    /// Module address.
    pub address: u32,
    /// Data packet size code 0..3 (32, 64, 128, 256 bytes).
    pub packet_size_code: u16,
    /// Baud rate multiplier N (baud = 9600 x N).
    pub baud_multiplier: u16,
}

impl SystemParameters {
    /// Parses the 16 bytes after the confirmation code.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; 16] = b.get(..16)?.try_into().ok()?;
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        Some(Self {
            status: u16_at(0),
            system_id: u16_at(2),
            library_size: u16_at(4),
            security_level: u16_at(6),
            address: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            packet_size_code: u16_at(12),
            baud_multiplier: u16_at(14),
        })
    }

    /// The 16 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        for v in [
            self.status,
            self.system_id,
            self.library_size,
            self.security_level,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&self.address.to_be_bytes());
        out.extend_from_slice(&self.packet_size_code.to_be_bytes());
        out.extend_from_slice(&self.baud_multiplier.to_be_bytes());
        out
    }

    /// Data packet size in bytes.
    pub fn packet_size(&self) -> usize {
        32 << self.packet_size_code.min(3)
    }

    /// The UART speed in bit/s: 9600 times the baud multiplier.
    pub fn baud(&self) -> u32 {
        9600 * u32::from(self.baud_multiplier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_round_trip() {
        let all = [
            Instruction::GenImg,
            Instruction::Img2Tz { buffer: 2 },
            Instruction::Match,
            Instruction::Search {
                buffer: 1,
                start: 3,
                count: 200,
            },
            Instruction::RegModel,
            Instruction::Store {
                buffer: 1,
                page: 513,
            },
            Instruction::LoadChar { buffer: 2, page: 7 },
            Instruction::UpChar { buffer: 1 },
            Instruction::DownChar { buffer: 1 },
            Instruction::DeleteChar { page: 4, count: 1 },
            Instruction::Empty,
            Instruction::SetSysPara {
                parameter: 6,
                value: 3,
            },
            Instruction::ReadSysPara,
            Instruction::SetPwd {
                password: 0x0102_0304,
            },
            Instruction::VfyPwd { password: 0 },
            Instruction::HighSpeedSearch {
                buffer: 1,
                start: 0,
                count: 1000,
            },
            Instruction::TemplateNum,
            Instruction::ReadIndexTable { page: 3 },
            Instruction::AuraLedConfig {
                control: 1,
                speed: 0x80,
                colour: 2,
                count: 0,
            },
            Instruction::SoftReset,
            Instruction::HandShake,
            Instruction::GetEcho,
            Instruction::GetRandomCode,
        ];
        for i in all {
            assert_eq!(Instruction::decode(&i.encode()), Some(i));
        }
    }

    #[test]
    fn datasheet_payloads() {
        assert_eq!(
            Instruction::Search {
                buffer: 1,
                start: 0,
                count: 200
            }
            .encode(),
            [0x04, 0x01, 0x00, 0x00, 0x00, 0xC8]
        );
        assert_eq!(
            Instruction::DeleteChar { page: 5, count: 1 }.encode(),
            [0x0C, 0x00, 0x05, 0x00, 0x01]
        );
        assert_eq!(Instruction::HandShake.encode(), [0x40]);
        assert_eq!(Instruction::GetEcho.encode(), [0x53]);
        assert_eq!(Instruction::GetRandomCode.encode(), [0x14]);
        assert_eq!(Instruction::decode(&[0x04, 0x01]), None);
        assert_eq!(Instruction::decode(&[0x99]), None);
    }

    #[test]
    fn decodes_system_parameters() {
        // R503 defaults: library 200, level 3, packet 128 (code 2), 57600 (N = 6).
        let bytes = [
            0x00, 0x00, 0x00, 0x09, 0x00, 0xC8, 0x00, 0x03, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x02,
            0x00, 0x06,
        ];
        let p = SystemParameters::decode(&bytes).unwrap();
        assert_eq!(p.library_size, 200);
        assert_eq!(p.packet_size(), 128);
        assert_eq!(p.baud(), 57_600);
        assert_eq!(p.encode(), bytes);
        assert_eq!(SystemParameters::decode(&bytes[..15]), None);
    }
}
