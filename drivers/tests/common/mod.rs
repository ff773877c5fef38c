//! Pseudo-terminal helpers shared by the tests that open a pty by path (`pty.rs`,
//! `ef01_library.rs`): the real serial stack (tokio-serial) on one end, exactly as on a Pi.
#![allow(dead_code)] // each test crate uses its own subset

use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

/// A pty pair: the simulator's (master) end, the slave's path, and the slave handle that keeps
/// the pty alive.
pub fn pty() -> (SerialStream, String, SerialStream) {
    let (master, slave) = SerialStream::pair().expect("a pseudo-terminal pair");
    let path = slave.name().expect("slave path");
    (master, path, slave)
}

/// Checks that a tty can be configured here, failing with the reason when it cannot. Under
/// qemu-user 7.2 the serial port setup ioctls fail with ENOSYS, which is why
/// `drivers/aarch64-test.sh` leaves the files that use this out of the aarch64 run; natively
/// they must work.
pub fn assert_tty_configurable() {
    let (_master, path, _slave) = pty();
    if let Err(e) = tokio_serial::new(&path, 9600).open_native_async() {
        panic!(
            "cannot configure a pty slave opened by path ({e}): this platform lacks the tty \
             ioctls the serial stack needs (qemu-user?); run these tests natively"
        )
    }
}

/// Opens the slave end by path at `baud`, as the driver opens /dev/ttyAMA0.
pub fn open(path: &str, baud: u32) -> SerialStream {
    tokio_serial::new(path, baud)
        .open_native_async()
        .expect("open pty slave by path")
}
