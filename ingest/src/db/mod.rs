//! PostgreSQL: error classification, migrations and schema check
//! ([`schema`]), the batch writer ([`writer`]), the device heartbeat writes and the
//! `attendance_configuration` settings ([`settings`]).

mod attendance;
pub mod batch;
pub(crate) mod devices;
pub mod schema;
pub mod settings;
pub mod writer;

use tokio_postgres::error::SqlState;

/// A database-layer failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// From PostgreSQL or the connection.
    #[error("postgres: {}", pg_message(.0))]
    Pg(#[from] tokio_postgres::Error),
    /// No connection could be had from the pool.
    #[error("connection pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The database lacks something ingest needs, or the URL is wrong.
    #[error("{0}")]
    Schema(String),
}

/// The server's message (and detail) when there is one; the client error otherwise.
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => match d.detail() {
            Some(detail) => format!("{}: {} ({detail})", d.code().code(), d.message()),
            None => format!("{}: {}", d.code().code(), d.message()),
        },
        None => e.to_string(),
    }
}

impl DbError {
    /// Whether retrying the same work later can succeed (connection lost, server restarting,
    /// deadlock, serialization failure), as opposed to a bug or a schema problem.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Pool(_) => true,
            DbError::Schema(_) => false,
            DbError::Pg(e) => {
                if e.is_closed() {
                    return true;
                }
                match e.code() {
                    // No SQLSTATE: connection trouble (I/O, reset, timeout) is transient; a
                    // client-side conversion error is a bug and retrying cannot help.
                    None => {
                        let text = e.to_string();
                        std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
                            || text.contains("connect")
                            || text.contains("timed out")
                            || text.contains("closed")
                    }
                    Some(c) => {
                        *c == SqlState::T_R_DEADLOCK_DETECTED
                            || *c == SqlState::T_R_SERIALIZATION_FAILURE
                            || *c == SqlState::ADMIN_SHUTDOWN
                            || *c == SqlState::CRASH_SHUTDOWN
                            || *c == SqlState::CANNOT_CONNECT_NOW
                            || *c == SqlState::QUERY_CANCELED
                            || c.code().starts_with("08")
                            || c.code().starts_with("53")
                            || c.code().starts_with("57P")
                    }
                }
            }
        }
    }
}
