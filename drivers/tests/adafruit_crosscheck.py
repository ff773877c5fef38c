#!/usr/bin/env python3
"""Independent check of Rollcall's EF01 simulator with Adafruit's CircuitPython fingerprint
driver (PyPI adafruit-circuitpython-fingerprint, run on CPython with pyserial).

Usage: adafruit_crosscheck.py <serial port path>

The Rust test (tests/adafruit.rs) runs the simulator on the other end of a pseudo-terminal and
answers "PLACE <seed> <count>" lines on stdout by placing that finger on the simulated sensor,
replying "ok" on stdin. The simulator starts with one template, seed 3, in slot 3.
Prints PASS and exits 0 when every step behaved as a real R503 would.
"""

import sys

import serial
import adafruit_fingerprint as af


def place(seed, count=1):
    print(f"PLACE {seed} {count}", flush=True)
    if sys.stdin.readline().strip() != "ok":
        raise SystemExit("harness did not place the finger")


def check(label, got, want):
    if got != want:
        raise SystemExit(f"FAIL {label}: got {got!r}, want {want!r}")
    print(f"ok   {label}", flush=True)


def main():
    uart = serial.Serial(sys.argv[1], baudrate=57600, timeout=2)
    # Handshake as Adafruit does it: VfyPwd with the default password, then ReadSysPara.
    finger = af.Adafruit_Fingerprint(uart)
    check("library size", finger.library_size, 200)
    check("packet size code", finger.data_packet_size, 2)
    check("baud multiplier", finger.baudrate, 6)
    check("GetEcho / check_module", finger.check_module(), True)

    check("count_templates", finger.count_templates(), af.OK)
    check("template count", finger.template_count, 1)
    check("read_templates", finger.read_templates(), af.OK)
    check("occupied slots", finger.templates, [3])

    check("capture without finger", finger.get_image(), af.NOFINGER)

    # Enrol: two captures of the same finger, merge, store in slot 10.
    place(42, 2)
    check("capture 1", finger.get_image(), af.OK)
    check("extract 1", finger.image_2_tz(1), af.OK)
    check("lifted", finger.get_image(), af.NOFINGER)
    check("capture 2", finger.get_image(), af.OK)
    check("extract 2", finger.image_2_tz(2), af.OK)
    check("merge", finger.create_model(), af.OK)
    check("store slot 10", finger.store_model(10), af.OK)
    finger.count_templates()
    check("template count after enrol", finger.template_count, 2)
    finger.read_templates()
    check("occupied after enrol", finger.templates, [3, 10])

    check("lifted after enrol", finger.get_image(), af.NOFINGER)

    # Search (0x04) and high-speed search (0x1B).
    place(42)
    check("capture for search", finger.get_image(), af.OK)
    check("extract for search", finger.image_2_tz(1), af.OK)
    check("search", finger.finger_search(), af.OK)
    check("search hit", (finger.finger_id, finger.confidence), (10, 150))
    check("lifted after search", finger.get_image(), af.NOFINGER)
    place(3)
    check("capture pre-loaded finger", finger.get_image(), af.OK)
    finger.image_2_tz(1)
    finger.finger_fast_search()
    check("fast search hit", finger.finger_id, 3)
    check("lifted after fast search", finger.get_image(), af.NOFINGER)
    place(77)
    check("capture stranger", finger.get_image(), af.OK)
    finger.image_2_tz(1)
    check("stranger not found", finger.finger_search(), af.NOTFOUND)

    # Template out of the module and back in, byte for byte.
    check("load slot 10", finger.load_model(10, 1), af.OK)
    data = finger.get_fpdata("char", 1)
    check("template length (R503)", len(data), 1536)
    check("download to buffer 2", finger.send_fpdata(data, "char", 2), True)
    check("buffers 1 and 2 match", finger.compare_templates(), af.OK)
    # Store keeps a template wherever it is told, duplicate or not: the datasheets list only
    # 00/01/0B/18 for Store (0x27 "already enrolled" belongs to the R503's AutoEnroll).
    check("store the downloaded copy in slot 20", finger.store_model(20, 2), af.OK)

    check("delete slot 10", finger.delete_model(10), af.OK)
    finger.count_templates()
    check("count after delete", finger.template_count, 2)
    check("aura LED", finger.set_led(color=2, mode=1), af.OK)
    finger.soft_reset()  # raises unless the ack is followed by 0x55
    print("ok   soft reset sent 0x55", flush=True)
    check("verify password after reset", finger.verify_password(), af.OK)
    check("empty library", finger.empty_library(), af.OK)
    finger.count_templates()
    check("count after empty", finger.template_count, 0)
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
