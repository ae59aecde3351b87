//! TLS 1.3 configuration for QUIC with ed25519 identities and mutual authentication.
//!
//! Each endpoint presents a self-signed X.509 certificate whose subject public key *is* its
//! ed25519 identity key (as in libp2p-tls and iroh). No certificate authorities: the dialer pins
//! the [`NodeId`] it expects (carried in the TLS server name, as iroh does) and refuses any other
//! key during the handshake; the listener accepts
//! any valid ed25519 certificate and learns the dialer's [`NodeId`] from it ([`peer_id`]).
//! Possession of the key is proven by the TLS 1.3 `CertificateVerify` signature, which is the
//! only signature scheme offered: `ed25519`. Session resumption is disabled so every connection
//! re-proves the pinned identity.
//!
//! The ALPN carries the protocol version: [`ALPN`].

use std::sync::{Arc, Mutex};

use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};

use crate::identity::{NODE_ID_LEN, NodeId, SecretKey};

/// ALPN protocol identifier; bump the trailing number for incompatible wire changes.
pub const ALPN: &[u8] = b"/granary/2";

/// Domain under which dialers name the node they pin (see [`server_name`]).
pub const SERVER_NAME: &str = "granary.invalid";

/// DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410), followed by the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The key could not be encoded as PKCS#8.
    #[error("encoding the identity key as PKCS#8 failed")]
    KeyEncoding,
    /// Certificate generation failed.
    #[error("generating the self-signed certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("building the rustls configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Why a peer's certificate was refused.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerCertError {
    /// No certificate was presented.
    #[error("peer presented no certificate")]
    Missing,
    /// The certificate could not be parsed.
    #[error("peer certificate is not valid X.509")]
    Unparseable,
    /// The certificate's key is not ed25519.
    #[error("peer certificate key is not ed25519")]
    NotEd25519,
    /// The certificate's key is not the pinned node id.
    #[error("peer is {actual}, expected {expected}")]
    UnexpectedPeer {
        /// The node id the dialer pinned.
        expected: NodeId,
        /// The node id the peer proved.
        actual: NodeId,
    },
}

/// A self-signed certificate and its key, made from a [`SecretKey`].
#[derive(Clone)]
pub struct TlsIdentity {
    id: NodeId,
    cert: CertificateDer<'static>,
    pkcs8: Arc<Vec<u8>>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Makes the self-signed certificate for `secret`.
    pub fn new(secret: &SecretKey) -> Result<Self, TlsError> {
        let pkcs8 = secret.to_pkcs8_der().ok_or(TlsError::KeyEncoding)?;
        let key_der = PrivatePkcs8KeyDer::from(pkcs8.as_slice());
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key_der, &rcgen::PKCS_ED25519)?;
        let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, secret.public().to_string());
        let cert = params.self_signed(&key)?;
        Ok(Self {
            id: secret.public(),
            cert: cert.der().clone(),
            pkcs8: Arc::new(pkcs8),
        })
    }

    /// The node id this certificate carries.
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// The DER certificate.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.as_ref().clone()))
    }
}

/// Extracts the ed25519 identity from an X.509 certificate.
pub fn node_id_from_cert(cert: &CertificateDer<'_>) -> Result<NodeId, PeerCertError> {
    let parsed = rustls::server::ParsedCertificate::try_from(cert)
        .map_err(|_| PeerCertError::Unparseable)?;
    let spki = parsed.subject_public_key_info();
    let spki: &[u8] = spki.as_ref();
    let key = spki
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .filter(|k| k.len() == NODE_ID_LEN)
        .ok_or(PeerCertError::NotEd25519)?;
    let mut b = [0u8; NODE_ID_LEN];
    b.copy_from_slice(key);
    NodeId::from_bytes(&b).map_err(|_| PeerCertError::NotEd25519)
}

/// The node id of an authenticated peer, from its certificate chain (as quinn reports it).
pub fn peer_id(certs: &[CertificateDer<'_>]) -> Result<NodeId, PeerCertError> {
    node_id_from_cert(certs.first().ok_or(PeerCertError::Missing)?)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn to_rustls(e: PeerCertError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

fn verify_ed25519(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ));
    }
    rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
}

/// Builds the listener's configuration: requires a client certificate, accepts any ed25519 key.
pub fn server_config(identity: &TlsIdentity) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(AnyEd25519Client {
        algs: provider.signature_verification_algorithms,
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert.clone()], identity.key())?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.max_early_data_size = 0;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(cfg)
}

/// Refusals recorded by dialer verifiers, keyed by the expected node id, so that a failed
/// `connect` can report *why* the handshake was refused ([`take_refusal`]). Bounded.
static REFUSALS: Mutex<Vec<(NodeId, PeerCertError)>> = Mutex::new(Vec::new());
const MAX_REFUSALS: usize = 256;

fn record_refusal(expected: NodeId, e: PeerCertError) -> rustls::Error {
    if let Ok(mut g) = REFUSALS.lock() {
        if g.len() >= MAX_REFUSALS {
            g.remove(0);
        }
        g.push((expected, e));
    }
    to_rustls(e)
}

