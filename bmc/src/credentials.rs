//! BMC credentials.

use std::fmt;

/// A user name and password for a BMC.
///
/// The password is only reachable through [`Credentials::password`]; `Debug` output and
/// error messages never contain it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: String,
    password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    /// The secret. Callers must not log it.
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_password() {
        let credentials = Credentials::new("admin", "hunter2");
        let shown = format!("{credentials:?} {credentials:#?}");
        assert!(shown.contains("admin"));
        assert!(!shown.contains("hunter2"));
        assert_eq!(credentials.password(), "hunter2");
    }
}
