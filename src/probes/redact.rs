//! What a probe may say about itself and about the server it probed.
//!
//! Every probe message ends up in places many more people read than can read the experiment:
//! `status.message`, Warning Events, `faultline run --wait` output, CI logs and the reports.
//! So:
//!
//! - a URL is shown [redacted](url): the password of its userinfo and the values of query
//!   parameters named like credentials become `xxxxx` (the password as Go's
//!   `url.URL.Redacted()` does it), so that a probe of `http://admin:pw@host/?token=t` does
//!   not publish `pw` or `t`;
//! - text the probed server chose (an error string, a body excerpt, a label value) is made
//!   [printable]: a control character would drive the terminal of whoever reads the message
//!   (clear the screen, recolour, ring), and a NUL cuts the text short for C readers.
//!
//! Pure; no IO.

use reqwest::Url;

/// What a secret is replaced with; the same marker as Go's `url.URL.Redacted()`.
pub const MASK: &str = "xxxxx";

/// Query parameter names (lowercase, without `-` and `_`) whose values are credentials.
const SECRET_PARAMETERS: &[&str] = &[
    "accesstoken",
    "apikey",
    "auth",
    "authorization",
    "clientsecret",
    "credential",
    "key",
    "passwd",
    "password",
    "pwd",
    "secret",
    "sig",
    "signature",
    "token",
    "xamzcredential",
    "xamzsecuritytoken",
    "xamzsignature",
];
/// Name endings that make a parameter a credential too (`github_token`, `client-secret`,
/// `x-api-key`, `db_password`).
const SECRET_SUFFIXES: &[&str] = &["apikey", "password", "secret", "signature", "token"];

/// Whether a query parameter of this name carries a credential.
fn is_secret_parameter(name: &str) -> bool {
    let normal: String = name
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_PARAMETERS.contains(&normal.as_str())
        || SECRET_SUFFIXES.iter().any(|s| normal.ends_with(s))
}

/// Whether a request header of this name carries a credential: `Authorization`,
/// `Proxy-Authorization`, `Cookie`, or a name like a credential parameter's (`X-Api-Key`,
/// `X-Auth-Token`).
pub fn is_secret_header(name: &str) -> bool {
    ["authorization", "proxy-authorization", "cookie"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
        || is_secret_parameter(name)
}

/// `url` as messages show it: the userinfo's password and the values of credential-like query
/// parameters replaced by [`MASK`]; everything else (user name, host, path, other parameters)
/// as it was, so the message still says which endpoint failed.
pub fn url(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Only fails for URLs that cannot have a password, which this one has.
        let _ = shown.set_password(Some(MASK));
    }
    if let Some(query) = url.query() {
        let redacted = redact_query(query);
        if redacted != query {
            shown.set_query(Some(&redacted));
        }
    }
    shown.to_string()
}

/// Each `name=value` pair of a raw query, with the values of credentials masked; the rest keeps
/// its encoding byte for byte.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_parameter(&decode(name)) => format!("{name}={MASK}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn decode(name: &str) -> String {
    form_urlencoded::parse(name.as_bytes())
        .next()
        .map(|(name, _)| name.into_owned())
        .unwrap_or_default()
}

/// [`url`] for a URL as the user wrote it. One that does not parse is still redacted as far as
/// its shape allows (`scheme://user:password@`...), since the message quoting it says why it
/// does not parse.
pub fn url_text(text: &str) -> String {
    if let Ok(parsed) = Url::parse(text) {
        return url(&parsed);
    }
    let Some(start) = text.find("://").map(|i| i + 3) else {
        return text.to_string();
    };
    let rest = &text[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, format!("#{f}")),
                None => (query, String::new()),
            };
            format!("{path}?{}{fragment}", redact_query(query))
        }
        None => tail.to_string(),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:{MASK}@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    format!("{}{authority}{tail}", &text[..start])
}

