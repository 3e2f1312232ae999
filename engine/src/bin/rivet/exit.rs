//! Exit codes and the error report printed before exiting.
//!
//! | Code | Meaning |
//! |------|---------|
//! | 0    | success |
//! | 1    | the operation failed (the report says why) |
//! | 2    | the command line is invalid (printed by clap) |
//! | 3    | not used (was "not implemented yet"; every command is built) |
//! | 4    | verification failed (checksum mismatch) |
//! | 5    | image refused (unsafe or unsupported format) |
//! | 6    | the BMC rejected the credentials |
//! | 7    | the BMC could not be reached or did not answer in time |
//!
//! The table is repeated in the user guide (CLI reference); keep them in step.

use std::process::ExitCode;

pub(crate) const FAILURE: u8 = 1;
pub(crate) const VERIFICATION_FAILED: u8 = 4;
pub(crate) const IMAGE_REFUSED: u8 = 5;
pub(crate) const BMC_AUTHENTICATION: u8 = 6;
pub(crate) const BMC_UNREACHABLE: u8 = 7;

/// The exit code for an error: the first recognised error in the chain decides.
fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(image) = cause.downcast_ref::<rivet_images::ImageError>() {
            if image.is_verification_failure() {
                return VERIFICATION_FAILED;
            }
            if image.is_refusal() {
                return IMAGE_REFUSED;
            }
        }
        if let Some(err) = cause.downcast_ref::<rivet_bmc::BmcError>()
            && let Some(code) = bmc_code(err)
        {
            return code;
        }
    }
    FAILURE
}

/// BMC failures worth their own exit code; when several drivers failed, only if they all
/// failed the same way.
fn bmc_code(err: &rivet_bmc::BmcError) -> Option<u8> {
    use rivet_bmc::BmcError;
    match err {
        BmcError::Authentication => Some(BMC_AUTHENTICATION),
        BmcError::Connection(_) | BmcError::Timeout(_) => Some(BMC_UNREACHABLE),
        BmcError::AllProvidersFailed { failures, .. } => {
            let codes: Vec<Option<u8>> = failures.iter().map(|(_, e)| bmc_code(e)).collect();
            let first = *codes.first()?;
            codes.iter().all(|c| *c == first).then_some(first).flatten()
        }
        _ => None,
    }
}

/// Prints `err` with its causes to standard error and returns the matching exit code.
pub(crate) fn report(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    ExitCode::from(code_for(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_nobody_classified_are_failures() {
        assert_eq!(code_for(&anyhow::anyhow!("boom")), FAILURE);
    }

    #[test]
    fn image_verification_and_refusal_have_their_own_codes() {
        let mismatch = rivet_images::ImageError::Wiped {
            cause: Box::new(rivet_images::ImageError::ChecksumMismatch {
                algorithm: rivet_images::ChecksumAlgorithm::Sha256,
                expected: "a".into(),
                actual: "b".into(),
            }),
        };
        let err = anyhow::Error::new(mismatch).context("writing");
        assert_eq!(code_for(&err), VERIFICATION_FAILED);
        let refused = anyhow::Error::new(rivet_images::ImageError::Refused(
            rivet_images::Refusal::Empty,
        ));
        assert_eq!(code_for(&refused), IMAGE_REFUSED);
    }

    #[test]
    fn bmc_failures_map_to_their_codes_through_context() {
        use rivet_bmc::BmcError;
        let auth = anyhow::Error::new(BmcError::Authentication).context("connecting");
        assert_eq!(code_for(&auth), BMC_AUTHENTICATION);
        let down = anyhow::Error::new(BmcError::Connection("refused".into()));
        assert_eq!(code_for(&down), BMC_UNREACHABLE);
        let mixed = anyhow::Error::new(BmcError::AllProvidersFailed {
            capability: "power",
            failures: vec![
                ("redfish", BmcError::Authentication),
                ("ipmi", BmcError::Timeout(std::time::Duration::from_secs(1))),
            ],
        });
        assert_eq!(code_for(&mixed), FAILURE);
        let refused = anyhow::Error::new(BmcError::InvalidRequest("no".into()));
        assert_eq!(code_for(&refused), FAILURE);
    }
}
