//! Rollcall's whole-system test harness: real services as child processes on free ports.
//!
//! * [`mosquitto`]: a Mosquitto broker per test, killable and restartable.
//! * [`postgres`]: a PostgreSQL server per test (initdb in a temporary directory).
//! * [`pki`]: a throwaway CA and certificates for TLS tests (openssl CLI).
//! * [`acker`]: a stand-in for the centre that acks what it receives (tests only).
//! * [`rollcalld`]: runs the real rollcalld binary as a child process.

pub mod acker;
pub mod mosquitto;
pub mod pki;
pub mod postgres;
pub mod rollcalld;
