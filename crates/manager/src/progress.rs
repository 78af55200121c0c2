//! [`Progress`]: what a long remote operation (install, upgrade, push) reports while it runs,
//! independent of the wire. The API renders each value as one object of Docker's progress
//! stream (`jsonmessage`); the manager only says what happened.

/// One step of a pull, upgrade or push, in the order the operation makes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A line about the whole operation: `{"status": …}`
    /// (`Digest: sha256:…`, `The push refers to repository […]`).
    Status(String),
    /// A line about a named thing without a detail: `{"status": …, "id": …}`
    /// (`Pulling from <repo>` with the tag as id).
    Named {
        /// What the line says.
        status: String,
        /// The tag (or other short name) it is about.
        id: String,
    },
    /// A step of one object (blob or manifest): `{"status": …, "progressDetail": {}, "id": …}`
    /// (`Waiting`, `Already exists`, `Download complete`, `Complete`, `Preparing`).
    Step {
        /// What happened.
        status: String,
        /// The first 12 hex digits of the object's digest.
        id: String,
    },
    /// Bytes of one object done so far, drawn as a bar (`Extracting`, `Downloading`,
    /// `Pushing`).
    Bytes {
        /// What is being done.
        status: String,
        /// The first 12 hex digits of the object's digest.
        id: String,
        /// Bytes done.
        current: u64,
        /// Bytes in all.
        total: u64,
    },
    /// Out-of-band data for the client (`aux`), e.g. push's `{"Tag","Digest","Size"}`.
    Aux(serde_json::Value),
}

impl Progress {
    /// A [`Progress::Step`] about the object with `digest_hex` (only its first 12 digits are
    /// shown, as Docker's `stringid.TruncateID`).
    pub fn step(status: &str, digest_hex: &str) -> Self {
        Progress::Step {
            status: status.to_owned(),
            id: short_id(digest_hex),
        }
    }

    /// A [`Progress::Bytes`] about the object with `digest_hex`.
    pub fn bytes(status: &str, digest_hex: &str, current: u64, total: u64) -> Self {
        Progress::Bytes {
            status: status.to_owned(),
            id: short_id(digest_hex),
            current,
            total,
        }
    }
}

/// The first 12 characters of a digest's hex part (the id Docker shows for blobs).
pub fn short_id(digest_hex: &str) -> String {
    let hex = digest_hex.strip_prefix("sha256:").unwrap_or(digest_hex);
    hex.chars().take(12).collect()
}

/// Where an operation sends its [`Progress`]; must not block (it is called from download
/// loops). Implementations drop messages nobody reads.
pub type ProgressFn<'a> = &'a (dyn Fn(Progress) + Send + Sync);

/// An owned [`ProgressFn`], for operations that report from blocking tasks too.
pub type SharedProgress = std::sync::Arc<dyn Fn(Progress) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_first_twelve_hex_digits() {
        assert_eq!(
            short_id("sha256:cec2e3189279134d83a5bff0a10f82ca2a75853be6a9ee7a6e747af1845b8f01"),
            "cec2e3189279"
        );
        assert_eq!(short_id("abc"), "abc");
    }
}
