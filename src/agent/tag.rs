//! The tag that names every kernel object faultline creates for an injection.
//!
//! Derived from the FaultInjection's UID so that it is stable across agent restarts and unique
//! per injection. It fits the tightest name limit we write into: iptables chain names (28
//! characters), as `FL-` + 24 hex digits.

use std::fmt;

/// 24 lowercase hex digits taken from an injection's UID (96 bits).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InjectionTag(String);

/// Prefix of nftables table names: `faultline_<tag>`.
pub const NFT_TABLE_PREFIX: &str = "faultline_";
/// Prefix of iptables chain names: `FL-<tag>`.
pub const IPTABLES_CHAIN_PREFIX: &str = "FL-";
const TAG_LEN: usize = 24;

impl InjectionTag {
    /// The tag of the injection with this UID. `None` when the UID has fewer than 24 hex digits.
    pub fn from_uid(uid: &str) -> Option<Self> {
        let hex: String = uid
            .chars()
            .filter(|c| c.is_ascii_hexdigit())
            .map(|c| c.to_ascii_lowercase())
            .take(TAG_LEN)
            .collect();
        (hex.len() == TAG_LEN).then_some(Self(hex))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `faultline_<tag>`: the nftables table of this injection.
    pub fn nft_table(&self) -> String {
        format!("{NFT_TABLE_PREFIX}{}", self.0)
    }

    /// `FL-<tag>`: the iptables chain of this injection.
    pub fn iptables_chain(&self) -> String {
        format!("{IPTABLES_CHAIN_PREFIX}{}", self.0)
    }

    /// A tag as written by [`InjectionTag::as_str`] (24 lowercase hex digits).
    pub fn parse(tag: &str) -> Option<Self> {
        Self::parse_exact(tag)
    }

    /// The tag in an nftables table name we created, `None` for anyone else's table.
    pub fn from_nft_table(name: &str) -> Option<Self> {
        Self::parse_exact(name.strip_prefix(NFT_TABLE_PREFIX)?)
    }

    /// The tag in an iptables chain name we created, `None` for anyone else's chain.
    pub fn from_iptables_chain(name: &str) -> Option<Self> {
        Self::parse_exact(name.strip_prefix(IPTABLES_CHAIN_PREFIX)?)
    }

    fn parse_exact(hex: &str) -> Option<Self> {
        (hex.len() == TAG_LEN
            && hex
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
        .then(|| Self(hex.to_string()))
    }
}

impl fmt::Display for InjectionTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f3c2a9e-7b1d-4c55-9a0e-2b6f8d4e1a37";

    #[test]
    fn tag_is_the_first_24_hex_digits_of_the_uid() {
        let tag = InjectionTag::from_uid(UID).unwrap();
        assert_eq!(tag.as_str(), "0f3c2a9e7b1d4c559a0e2b6f");
        assert_eq!(tag.nft_table(), "faultline_0f3c2a9e7b1d4c559a0e2b6f");
        assert_eq!(tag.iptables_chain(), "FL-0f3c2a9e7b1d4c559a0e2b6f");
        assert!(tag.iptables_chain().len() <= 28);
    }

    #[test]
    fn names_round_trip_and_foreign_names_are_not_ours() {
        let tag = InjectionTag::from_uid(UID).unwrap();
        assert_eq!(
            InjectionTag::from_nft_table(&tag.nft_table()),
            Some(tag.clone())
        );
        assert_eq!(
            InjectionTag::from_iptables_chain(&tag.iptables_chain()),
            Some(tag)
        );
        for foreign in [
            "filter",
            "faultline",
            "faultline_xyz",
            "faultline_0f3c",
            "FL-",
            "KUBE-SERVICES",
            "faultline_0F3C2A9E7B1D4C559A0E2B6F",
        ] {
            assert_eq!(InjectionTag::from_nft_table(foreign), None, "{foreign}");
            assert_eq!(
                InjectionTag::from_iptables_chain(foreign),
                None,
                "{foreign}"
            );
        }
    }

    #[test]
    fn short_uids_have_no_tag() {
        assert_eq!(InjectionTag::from_uid("abc-123"), None);
    }
}
