//! The connection options libpq users write that tokio-postgres does not parse (`sslmode`'s
//! verifying modes, `sslrootcert`, `sslcert`, `sslkey`, `passfile`), taken out of a
//! connection string of either form — a URL's query or `keyword=value` pairs — before
//! tokio-postgres parses the rest; missing ones default from the environment as libpq's do
//! (`PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`, `PGPASSFILE`).

/// What the connection string (or the environment) says beyond what tokio-postgres reads.
#[derive(Debug, Default, PartialEq)]
pub(super) struct TlsOptions {
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
    pub passfile: Option<String>,
}

impl TlsOptions {
    fn take(&mut self, key: &str, value: String) -> bool {
        let slot = match key {
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            "passfile" => &mut self.passfile,
            _ => return false,
        };
        *slot = Some(value);
        true
    }

    /// Fill what the string left out from the environment (`PGSSLMODE`, ...).
    pub fn or_env(mut self, env: impl Fn(&str) -> Option<String>) -> Self {
        for (slot, var) in [
            (&mut self.sslmode, "PGSSLMODE"),
            (&mut self.sslrootcert, "PGSSLROOTCERT"),
            (&mut self.sslcert, "PGSSLCERT"),
            (&mut self.sslkey, "PGSSLKEY"),
            (&mut self.passfile, "PGPASSFILE"),
        ] {
            if slot.is_none() {
                *slot = env(var).filter(|v| !v.is_empty());
            }
        }
        self
    }
}

/// The connection string without our options, for tokio-postgres, and the options.
pub(super) fn split(connection: &str) -> Result<(String, TlsOptions), String> {
    let mut options = TlsOptions::default();
    if connection.starts_with("postgres://") || connection.starts_with("postgresql://") {
        let Some((base, query)) = connection.split_once('?') else {
            return Ok((connection.to_string(), options));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !options.take(&percent_decode(key)?, percent_decode(value)?) {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, options));
    }
    let mut kept = Vec::new();
    for (key, value) in keyword_pairs(connection)? {
        if !options.take(&key, value.clone()) {
            kept.push(format!(
                "{key}='{}'",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
    }
    Ok((kept.join(" "), options))
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid percent-encoding in {text:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} does not decode to UTF-8"))
}

/// `key = value` pairs as libpq reads them: values bare or single-quoted, `\` escaping.
fn keyword_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "missing \"=\" after {key:?} in the connection string"
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        let quoted = chars.next_if_eq(&'\'').is_some();
        loop {
            match chars.next() {
                Some('\\') => value.extend(chars.next()),
                Some('\'') if quoted => break,
                Some(c) if quoted || !c.is_whitespace() => value.push(c),
                None if quoted => {
                    return Err(format!(
                        "unterminated quoted value of {key:?} in the connection string"
                    ))
                }
                _ => break,
            }
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_keeps_what_tokio_postgres_reads_and_hands_over_the_rest() {
        let (rest, options) = split(
            "postgres://app@db:5432/shop?sslmode=verify-full&application_name=x\
             &sslrootcert=%2Fetc%2Fca.crt&sslcert=c.crt&sslkey=c.key&passfile=p",
        )
        .unwrap();
        assert_eq!(rest, "postgres://app@db:5432/shop?application_name=x");
        assert_eq!(
            options,
            TlsOptions {
                sslmode: Some("verify-full".into()),
                sslrootcert: Some("/etc/ca.crt".into()),
                sslcert: Some("c.crt".into()),
                sslkey: Some("c.key".into()),
                passfile: Some("p".into()),
            }
        );
        let (rest, options) = split("postgresql://db/shop?sslmode=require").unwrap();
        assert_eq!(
            (rest.as_str(), options.sslmode.as_deref()),
            ("postgresql://db/shop", Some("require"))
        );
        assert_eq!(split("postgres://db/shop").unwrap().0, "postgres://db/shop");
        assert!(split("postgres://db/shop?sslrootcert=%zz").is_err());
    }

    #[test]
    fn keyword_value_strings_are_split_with_their_quoting() {
        let (rest, options) = split(
            r"host=db  dbname = 'my shop' sslmode=verify-ca sslrootcert='/a b/ca.crt' password='it\'s'",
        )
        .unwrap();
        assert_eq!(rest, r"host='db' dbname='my shop' password='it\'s'");
        assert_eq!(options.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(options.sslrootcert.as_deref(), Some("/a b/ca.crt"));
        let parsed: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(parsed.get_dbname(), Some("my shop"));
        assert_eq!(parsed.get_password(), Some(&b"it's"[..]));
        assert!(split("host").is_err());
        assert!(split("host='db").is_err());
    }

    #[test]
    fn the_environment_fills_only_what_the_string_left_out() {
        let env = |var: &str| match var {
            "PGSSLMODE" => Some("verify-full".to_string()),
            "PGSSLROOTCERT" => Some("/env/ca.crt".to_string()),
            "PGSSLKEY" => Some(String::new()),
            _ => None,
        };
        let (_, options) = split("postgres://db/x?sslmode=require").unwrap();
        let options = options.or_env(env);
        assert_eq!(options.sslmode.as_deref(), Some("require"));
        assert_eq!(options.sslrootcert.as_deref(), Some("/env/ca.crt"));
        assert_eq!(options.sslkey, None);
    }
}
