//! Bearer-token authentication: the token is compared as a SHA-256 in constant time, so
//! neither its content nor its length leaks through timing.

use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::digest;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::tls::{TlsError, write_private};

/// The API's bearer token, as its hash.
#[derive(Clone)]
pub struct ApiToken {
    sha256: Arc<[u8]>,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<hash>)")
    }
}

impl ApiToken {
    pub fn new(token: &str) -> Self {
        Self {
            sha256: digest::digest(&digest::SHA256, token.trim().as_bytes())
                .as_ref()
                .into(),
        }
    }

    /// Reads the token from `path`, generating a random one there (mode 0600) if the file
    /// does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, TlsError> {
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => Ok(Self::new(&text)),
            Ok(_) => Err(TlsError::Pem {
                path: path.to_owned(),
                what: "token (the file is empty)",
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                aws_lc_rs::rand::fill(&mut bytes).map_err(|_| TlsError::Write {
                    path: path.to_owned(),
                    source: std::io::Error::other("the system random generator failed"),
                })?;
                let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|source| TlsError::Write {
                        path: parent.to_owned(),
                        source,
                    })?;
                }
                write_private(path, &format!("{token}\n"))?;
                tracing::info!(path = %path.display(), "created the API token");
                Ok(Self::new(&token))
            }
            Err(source) => Err(TlsError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    pub fn accepts(&self, presented: &str) -> bool {
        let presented = digest::digest(&digest::SHA256, presented.as_bytes());
        presented.as_ref().ct_eq(&self.sha256).into()
    }
}

/// Lets a request through only with `Authorization: Bearer <token>`.
pub async fn require_token(
    State(token): State<ApiToken>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(presented) if token.accepts(presented.trim()) => next.run(request).await,
        _ => {
            let mut response = ApiError::unauthorized().into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rivet\""),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_is_accepted() {
        let token = ApiToken::new("s3cret-token\n");
        assert!(token.accepts("s3cret-token"));
        assert!(!token.accepts("s3cret-toke"));
        assert!(!token.accepts("s3cret-token2"));
        assert!(!token.accepts(""));
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn a_token_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-token");
        ApiToken::load_or_create(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 43);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = ApiToken::load_or_create(&path).unwrap();
        assert!(again.accepts(text.trim()));
    }
}
