//! Grow / ZhianTec "EF01" fingerprint modules: R305, R307, R503, AS608, ZFM-20.
//!
//! [`codec`] parses and builds packets with no I/O; [`instruction`] names the instructions and
//! confirmation codes; [`Ef01`] is the async device over any `AsyncRead + AsyncWrite`; [`sim`] is
//! a byte-level module for tests and the demo.
//!
//! # Wiring (Raspberry Pi 4/5)
//!
//! | module wire (R503 colours)   | Pi pin                                   |
//! |------------------------------|------------------------------------------|
//! | V+ (red), 3.3 V              | pin 1 or 17 (3.3 V)                      |
//! | GND (black)                  | pin 6 (or any GND)                       |
//! | TX (yellow)                  | the UART's RX (UART0: GPIO15, pin 10)    |
//! | RX (green)                   | the UART's TX (UART0: GPIO14, pin 8)     |
//! | WAKEUP (blue, R503)          | optional GPIO input: low while a finger touches |
//! | 3.3VT (white, R503)          | 3.3 V, powers the touch circuit          |
//!
//! R503 and AS608 run on 3.3 V and talk 3.3 V logic: wire them straight to the Pi. R305/R307
//! boards want 3.6-6 V on V+ (feed 5 V) but their TX idles at 3.3 V on most boards; measure it,
//! and use a level shifter if it reads 5 V. Pi GPIO pins are not 5 V tolerant.
//!
//! # UART setup
//!
//! Use a PL011 UART (`/dev/ttyAMA*`); the mini UART (`/dev/ttyS0`) drifts with the core clock
//! and corrupts frames under load. In `/boot/firmware/config.txt`:
//!
//! ```text
//! enable_uart=1
//! dtoverlay=disable-bt      # gives the PL011 on GPIO14/15 back from Bluetooth (Pi 3/4)
//! dtoverlay=uart2           # extra PL011s on a Pi 4: uart2..uart5, one per reader
//! ```
//!
//! Turn the serial console off (`sudo raspi-config` > Interface > Serial: login shell No,
//! hardware Yes), or remove `console=serial0,115200` from `cmdline.txt`: otherwise the module
//! receives login prompts and the driver sees garbage. The default speed is 57600 baud 8N1
//! (`baud` in the config if the module was changed; 9600 x N).
//!
//! # Timing
//!
//! A module ignores commands while it boots and sends one `0x55` byte when it is ready:
//! readers.md gives about 50 ms for an R503, modules in the field were seen deaf for a few
//! hundred ms. At every start the driver sends HandShake (`0x40`, answered `0x00`), again 50 ms
//! after the ready byte (so an answer already on its way is not doubled) or every reply timeout
//! (1 s), for up to 2 s, and only then VfyPwd. GetEcho (`0x53`, answered `0x55`, what Adafruit's
//! `check_module` sends) is there too. Replies may take 1 s, 3 s for Search, Store, Empty,
//! DeletChar and GenImg; a command is sent three times before the reader is reported down.
//!
//! # Permissions
//!
//! The serial device belongs to group `dialout`: `sudo usermod -aG dialout rollcall`, then
//! restart the service. "permission denied" in the reader's health means exactly this.
//!
//! # Troubleshooting
//!
//! - Health says "HandShake: no valid reply": the module did not answer within 2 s of the port
//!   opening (not booted, not powered, not wired). Check V+ (3.3 V), TX/RX crossed, the baud rate, and that no
//!   getty or other program holds the port (`sudo fuser /dev/ttyAMA0`).
//! - Frequent "garbage on the line" at debug level: a mini UART, a long unshielded cable, or the
//!   console is still on. The driver resynchronises on the next `EF 01` and re-sends.
//! - "wrong password" / "password must be verified": set `password` in the reader's config.
//! - Prints never match: templates are per model; a template from an R307 does not load into an
//!   R503. Re-enrol on the model that will match.
//! - Store answers 0x22 (template empty) right after a template download: the module did not
//!   take the data as a whole template. It is of another model (512 bytes on R30x/AS608, 1536
//!   on R503) or the data packets were garbled on the line; the module acknowledges no data
//!   packet, so Store is where this shows. Loading a roster is bound by the line: about 106 ms per
//!   512-byte template at 57600 baud (BENCHMARKS.md); 115200 halves it.
//! - "UpChar: ... data stopped after N bytes" or "corrupt data packet": the template read-out
//!   was cut or garbled (line noise, baud mismatch). The buffer is unchanged: read it again.
//! - The module holds its templates in clear in its own flash (a hardware limit): the gateway
//!   keeps the authoritative copies encrypted and reconciles the module's library at start.

pub mod codec;
mod device;
pub mod instruction;
mod library;
pub mod sim;

pub use device::{Ack, Ef01, Ef01Error, Identify, Reconciled};
pub use instruction::{Confirm, Instruction, SystemParameters};
pub use library::{Capture, MAX_TEMPLATE_LEN, Merge};
