//! Host name overrides for probes: names resolved from a table before falling back to the
//! system resolver. The sandbox fills it with its Services (`web.default.svc` → a ready pod's
//! IP), standing in for cluster DNS; a controller in a real cluster never sets it. A controller
//! run as its own process next to the sandbox reads the same table from the file the sandbox
//! writes, named by `FAULTLINE_PROBE_HOSTS_FILE` (lines of `name address`).

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

/// The environment variable naming a hosts file for probes (see the module doc).
pub const PROBE_HOSTS_FILE_ENV: &str = "FAULTLINE_PROBE_HOSTS_FILE";

/// `name address` lines, sorted, one per address.
pub fn render(table: &HashMap<String, Vec<IpAddr>>) -> String {
    let mut lines: Vec<String> = table
        .iter()
        .flat_map(|(name, ips)| ips.iter().map(move |ip| format!("{name} {ip}")))
        .collect();
    lines.sort();
    lines.into_iter().map(|l| l + "\n").collect()
}

/// Reads `name address` lines; anything else (comments, blank or malformed lines) is skipped.
pub fn parse(text: &str) -> HashMap<String, Vec<IpAddr>> {
    let mut table: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some(name), Some(ip)) = (words.next(), words.next())
            && !name.starts_with('#')
            && let Ok(ip) = ip.parse()
        {
            table.entry(name.to_string()).or_default().push(ip);
        }
    }
    table
}

/// When `FAULTLINE_PROBE_HOSTS_FILE` is set: installs a table read from that file and keeps it
/// in step with the file (checked every second) for the life of the runtime.
pub fn install_from_env() {
    let Some(path) = std::env::var_os(PROBE_HOSTS_FILE_ENV).map(std::path::PathBuf::from) else {
        return;
    };
    let hosts = StaticHosts::default();
    if install(hosts.clone()).is_err() {
        return;
    }
    tracing::info!(file = %path.display(), "probes resolve names through a hosts file first");
    tokio::spawn(async move {
        let mut last = None;
        loop {
            if let Ok(text) = tokio::fs::read_to_string(&path).await
                && last.as_ref() != Some(&text)
            {
                hosts.replace(parse(&text));
                last = Some(text);
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
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

    #[test]
    fn a_table_survives_its_file_form() {
        let ip: IpAddr = "10.244.1.5".parse().unwrap();
        let other: IpAddr = "10.244.2.7".parse().unwrap();
        let table = HashMap::from([("web.default.svc".to_string(), vec![ip, other])]);
        let text = render(&table);
        assert_eq!(
            text,
            "web.default.svc 10.244.1.5\nweb.default.svc 10.244.2.7\n"
        );
        let mut back = parse(&format!("# a comment\n\nnot-an-address x\n{text}"));
        back.values_mut().for_each(|ips| ips.sort());
        assert_eq!(back, table);
    }
}
