//! Secrets a source configuration names: the reference type, the TLS material read from one,
//! and the two steps of resolution kept apart so the parsing is testable without a cluster:
//! [`Secrets::data`] (kube) fetches a Secret's `data` map, and each source's `resolve`
//! turns that map into a [`super::Query`].

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Result, SourceError};

/// The `data` map of a Kubernetes Secret.
pub type SecretData = BTreeMap<String, ByteString>;

/// A Secret in the ScaledTarget's own namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// The Secret's name.
    pub name: String,
}

/// Secret key of a PEM CA bundle to trust (in addition to the system roots).
pub const KEY_CA: &str = "ca.crt";
/// Secret key of a PEM client certificate (with [`KEY_TLS_KEY`]).
pub const KEY_TLS_CERT: &str = "tls.crt";
/// Secret key of the PEM private key of the client certificate.
pub const KEY_TLS_KEY: &str = "tls.key";

/// TLS material from a Secret: a CA to trust and an optional client certificate. Hashable (it
/// is part of a query's identity); `Debug` does not print the private key.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsMaterial {
    /// PEM CA bundle.
    pub ca_pem: Option<String>,
    /// PEM client certificate chain and its PEM private key.
    pub client: Option<(String, String)>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("client", &self.client.as_ref().map(|_| "<cert and key>"))
            .finish()
    }
}

impl TlsMaterial {
    /// Reads `ca.crt`, `tls.crt` and `tls.key` from `data`. A certificate without its key (or
    /// the reverse) is a configuration error.
    pub fn from_secret_data(data: &SecretData) -> Result<Self> {
        let ca_pem = optional_string(data, KEY_CA)?;
        let client = match (
            optional_string(data, KEY_TLS_CERT)?,
            optional_string(data, KEY_TLS_KEY)?,
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(SourceError::Config(format!(
                    "a client certificate needs both {KEY_TLS_CERT} and {KEY_TLS_KEY}"
                )));
            }
        };
        Ok(Self { ca_pem, client })
    }

    /// Applies this material to a reqwest client builder.
    pub(crate) fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder> {
        if let Some(ca) = &self.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(ca.as_bytes())
                .map_err(|e| SourceError::Config(format!("{KEY_CA} is not a PEM bundle: {e}")))?;
            if certs.is_empty() {
                return Err(SourceError::Config(format!(
                    "{KEY_CA} holds no certificate"
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = &self.client {
            let identity = reqwest::Identity::from_pem(format!("{cert}\n{key}").as_bytes())
                .map_err(|e| {
                    SourceError::Config(format!(
                        "{KEY_TLS_CERT}/{KEY_TLS_KEY} are not a PEM certificate and key: {e}"
                    ))
                })?;
            builder = builder.identity(identity);
        }
        Ok(builder)
    }
}

/// The UTF-8 value of `key`, if present.
pub fn optional_string(data: &SecretData, key: &str) -> Result<Option<String>> {
    data.get(key)
        .map(|v| {
            String::from_utf8(v.0.clone())
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|_| SourceError::Config(format!("secret key {key:?} is not UTF-8")))
        })
        .transpose()
}

/// The namespaces ebb may read Secrets in (`ebb serve --secret-namespaces`, the chart's
/// `secretAccess.namespaces`): every namespace, the default, which needs a cluster-wide grant;
/// or a listed set, granted by a Role in each, so that a compromised ebb reads no other
/// namespace's Secrets. KEDA calls the same trade-off restrict-secret-access.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SecretAccess {
    /// Any namespace's Secrets (a ScaledTarget still names only Secrets of its own namespace).
    #[default]
    Any,
    /// Only these namespaces' Secrets.
    Namespaces(BTreeSet<String>),
}

impl SecretAccess {
    /// `Any` for an empty list.
    pub fn from_namespaces(namespaces: &[String]) -> Self {
        if namespaces.is_empty() {
            Self::Any
        } else {
            Self::Namespaces(namespaces.iter().cloned().collect())
        }
    }

    /// Whether Secret `name` of `namespace` may be read; if not, what to change.
    pub fn check(&self, namespace: &str, name: &str) -> Result<()> {
        match self {
            Self::Namespaces(allowed) if !allowed.contains(namespace) => {
                let list: Vec<&str> = allowed.iter().map(String::as_str).collect();
                Err(SourceError::SecretRestricted(format!(
                    "secret {namespace}/{name}: ebb reads Secrets only in {} \
                     (--secret-namespaces); add {namespace} to the chart's \
                     secretAccess.namespaces, which grants a Role there",
                    list.join(", ")
                )))
            }
            _ => Ok(()),
        }
    }
}

/// Reads Secrets for ebb: the one place that fetches them, within [`SecretAccess`].
#[derive(Clone)]
pub struct Secrets {
    client: kube::Client,
    access: SecretAccess,
}

impl Secrets {
    pub fn new(client: kube::Client, access: SecretAccess) -> Self {
        Self { client, access }
    }

    /// The same client within `access`.
    pub fn with_access(self, access: SecretAccess) -> Self {
        Self { access, ..self }
    }

    /// The namespaces it may read in.
    pub fn access(&self) -> &SecretAccess {
        &self.access
    }

    /// The `data` of Secret `name` in `namespace`. A missing Secret is
    /// [`SourceError::SecretNotFound`] (the user named it), a refused read an authentication
    /// error (ebb's RBAC), one outside [`SecretAccess`] [`SourceError::SecretRestricted`].
    pub async fn data(&self, namespace: &str, name: &str) -> Result<SecretData> {
        self.access.check(namespace, name)?;
        let api = kube::Api::<Secret>::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(Some(secret)) => Ok(secret.data.unwrap_or_default()),
            Ok(None) => Err(SourceError::SecretNotFound(format!(
                "secret {namespace}/{name} not found: create it in the ScaledTarget's namespace"
            ))),
            Err(kube::Error::Api(status)) if status.code == 401 || status.code == 403 => {
                Err(SourceError::Auth(format!(
                    "reading secret {namespace}/{name}: {}",
                    status.message
                )))
            }
            Err(e) => Err(SourceError::Unreachable(format!(
                "reading secret {namespace}/{name}: {e}"
            ))),
        }
    }
}

