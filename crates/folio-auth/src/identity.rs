//! Who a node is, as its certificate says: a URI subject alternative name in the SPIFFE style,
//! `spiffe://folio/group/<group>/node/<node>` for a member of a write-tier group and
//! `spiffe://folio/registry/node/<node>` for a registry node. The CA that signs node
//! certificates vouches for these names; a node trusts a peer's claim to be node N of group G
//! because the CA said so, and then checks N against the group's current membership.

use std::fmt;

use rustls_pki_types::CertificateDer;

/// The URI prefix of every Folio node identity.
pub const SPIFFE_PREFIX: &str = "spiffe://folio/";

/// A node's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeIdentity {
    /// Node `node` of write-tier group `group`.
    Member { group: u64, node: u64 },
    /// Node `node` of the volume registry.
    Registry { node: u64 },
}

impl NodeIdentity {
    /// The identity `uri` names, if it is a Folio node identity.
    pub fn from_uri(uri: &str) -> Option<NodeIdentity> {
        let rest = uri.strip_prefix(SPIFFE_PREFIX)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let num = |s: &str| {
            // Canonical decimal only, so one identity has one spelling.
            if s.is_empty() || (s.len() > 1 && s.starts_with('0')) {
                return None;
            }
            s.parse::<u64>().ok()
        };
        match parts.as_slice() {
            ["group", g, "node", n] => Some(NodeIdentity::Member {
                group: num(g)?,
                node: num(n)?,
            }),
            ["registry", "node", n] => Some(NodeIdentity::Registry { node: num(n)? }),
            _ => None,
        }
    }

    /// The URI this identity is written as in a certificate.
    pub fn uri(&self) -> String {
        self.to_string()
    }

    /// The identity a certificate names. A certificate naming more than one is refused (`None`),
    /// as is one naming none.
    pub fn from_cert(cert: &CertificateDer<'_>) -> Option<NodeIdentity> {
        let cert = webpki::EndEntityCert::try_from(cert).ok()?;
        let mut ids = cert.valid_uri_names().filter_map(NodeIdentity::from_uri);
        let id = ids.next()?;
        match ids.next() {
            None => Some(id),
            Some(_) => None,
        }
    }

    /// The node id, whatever the group.
    pub fn node(&self) -> u64 {
        match *self {
            NodeIdentity::Member { node, .. } | NodeIdentity::Registry { node } => node,
        }
    }
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeIdentity::Member { group, node } => {
                write!(f, "{SPIFFE_PREFIX}group/{group}/node/{node}")
            }
            NodeIdentity::Registry { node } => write!(f, "{SPIFFE_PREFIX}registry/node/{node}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_and_strange_ones_are_refused() {
        for id in [
            NodeIdentity::Member { group: 7, node: 2 },
            NodeIdentity::Registry { node: 1 },
        ] {
            assert_eq!(NodeIdentity::from_uri(&id.uri()), Some(id));
        }
        for bad in [
            "spiffe://folio/group/7/node/",
            "spiffe://folio/group/07/node/2",
            "spiffe://folio/group/7/node/2/x",
            "spiffe://other/group/7/node/2",
            "spiffe://folio/registry/node/-1",
            "https://folio/group/7/node/2",
        ] {
            assert_eq!(NodeIdentity::from_uri(bad), None, "{bad}");
        }
    }
}
