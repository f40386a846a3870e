//! Why a command failed, and the exit code that says so: 2 for bad configuration (a flag,
//! a file named on the command line, the state file), 1 for anything else.
//!
//! Each layer has its own error type; this one gathers those a command can end with.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// A command's failure.
#[derive(Debug, Error)]
pub enum Error {
    /// Bad configuration: exit code 2.
    #[error("{flag}: {message}")]
    Config {
        /// The flag (or argument) at fault.
        flag: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The HTTP server could not start or failed.
    #[error(transparent)]
    Http(crate::web::Error),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
}

/// A command's result.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config { .. } => 2,
            _ => 1,
        }
    }
}

impl From<crate::web::Error> for Error {
    fn from(e: crate::web::Error) -> Error {
        match e {
            crate::web::Error::Config { flag, message } => Error::Config { flag, message },
            other => Error::Http(other),
        }
    }
}

impl From<crate::fake_server::Error> for Error {
    fn from(e: crate::fake_server::Error) -> Error {
        match e {
            crate::fake_server::Error::Recording(e) => Error::Config {
                flag: "FILE",
                message: e.to_string(),
            },
            crate::fake_server::Error::Web(e) => e.into(),
        }
    }
}

impl From<crate::persist::OpenError> for Error {
    fn from(e: crate::persist::OpenError) -> Error {
        Error::Config {
            flag: "--state-file",
            message: e.to_string(),
        }
    }
}
