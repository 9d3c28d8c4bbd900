//! Connection strings shown without their passwords: in logs, errors and `Debug`.

/// The connection string with its password replaced by `***`: the URL's (`app:***@db`) and
/// one given as an option (`?password=***`, `password=***` in keyword/value form).
pub fn mask_url(url: &str) -> String {
    static IN_QUERY: std::sync::LazyLock<regex_lite::Regex> = std::sync::LazyLock::new(|| {
        regex_lite::Regex::new(r"([?&])password=[^&]*").expect("a valid pattern")
    });
    static KEYWORD: std::sync::LazyLock<regex_lite::Regex> = std::sync::LazyLock::new(|| {
        regex_lite::Regex::new(r"(^|\s)password\s*=\s*('(?:\\.|[^'\\])*'|(?:\\.|[^\s\\])*)")
            .expect("a valid pattern")
    });
    match url.split_once("://") {
        Some((scheme, rest)) => {
            // Credentials end at an `@`; a password may hold `@`, `/` or `?` unencoded, so
            // the last `@` before the query that follows the first one.
            let end = rest.find('@').map(|first| {
                let query = rest[first..].find('?').map_or(rest.len(), |q| first + q);
                rest[..query].rfind('@').unwrap_or(first)
            });
            let rest = match end.map(|at| rest.split_at(at)) {
                Some((credentials, after)) => match credentials.split_once(':') {
                    Some((user, _password)) => format!("{user}:***{after}"),
                    None => rest.to_string(),
                },
                None => rest.to_string(),
            };
            let masked = IN_QUERY.replace_all(&rest, "${1}password=***");
            format!("{scheme}://{masked}")
        }
        None => KEYWORD.replace_all(url, "${1}password=***").into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(mask_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(mask_url("postgresql://u:p@h"), "postgresql://u:***@h");
        assert_eq!(mask_url("host=db user=app"), "host=db user=app");
        assert_eq!(
            mask_url("postgres://app:p@ss@db1,db2/x?sslmode=require&password=p2&x=1"),
            "postgres://app:***@db1,db2/x?sslmode=require&password=***&x=1"
        );
        assert_eq!(
            mask_url(r"host=db password = 'it\'s secret' user=app"),
            "host=db password=*** user=app"
        );
        assert_eq!(mask_url("password=s3cret host=db"), "password=*** host=db");
        assert_eq!(
            mask_url("postgres://app:pa/ss@db/x"),
            "postgres://app:***@db/x"
        );
        assert_eq!(
            mask_url("postgres://db/x?password=ab&cd=1"),
            "postgres://db/x?password=***&cd=1"
        );
        assert_eq!(mask_url(r"password=a\ b host=db"), "password=*** host=db");
        assert_eq!(
            mask_url("postgres://db/x?application_name=me@there"),
            "postgres://db/x?application_name=me@there"
        );
        assert_eq!(
            mask_url("postgres://app:p?w@db/x?a=b@c"),
            "postgres://app:***@db/x?a=b@c"
        );
    }
}