/// Takes the most recent reason a handshake with `expected` was refused by this process's
/// dialer verifier, if any.
pub fn take_refusal(expected: &NodeId) -> Option<PeerCertError> {
    let mut g = REFUSALS.lock().ok()?;
    let pos = g.iter().rposition(|(id, _)| id == expected)?;
    let (_, e) = g.remove(pos);
    g.retain(|(id, _)| id != expected);
    Some(e)
}

/// The server name a dialer uses to reach `expected`: the id's 64 hex digits split into two
/// 32-character DNS labels, under `granary.invalid`. The verifier pins the id named here.
pub fn server_name(expected: &NodeId) -> String {
    let h = expected.to_string();
    format!("{}.{}.{SERVER_NAME}", &h[..32], &h[32..])
}

/// The node id a [`server_name`] pins.
pub fn expected_from_server_name(name: &ServerName<'_>) -> Option<NodeId> {
    let ServerName::DnsName(dns) = name else {
        return None;
    };
    let s = dns.as_ref().strip_suffix(SERVER_NAME)?.strip_suffix('.')?;
    let (a, b) = s.split_once('.')?;
    format!("{a}{b}").parse().ok()
}

/// Builds a dialer configuration. The peer id is pinned per connection through the server name
/// (see [`server_name`]); a peer presenting any other key is refused during the handshake, and
/// [`take_refusal`] then explains why.
pub fn client_config(identity: &TlsIdentity) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedServer {
        algs: provider.signature_verification_algorithms,
    });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![identity.cert.clone()], identity.key())?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    cfg.enable_early_data = false;
    Ok(cfg)
}

#[derive(Debug)]
struct PinnedServer {
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let expected = expected_from_server_name(server_name)
            .ok_or_else(|| rustls::Error::InvalidCertificate(CertificateError::NotValidForName))?;
        let actual = node_id_from_cert(end_entity).map_err(|e| record_refusal(expected, e))?;
        if actual != expected {
            return Err(record_refusal(
                expected,
                PeerCertError::UnexpectedPeer { expected, actual },
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_ed25519(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

#[derive(Debug)]
struct AnyEd25519Client {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyEd25519Client {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        node_id_from_cert(end_entity).map_err(to_rustls)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_ed25519(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_the_node_id() {
        let k = SecretKey::from_bytes(&[3; 32]);
        let id = TlsIdentity::new(&k).unwrap();
        assert_eq!(node_id_from_cert(id.certificate()).unwrap(), k.public());
        assert_eq!(peer_id(&[]), Err(PeerCertError::Missing));
        assert_eq!(
            node_id_from_cert(&CertificateDer::from(vec![0x30, 0x00])),
            Err(PeerCertError::Unparseable)
        );
        server_config(&id).unwrap();
        client_config(&id).unwrap();
        let name = server_name(&k.public());
        let sn = ServerName::try_from(name.as_str()).unwrap();
        assert_eq!(expected_from_server_name(&sn), Some(k.public()));
        assert_eq!(
            expected_from_server_name(&ServerName::try_from("granary.invalid").unwrap()),
            None
        );
    }

    /// Drives a full in-memory TLS 1.3 handshake between rustls connections (no sockets).
    fn handshake(server_key: &SecretKey, pinned: NodeId) -> Result<(), rustls::Error> {
        let server_id = TlsIdentity::new(server_key).unwrap();
        let client_id = TlsIdentity::new(&SecretKey::from_bytes(&[9; 32])).unwrap();
        let ccfg = client_config(&client_id).unwrap();
        let scfg = server_config(&server_id).unwrap();
        let mut client = rustls::ClientConnection::new(
            Arc::new(ccfg),
            ServerName::try_from(server_name(&pinned)).unwrap(),
        )
        .unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(scfg)).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            if !buf.is_empty() {
                server.read_tls(&mut &buf[..]).unwrap();
                server.process_new_packets()?;
            }
            let mut buf = Vec::new();
            server.write_tls(&mut buf).unwrap();
            if !buf.is_empty() {
                client.read_tls(&mut &buf[..]).unwrap();
                client.process_new_packets()?;
            }
            if !client.is_handshaking() && !server.is_handshaking() {
                let certs = server.peer_certificates().unwrap();
                assert_eq!(peer_id(certs).unwrap(), client_id.node_id());
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn pinned_peer_is_accepted_and_impostor_refused() {
        let server = SecretKey::from_bytes(&[1; 32]);
        handshake(&server, server.public()).unwrap();
        assert_eq!(take_refusal(&server.public()), None);
        let expected = SecretKey::from_bytes(&[2; 32]).public();
        assert!(handshake(&server, expected).is_err());
        assert_eq!(
            take_refusal(&expected),
            Some(PeerCertError::UnexpectedPeer {
                expected,
                actual: server.public()
            })
        );
    }
}
