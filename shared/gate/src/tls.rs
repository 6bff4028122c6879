//! Memorystore's in-transit encryption, accepted without weakening it (ADR 48).
//!
//! Memorystore signs each instance's server certificate with a CA of that instance's own (its
//! PEM is a Terraform output, `REDIS_CA_CERT`), and puts the instance's IP address only in the
//! subject's common name: the certificate has no subject alternative name. rustls (webpki)
//! reads names only from SANs, so the standard check refuses it with "not valid for name".
//!
//! The rule we apply instead:
//! 1. the chain must verify against the configured CA and nothing else (not the system's
//!    roots): only Google, holding that per-instance CA's key, can issue such a certificate;
//! 2. a certificate with SANs must match the address we dial by its SANs (the standard rule);
//! 3. a certificate without any SAN must carry exactly that address as its common name.
//!
//! [`InstanceVerifier`] implements the rule; [`check_server`] runs a full handshake with it
//! whenever the gate connects. The Redis client's own connections (and reconnections) verify
//! the chain against the same CA only: it offers no way to plug in a verifier, so its name
//! check is off and rule 2-3 is this module's job.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

/// Verifies a server certificate by the rule in the module's documentation.
#[derive(Debug)]
pub struct InstanceVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl InstanceVerifier {
    /// A verifier trusting exactly the certificates in `ca_pem`.
    pub fn new(ca_pem: &str) -> Result<Self, Error> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| Error::General(format!("REDIS_CA_CERT: {e}")))?;
            roots.add(cert)?;
        }
        if roots.is_empty() {
            return Err(Error::General("REDIS_CA_CERT holds no certificate".into()));
        }
        // The process's crypto provider, chosen as the Redis client's own config chooses it.
        let inner = WebPkiServerVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| Error::General(format!("REDIS_CA_CERT: {e}")))?;
        Ok(Self { inner })
    }
}

impl ServerCertVerifier for InstanceVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        // webpki checks the chain (rule 1) before the name: a name error means the chain held.
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if common_name_only(end_entity)?.as_deref() == Some(&*server_name.to_str()) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The subject's common name of a certificate that has no subject alternative name (rule 3);
/// `None` when it has SANs (rule 2 already decided) or no common name.
fn common_name_only(cert: &CertificateDer<'_>) -> Result<Option<String>, Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert)
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let has_san = cert
        .subject_alternative_name()
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?
        .is_some();
    if has_san {
        return Ok(None);
    }
    let mut names = cert.subject().iter_common_name();
    match (names.next(), names.next()) {
        (Some(cn), None) => Ok(cn.as_str().ok().map(str::to_owned)),
        _ => Ok(None),
    }
}

/// A TLS handshake with `host:port` under [`InstanceVerifier`]: `Ok` when the server proves
/// it is the instance, else the reason (an unknown CA, a wrong name, no TLS, unreachable).
pub async fn check_server(
    host: &str,
    port: u16,
    ca_pem: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let verifier = Arc::new(InstanceVerifier::new(ca_pem)?);
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| Error::General(format!("Redis host {host:?}: {e}")))?;
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(match e.into_inner() {
            Some(inner) => match inner.downcast::<Error>() {
                Ok(tls) => *tls,
                Err(other) => Error::General(other.to_string()),
            },
            None => Error::General("TLS handshake failed".into()),
        }),
        Err(_) => Err(Error::General("TLS handshake timed out".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
        SanType,
    };

    struct Ca {
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate signed by `ca` with this common name and these SANs.
    fn server(ca: &Ca, cn: &str, sans: Vec<SanType>) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.signed_by(&key, &ca.issuer).unwrap().der().clone()
    }

    fn verify(ca_pem: &str, cert: &CertificateDer<'_>, host: &str) -> Result<(), Error> {
        InstanceVerifier::new(ca_pem)
            .unwrap()
            .verify_server_cert(
                cert,
                &[],
                &ServerName::try_from(host).unwrap(),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    fn ip(s: &str) -> SanType {
        SanType::IpAddress(s.parse().unwrap())
    }

    #[test]
    fn memorystore_shape_is_accepted_for_its_own_address() {
        let instance = ca("Google Cloud Memorystore Redis Server CA");
        let cert = server(&instance, "10.0.0.3", vec![]);
        verify(&instance.pem, &cert, "10.0.0.3").expect("Memorystore's certificate");
    }

    #[test]
    fn memorystore_shape_for_another_address_is_refused() {
        let instance = ca("instance CA");
        let cert = server(&instance, "10.0.0.4", vec![]);
        let err = verify(&instance.pem, &cert, "10.0.0.3").unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidCertificate(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{err:?}"
        );
    }

    #[test]
    fn another_ca_is_refused_whatever_the_name() {
        let instance = ca("instance CA");
        let stranger = ca("someone else's CA");
        for cert in [
            server(&stranger, "10.0.0.3", vec![]),
            server(&stranger, "10.0.0.3", vec![ip("10.0.0.3")]),
        ] {
            let err = verify(&instance.pem, &cert, "10.0.0.3").unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidCertificate(CertificateError::UnknownIssuer)
                ),
                "{err:?}"
            );
        }
    }

    #[test]
    fn sans_decide_when_present_and_the_common_name_is_then_ignored() {
        let instance = ca("instance CA");
        verify(
            &instance.pem,
            &server(&instance, "anything", vec![ip("10.0.0.3")]),
            "10.0.0.3",
        )
        .expect("a matching SAN");
        // The CN names the address, but the SANs do not: refused, as webpki would.
        assert!(
            verify(
                &instance.pem,
                &server(&instance, "10.0.0.3", vec![ip("10.0.0.9")]),
                "10.0.0.3",
            )
            .is_err()
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_a_configuration_error() {
        assert!(InstanceVerifier::new("not a pem").is_err());
    }
}
