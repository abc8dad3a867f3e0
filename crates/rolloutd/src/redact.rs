//! Credentials out of logs and answers: every URL-shaped part of a text
//! (any scheme, mistyped ones included) loses its user information and the
//! values of password-like query parameters.

/// Query parameters whose values are secrets.
const SECRET_PARAMS: [&str; 9] = [
    "password",
    "passwd",
    "pwd",
    "sslpassword",
    "secret",
    "token",
    "access_token",
    "api_key",
    "key",
];

/// `text` with the credentials of every URL in it replaced by `***`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The URL runs from its scheme (letters, digits, + - .) to the
        // first character that cannot be in one.
        let scheme_start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)))
            .map_or(0, |i| i + 1);
        let end = rest[at + 3..]
            .find(|c: char| c.is_whitespace() || "\"'<>`".contains(c))
            .map_or(rest.len(), |i| at + 3 + i);
        out.push_str(&rest[..scheme_start]);
        out.push_str(&redact_url(&rest[scheme_start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// One URL: `scheme://***@host/path?password=***`.
fn redact_url(url: &str) -> String {
    let Some(sep) = url.find("://") else {
        return url.to_string();
    };
    let (scheme, after) = url.split_at(sep + 3);
    // The authority ends at the first '/', '?' or '#'; user information is
    // what comes before its last '@'.
    let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, tail) = after.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(i) => format!("***{}", &authority[i..]),
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                        format!("{k}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            let mut t = format!("{path}?{}", query.join("&"));
            if let Some(f) = fragment {
                t.push('#');
                t.push_str(f);
            }
            t
        }
        None => tail.to_string(),
    };
    format!("{scheme}{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_never_show() {
        for (given, shown) in [
            (
                "postgres://app:s3cret@db:5432/r",
                "postgres://***@db:5432/r",
            ),
            ("postgress://admin:S3cretPw@db/r", "postgress://***@db/r"),
            ("postgres://app@db/r", "postgres://***@db/r"),
            (
                "postgres://db/r?user=app&password=s3cret&sslmode=require",
                "postgres://db/r?user=app&password=***&sslmode=require",
            ),
            (
                "cannot connect to postgres://a:b@h/d: refused; also mysql://x:y@z",
                "cannot connect to postgres://***@h/d: refused; also mysql://***@z",
            ),
            ("sqlite://rolloutd.db", "sqlite://rolloutd.db"),
            ("no url here", "no url here"),
            (
                "https://hooks.example/x?token=abc#frag",
                "https://hooks.example/x?token=***#frag",
            ),
            ("\"s3://k:v@bucket/p\"", "\"s3://***@bucket/p\""),
        ] {
            assert_eq!(redact(given), shown, "{given}");
        }
    }
}
