//! The kernel command line: splitting it as the kernel does, and reading the agent's job
//! (`rivet.job=…`) and the boot interface (`BOOTIF=`) from it.

use thiserror::Error;

/// Parameters in order; a bare word is a parameter with no value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelCommandLine {
    params: Vec<(String, Option<String>)>,
}

impl KernelCommandLine {
    /// Splits like the kernel's `next_arg()`: white space separates parameters, double quotes
    /// group (and are removed), the first `=` separates name and value, even inside quotes
    /// (`"name=a b"` is `name` = `a b`).
    pub fn parse(text: &str) -> Self {
        let mut params = Vec::new();
        let mut chars = text.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek().is_none() {
                break;
            }
            let mut word = String::new();
            let mut quoted = false;
            let mut equals_at = None;
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() && !quoted {
                    break;
                }
                chars.next();
                match c {
                    '"' => quoted = !quoted,
                    '=' if equals_at.is_none() => {
                        equals_at = Some(word.len());
                        word.push(c);
                    }
                    _ => word.push(c),
                }
            }
            match equals_at {
                Some(at) => params.push((word[..at].to_owned(), Some(word[at + 1..].to_owned()))),
                None => params.push((word, None)),
            }
        }
        Self { params }
    }

    /// Appends the parameters of `other` (a later value overrides an earlier one).
    pub fn extend(&mut self, other: KernelCommandLine) {
        self.params.extend(other.params);
    }

    /// The last value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.as_deref())
    }

    /// Whether `name` is present, with or without a value.
    pub fn has(&self, name: &str) -> bool {
        self.params.iter().any(|(key, _)| key == name)
    }

    /// A boolean flag: `name`, `name=1|true|yes|on` are true; `0|false|no|off` and absence
    /// false. Anything else is an error rather than a guess.
    pub fn flag(&self, name: &str) -> Result<bool, CommandLineError> {
        if !self.has(name) {
            return Ok(false);
        }
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None | Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(other) => Err(CommandLineError::Invalid {
                name: name.to_owned(),
                value: other.to_owned(),
                expected: "1, 0, true, false, yes, no, on or off",
            }),
        }
    }

    /// The MAC address the host network-booted from: PXELINUX/iPXE's `BOOTIF=01-aa-bb-…`
    /// (the leading `01` is the ARP hardware type) or a plain `rivet.bootif=aa:bb:…`.
    pub fn boot_mac(&self) -> Option<String> {
        if let Some(mac) = self.get("rivet.bootif") {
            return normalise_mac(mac);
        }
        let bootif = self.get("BOOTIF")?;
        let octets: Vec<&str> = bootif.split('-').collect();
        match octets.as_slice() {
            [_hardware_type, rest @ ..] if rest.len() == 6 => normalise_mac(&rest.join(":")),
            _ => normalise_mac(bootif),
        }
    }
}

fn normalise_mac(text: &str) -> Option<String> {
    let octets: Vec<&str> = text.split([':', '-']).collect();
    let valid = octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()));
    valid.then(|| octets.join(":").to_ascii_lowercase())
}

/// A parameter that is present but unusable.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandLineError {
    #[error("kernel parameter {name}={value} is invalid: expected {expected}")]
    Invalid {
        name: String,
        value: String,
        expected: &'static str,
    },
    #[error("kernel parameter {name} is required {why}")]
    Missing { name: String, why: &'static str },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn splits_like_the_kernel() {
        let line = KernelCommandLine::parse(
            "console=ttyS0 quiet  rivet.job=clean \"rivet.label=a b\" rivet.x=\"c d\" ro",
        );
        assert_eq!(line.get("console"), Some("ttyS0"));
        assert_eq!(line.get("rivet.job"), Some("clean"));
        assert_eq!(line.get("rivet.label"), Some("a b"));
        assert_eq!(line.get("rivet.x"), Some("c d"));
        assert!(line.has("quiet"));
        assert_eq!(line.get("quiet"), None);
        assert_eq!(
            KernelCommandLine::parse("   "),
            KernelCommandLine::default()
        );
        assert_eq!(KernelCommandLine::parse("a=b=c").get("a"), Some("b=c"));
    }

    #[test]
    fn later_values_override_earlier_ones() {
        let mut line = KernelCommandLine::parse("rivet.after=reboot");
        line.extend(KernelCommandLine::parse("rivet.after=poweroff"));
        assert_eq!(line.get("rivet.after"), Some("poweroff"));
    }

    #[test]
    fn flags_are_strict() {
        let line = KernelCommandLine::parse("a b=1 c=off d=maybe");
        assert_eq!(line.flag("a"), Ok(true));
        assert_eq!(line.flag("b"), Ok(true));
        assert_eq!(line.flag("c"), Ok(false));
        assert_eq!(line.flag("absent"), Ok(false));
        assert!(line.flag("d").unwrap_err().to_string().contains("d=maybe"));
    }

    #[test]
    fn reads_the_boot_interface() {
        let pxe = KernelCommandLine::parse("BOOTIF=01-52-54-00-AB-CD-EF");
        assert_eq!(pxe.boot_mac().as_deref(), Some("52:54:00:ab:cd:ef"));
        let plain = KernelCommandLine::parse("rivet.bootif=52:54:00:ab:cd:ef BOOTIF=junk");
        assert_eq!(plain.boot_mac().as_deref(), Some("52:54:00:ab:cd:ef"));
        assert_eq!(KernelCommandLine::parse("BOOTIF=01-52-54").boot_mac(), None);
    }
}