/// Names the Secret and the keys it holds (never their values) in a configuration error found
/// in its data, so that the status says which object to fix and what it has instead.
pub(crate) fn in_secret(e: SourceError, name: &str, data: &SecretData) -> SourceError {
    match e {
        SourceError::Config(m) => {
            let keys: Vec<&str> = data.keys().map(String::as_str).collect();
            SourceError::Config(format!(
                "secret {name} (keys: {}): {m}",
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.join(", ")
                }
            ))
        }
        e => e,
    }
}

#[cfg(test)]
pub(crate) fn data(pairs: &[(&str, &str)]) -> SecretData {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_access_allows_the_listed_namespaces_only() {
        assert!(SecretAccess::from_namespaces(&[]).check("any", "s").is_ok());
        let only = SecretAccess::from_namespaces(&["a".into()]);
        assert!(only.check("a", "s").is_ok());
        let refused = only.check("b", "creds").unwrap_err();
        assert_eq!(
            refused.reason(),
            crate::engine::conditions::SECRET_RESTRICTED
        );
        assert!(
            refused
                .to_string()
                .contains("secret b/creds: ebb reads Secrets only in a")
        );
    }

    use super::*;

    #[test]
    fn tls_material_needs_cert_and_key_together() {
        let only_cert = data(&[(KEY_TLS_CERT, "pem")]);
        assert!(matches!(
            TlsMaterial::from_secret_data(&only_cert),
            Err(SourceError::Config(_))
        ));
        let both = data(&[
            (KEY_CA, "ca\n"),
            (KEY_TLS_CERT, "c"),
            (KEY_TLS_KEY, "PRIVATE-KEY"),
        ]);
        let tls = TlsMaterial::from_secret_data(&both).unwrap();
        assert_eq!(tls.ca_pem.as_deref(), Some("ca"));
        assert_eq!(tls.client, Some(("c".into(), "PRIVATE-KEY".into())));
        assert!(!format!("{tls:?}").contains("PRIVATE-KEY"));
    }

    #[test]
    fn a_bad_ca_is_a_config_error() {
        crate::install_crypto_provider();
        let tls = TlsMaterial {
            ca_pem: Some("not a pem".into()),
            client: None,
        };
        assert!(matches!(
            tls.apply(reqwest::Client::builder()),
            Err(SourceError::Config(_))
        ));
    }
}
