//! The password file libpq users keep (`~/.pgpass`, `PGPASSFILE` or `passfile=`): lines of
//! `host:port:database:user:password`, `*` matching anything in the first four fields, `\`
//! escaping `:` and `\`. As libpq does, a file others may read is ignored with a warning.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Whom a connection logs in as, where: what a line must match.
pub(super) struct Login<'a> {
    pub host: &'a str,
    pub port: u16,
    pub database: &'a str,
    pub user: &'a str,
}

/// The password of the first line of the file at `path` matching `login`; none when the file
/// is missing, unreadable or readable by others (said in a warning).
pub(super) fn lookup(path: &Path, login: &Login) -> Option<String> {
    let metadata = std::fs::metadata(path).ok()?;
    if !metadata.is_file() {
        return None;
    }
    if metadata.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "password file {} has group or world access and is ignored; permissions should be u=rw (0600) or less",
            path.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    find(&text, login)
}

fn find(text: &str, login: &Login) -> Option<String> {
    let port = login.port.to_string();
    let wanted = [login.host, port.as_str(), login.database, login.user];
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(fields)
        .find(|fields| {
            fields[..4]
                .iter()
                .zip(wanted)
                .all(|(field, wanted)| field == "*" || field == wanted)
        })
        .map(|mut fields| fields.swap_remove(4))
}

/// A line's five fields, unescaped; none for a line with fewer. As in libpq, the password
/// ends at its first unescaped `:`.
fn fields(line: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.extend(chars.next()),
            ':' if fields.len() == 5 => break,
            ':' => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    (fields.len() == 5).then_some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGIN: Login = Login {
        host: "db.example",
        port: 5432,
        database: "shop",
        user: "app",
    };

    #[test]
    fn the_first_matching_line_wins_with_wildcards_and_escapes() {
        let text = "# comment\n\
                    other:5432:shop:app:no\n\
                    db.example:5433:*:app:no\n\
                    db.example:5432:*:app:p\\:w\\\\d:tail\n\
                    *:*:*:*:fallback\n";
        assert_eq!(find(text, &LOGIN).as_deref(), Some("p:w\\d"));
        assert_eq!(
            find(
                text,
                &Login {
                    user: "someone",
                    ..LOGIN
                }
            )
            .as_deref(),
            Some("fallback")
        );
        assert_eq!(find("db.example:5432:shop\n", &LOGIN), None);
    }

    #[test]
    fn a_file_others_can_read_is_ignored() {
        let dir = std::env::temp_dir().join(format!("soniq-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pgpass");
        std::fs::write(&path, "*:*:*:*:secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(lookup(&path, &LOGIN).as_deref(), Some("secret"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(lookup(&path, &LOGIN), None);
        assert_eq!(lookup(&dir.join("missing"), &LOGIN), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
