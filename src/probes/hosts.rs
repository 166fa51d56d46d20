//! Host name overrides for probes: names resolved from a table before falling back to the
//! system resolver. The sandbox fills it with its Services (`web.default.svc` → a ready pod's
//! IP), standing in for cluster DNS; a controller in a real cluster never sets it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock, RwLock};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A shared, updatable name → addresses table.
#[derive(Clone, Debug, Default)]
pub struct StaticHosts {
    table: Arc<RwLock<HashMap<String, Vec<IpAddr>>>>,
}

impl StaticHosts {
    /// Replaces the whole table.
    pub fn replace(&self, table: HashMap<String, Vec<IpAddr>>) {
        *self.table.write().expect("hosts lock") = table;
    }

    pub fn lookup(&self, name: &str) -> Option<Vec<IpAddr>> {
        let table = self.table.read().expect("hosts lock");
        table
            .get(name.trim_end_matches('.'))
            .filter(|a| !a.is_empty())
            .cloned()
    }
}

impl Resolve for StaticHosts {
    fn resolve(&self, name: Name) -> Resolving {
        let found = self.lookup(name.as_str());
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match found {
                // The port is replaced by the URL's port by the connector.
                Some(ips) => ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect(),
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

static PROBE_HOSTS: OnceLock<StaticHosts> = OnceLock::new();

/// Installs the process-wide overrides every probe client uses (the sandbox calls this once).
pub fn install(hosts: StaticHosts) -> Result<(), StaticHosts> {
    PROBE_HOSTS.set(hosts)
}

pub(crate) fn installed() -> Option<StaticHosts> {
    PROBE_HOSTS.get().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_from_the_table_with_or_without_a_trailing_dot() {
        let hosts = StaticHosts::default();
        let ip: IpAddr = "10.244.1.5".parse().unwrap();
        hosts.replace(HashMap::from([("web.default.svc".to_string(), vec![ip])]));
        assert_eq!(hosts.lookup("web.default.svc"), Some(vec![ip]));
        assert_eq!(hosts.lookup("web.default.svc."), Some(vec![ip]));
        assert_eq!(hosts.lookup("db.default.svc"), None);
    }
}
