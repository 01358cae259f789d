//! How a background save gets a view of the dataset at one instant.
//!
//! - [`Method::Fork`]: a child process sees the dataset as it was at `fork()` (the kernel
//!   copies each page the parent writes while the child lives); see [`crate::persist`].
//! - [`Method::Forkless`]: no child. The event loop copies records out in bucket order between
//!   events and a writer thread encodes them; a record about to change before the walk reached
//!   it is copied first (copy-before-write), so the file is still the dataset at the start
//!   instant; see [`forkless`].

pub mod forkless;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    Fork,
    Forkless,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Fork => "fork",
            Method::Forkless => "forkless",
        }
    }
    /// Parses a method name as CONFIG SET and BGSAVE take it (any case).
    pub fn parse(s: &[u8]) -> Option<Method> {
        match s.to_ascii_lowercase().as_slice() {
            b"fork" => Some(Method::Fork),
            b"forkless" => Some(Method::Forkless),
            _ => None,
        }
    }
}
