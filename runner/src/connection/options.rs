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
    /// The field for `key`, if it is one of ours.
    fn slot(&mut self, key: &str) -> Option<&mut Option<String>> {
        match key {
            "sslmode" => Some(&mut self.sslmode),
            "sslrootcert" => Some(&mut self.sslrootcert),
            "sslcert" => Some(&mut self.sslcert),
            "sslkey" => Some(&mut self.sslkey),
            "passfile" => Some(&mut self.passfile),
            _ => None,
        }
    }

    /// Keep `value` if `key` is ours (an empty value: unset, as in libpq).
    fn take(
        &mut self,
        key: &str,
        value: impl FnOnce() -> Result<String, String>,
    ) -> Result<bool, String> {
        let Some(slot) = self.slot(key) else {
            return Ok(false);
        };
        let value = value()?;
        *slot = (!value.is_empty()).then_some(value);
        Ok(true)
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

/// The connection string without our options, for tokio-postgres, and the options. Errors
/// never quote a value: it may be a password.
pub(super) fn split(connection: &str) -> Result<(String, TlsOptions), String> {
    let mut options = TlsOptions::default();
    if connection.starts_with("postgres://") || connection.starts_with("postgresql://") {
        // As tokio-postgres reads a URL, credentials end at the first `@` (a password may hold
        // `?` or `/`): the query starts at the first `?` after it.
        let after_credentials = connection.find('@').map_or(0, |at| at + 1);
        let Some(mark) = connection[after_credentials..].find('?') else {
            return Ok((connection.to_string(), options));
        };
        let (base, query) = connection.split_at(after_credentials + mark);
        let query = &query[1..];
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(key).map_err(|e| format!("a parameter's name: {e}"))?;
            let taken = options.take(&key, || {
                percent_decode(value).map_err(|e| format!("the value of {key}: {e}"))
            })?;
            if !taken {
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
        if !options.take(&key, || Ok(value.clone()))? {
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
                .ok_or_else(|| format!("invalid percent-encoding at byte {i}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "it does not decode to UTF-8".to_string())
}

/// `key = value` pairs as libpq reads them: values bare or single-quoted, `\` escaping.
fn keyword_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    let mut position = 0;
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        position += 1;
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            // The word may be half of a password with a space in it: not quoted back.
            return Err(format!(
                "missing \"=\" in word {position} of the connection string"
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
                        "unterminated quoted value in word {position} of the connection string"
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
        let bad = split("postgres://db/shop?password=ab%zz&sslrootcert=%zz").unwrap_err();
        assert!(!bad.contains("ab") && bad.contains("sslrootcert"), "{bad}");
        // A password holding `?` and `/`: the query is after the credentials.
        let (rest, options) = split("postgres://app:p?a/ss@db/x?sslmode=require").unwrap();
        assert_eq!(
            (rest.as_str(), options.sslmode.as_deref()),
            ("postgres://app:p?a/ss@db/x", Some("require"))
        );
        assert_eq!(
            split("postgres://db/x?sslrootcert=").unwrap().1.sslrootcert,
            None
        );
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
        let bad = split("password=half secret host=db").unwrap_err();
        assert!(!bad.contains("secret") && bad.contains("word 2"), "{bad}");
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
