//! A certificate authority in memory, for `folio dev --secure` and for tests: it issues node
//! certificates that carry a Folio node identity and the names and addresses peers dial.
//! Production deployments bring their own CA (cert-manager, Vault, an internal PKI, or the
//! README's openssl commands); the node only needs the PEM files.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::identity::NodeIdentity;

/// A CA: its certificate and the key that signs with it.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key, PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn err(e: rcgen::Error) -> String {
    format!("certificate: {e}")
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Result<Ca, String> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(err)?;
        Ok(Ca {
            issuer: CertifiedIssuer::self_signed(p, key).map_err(err)?,
        })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A certificate for a server and client both: `identity` as its URI name (a node), and
    /// `hosts` (DNS names or IP addresses) as the names it answers to.
    pub fn issue(
        &self,
        identity: Option<NodeIdentity>,
        hosts: &[String],
    ) -> Result<Issued, String> {
        let mut p = CertificateParams::new(hosts.to_vec()).map_err(err)?;
        let mut dn = DistinguishedName::new();
        let cn = match identity {
            Some(id) => id.to_string(),
            None => hosts
                .first()
                .cloned()
                .unwrap_or_else(|| "folio client".into()),
        };
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        if let Some(id) = identity {
            let uri = id.to_string().try_into().map_err(err)?;
            p.subject_alt_names.push(SanType::URI(uri));
        }
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(err)?;
        let cert = p.signed_by(&key, &self.issuer).map_err(err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsMaterial;

    #[test]
    fn issued_certificates_name_their_node() {
        let ca = Ca::new("test CA").unwrap();
        let id = NodeIdentity::Member { group: 3, node: 2 };
        let c = ca
            .issue(Some(id), &["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        let m = TlsMaterial::from_pem(&c.cert_pem, &c.key_pem, &ca.cert_pem()).unwrap();
        assert_eq!(m.identity, Some(id));
        assert!(m.check_identity(id).is_ok());
        assert!(m
            .check_identity(NodeIdentity::Member { group: 3, node: 1 })
            .is_err());
        let plain = ca.issue(None, &["localhost".into()]).unwrap();
        let m = TlsMaterial::from_pem(&plain.cert_pem, &plain.key_pem, &ca.cert_pem()).unwrap();
        assert_eq!(m.identity, None);
        assert!(m.http_server().is_ok());
    }
}