/// `text` with every character that would act on a reader's terminal or parser rather than be
/// read shown as a Rust escape (`\u{1b}`, `\n`, `\0`): C0 and C1 controls, DEL, and the Unicode
/// bidirectional overrides that make text display in another order than it is. A tab stays.
pub fn printable(text: &str) -> String {
    if !text.chars().any(needs_escape) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\t') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(text: &str) -> String {
        url(&Url::parse(text).unwrap())
    }

    #[test]
    fn the_password_of_userinfo_is_masked_as_go_does() {
        assert_eq!(
            shown("http://admin:s3cretPassw0rd@127.0.0.1:18001/healthz"),
            "http://admin:xxxxx@127.0.0.1:18001/healthz"
        );
        // A user name alone is no secret (Go keeps it too).
        assert_eq!(shown("http://admin@h/"), "http://admin@h/");
        assert_eq!(shown("https://h:8443/x?y=1"), "https://h:8443/x?y=1");
    }

    #[test]
    fn credential_like_query_parameters_are_masked_and_others_kept() {
        // Each row: the URL, what messages show.
        let rows = [
            (
                "http://h/healthz?token=TOPSECRETTOKEN",
                "http://h/healthz?token=xxxxx",
            ),
            (
                "http://h/?access_token=a&api_key=b&apikey=c&key=d&secret=e&password=f&sig=g&signature=h",
                "http://h/?access_token=xxxxx&api_key=xxxxx&apikey=xxxxx&key=xxxxx&secret=xxxxx&password=xxxxx&sig=xxxxx&signature=xxxxx",
            ),
            (
                "http://h/?X-Amz-Signature=abc&X-Amz-Date=20250101&github_token=t&Client-Secret=s",
                "http://h/?X-Amz-Signature=xxxxx&X-Amz-Date=20250101&github_token=xxxxx&Client-Secret=xxxxx",
            ),
            // Names that only look alike, and encodings, are left as they were.
            (
                "http://h/?keyword=a%20b&monkey=1&tokens_left=3",
                "http://h/?keyword=a%20b&monkey=1&tokens_left=3",
            ),
            ("http://h/?t%6Fken=x&flag", "http://h/?t%6Fken=xxxxx&flag"),
        ];
        for (input, expected) in rows {
            assert_eq!(shown(input), expected, "{input}");
        }
    }

    #[test]
    fn credential_headers_are_known_by_name() {
        for name in [
            "Authorization",
            "proxy-authorization",
            "Cookie",
            "X-Api-Key",
            "X-Auth-Token",
        ] {
            assert!(is_secret_header(name), "{name}");
        }
        for name in ["Accept", "X-Test", "User-Agent", "Host"] {
            assert!(!is_secret_header(name), "{name}");
        }
    }

    #[test]
    fn a_url_that_does_not_parse_is_redacted_by_its_shape() {
        assert_eq!(
            url_text("http://admin:pw@exa mple/?token=t#f"),
            "http://admin:xxxxx@exa mple/?token=xxxxx#f"
        );
        assert_eq!(url_text("not a url"), "not a url");
        assert_eq!(
            url_text("http://admin:pw@127.0.0.1:1/"),
            "http://admin:xxxxx@127.0.0.1:1/"
        );
    }

    #[test]
    fn control_characters_from_servers_become_visible_escapes() {
        assert_eq!(
            printable("boom\u{1b}[2J\u{1b}[31m\u{7}\0\u{8}end"),
            "boom\\u{1b}[2J\\u{1b}[31m\\u{7}\\u{0}\\u{8}end"
        );
        assert_eq!(printable("two\nlines\r"), "two\\nlines\\r");
        assert_eq!(
            printable("tab\tstays, ünïcode too"),
            "tab\tstays, ünïcode too"
        );
        assert_eq!(
            printable("\u{9b}31m \u{202e}txt"),
            "\\u{9b}31m \\u{202e}txt"
        );
        // Already escaped text stays as it is, so escaping twice is harmless.
        let once = printable("a\u{1b}b");
        assert_eq!(printable(&once), once);
    }
}
