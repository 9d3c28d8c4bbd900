//! Who may act: the operator who gave the dashboard's password gets a session, a cookie the
//! dashboard signs, and every form of that session carries a CSRF token derived from it.
//! * The password comes from the environment and is compared in constant time (both sides
//!   go through the same HMAC, so neither its length nor a matching prefix shows in timing).
//! * The signing key is drawn at start: a restart ends every session.
//! * A session lasts [`SESSION_LIFETIME`]; its cookie is `HttpOnly` and `SameSite=Strict`.
//!   Logging out ends it here too (its id is kept until it would have expired), so a copy of
//!   the cookie is no use after.
//! * A wrong password waits [`WRONG_PASSWORD_DELAY`] before its answer, one at a time, so
//!   guesses cannot be sped up by sending many at once.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type Signer = Hmac<Sha256>;

pub const COOKIE: &str = "soniq_session";
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// A password shorter than this is refused at start.
pub const MIN_PASSWORD_LEN: usize = 12;
/// How long a wrong password waits for its answer.
pub const WRONG_PASSWORD_DELAY: Duration = Duration::from_secs(1);

pub struct Guard {
    key: [u8; 32],
    password_tag: Vec<u8>,
    /// Sessions logged out, by id, with when they would have expired.
    ended: Mutex<HashMap<String, SystemTime>>,
    /// Held through a wrong password's delay: wrong passwords are answered one at a time.
    refusing: tokio::sync::Mutex<()>,
}

/// A signed-in operator's session.
pub struct Session {
    nonce: String,
    expires: SystemTime,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The `Set-Cookie` value of a session cookie for a dashboard at `base` (the root: ""); an
/// empty `value` with no `max_age` left ends it in the browser.
pub fn set_cookie(base: &str, value: &str, max_age: Duration) -> String {
    let path = if base.is_empty() { "/" } else { base };
    format!(
        "{COOKIE}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict",
        max_age.as_secs()
    )
}

impl Guard {
    /// A guard for `password`, with a fresh signing key.
    pub fn new(password: &str) -> Result<Guard, String> {
        if password.chars().count() < MIN_PASSWORD_LEN {
            return Err(format!(
                "the dashboard's password must be at least {MIN_PASSWORD_LEN} characters"
            ));
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| format!("no random key for sessions: {e}"))?;
        let mut guard = Guard {
            key,
            password_tag: Vec::new(),
            ended: Mutex::new(HashMap::new()),
            refusing: tokio::sync::Mutex::new(()),
        };
        guard.password_tag = guard.tag(&[b"password", password.as_bytes()]);
        Ok(guard)
    }

    fn signer(&self, parts: &[&[u8]]) -> Signer {
        let mut signer = Signer::new_from_slice(&self.key).expect("HMAC takes any key length");
        for part in parts {
            signer.update(&(part.len() as u64).to_be_bytes());
            signer.update(part);
        }
        signer
    }

    fn tag(&self, parts: &[&[u8]]) -> Vec<u8> {
        self.signer(parts).finalize().into_bytes().to_vec()
    }

    /// Whether `given` is the password, in time that does not depend on where they differ.
    pub fn password_matches(&self, given: &str) -> bool {
        self.signer(&[b"password", given.as_bytes()])
            .verify_slice(&self.password_tag)
            .is_ok()
    }

    /// A new session's cookie value: when it ends, a random nonce, and their signature.
    pub fn new_session(&self) -> Result<String, String> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|e| format!("no random session id: {e}"))?;
        let expires = (SystemTime::now() + SESSION_LIFETIME)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let body = format!("{expires}.{}", hex(&nonce));
        let signature = hex(&self.tag(&[b"session", body.as_bytes()]));
        Ok(format!("{body}.{signature}"))
    }

    /// Answers a wrong password: after [`WRONG_PASSWORD_DELAY`], and after every wrong password
    /// before it.
    pub async fn refuse_slowly(&self) {
        let _one_at_a_time = self.refusing.lock().await;
        tokio::time::sleep(WRONG_PASSWORD_DELAY).await;
    }

    /// Ends `session` before it expires (logging out).
    pub fn end(&self, session: &Session) {
        let mut ended = self
            .ended
            .lock()
            .expect("not poisoned: no code panics holding it");
        let now = SystemTime::now();
        ended.retain(|_, expires| *expires > now);
        ended.insert(session.nonce.clone(), session.expires);
    }

    /// The session a request's `Cookie` header carries, if it is one this dashboard signed and
    /// it has not ended.
    pub fn session(&self, cookie_header: Option<&str>) -> Option<Session> {
        let value = cookie_header?
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)?
            .1;
        let (body, signature) = value.rsplit_once('.')?;
        self.signer(&[b"session", body.as_bytes()])
            .verify_slice(&unhex(signature)?)
            .ok()?;
        let (expires, nonce) = body.split_once('.')?;
        let expires = UNIX_EPOCH + Duration::from_secs(expires.parse().ok()?);
        let logged_out = self
            .ended
            .lock()
            .expect("not poisoned: no code panics holding it")
            .contains_key(nonce);
        (SystemTime::now() < expires && !logged_out).then(|| Session {
            nonce: nonce.to_string(),
            expires,
        })
    }

    /// The CSRF token of `session`'s forms.
    pub fn csrf_token(&self, session: &Session) -> String {
        hex(&self.tag(&[b"csrf", session.nonce.as_bytes()]))
    }

    /// Whether `token` is `session`'s CSRF token (compared in constant time).
    pub fn csrf_matches(&self, session: &Session, token: &str) -> bool {
        unhex(token).is_some_and(|token| {
            self.signer(&[b"csrf", session.nonce.as_bytes()])
                .verify_slice(&token)
                .is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie(value: &str) -> String {
        format!("theme=dark; {COOKIE}={value}")
    }

    #[test]
    fn the_password_opens_a_session_whose_forms_carry_its_token() {
        let guard = Guard::new("correct horse battery").unwrap();
        assert!(guard.password_matches("correct horse battery"));
        assert!(!guard.password_matches("correct horse batter"));
        assert!(!guard.password_matches(""));
        let value = guard.new_session().unwrap();
        let session = guard.session(Some(&cookie(&value))).expect("a session");
        let token = guard.csrf_token(&session);
        assert!(guard.csrf_matches(&session, &token));
        assert!(!guard.csrf_matches(&session, &token[..token.len() - 2]));
        assert!(!guard.csrf_matches(&session, "not hex"));
        let other = guard
            .session(Some(&cookie(&guard.new_session().unwrap())))
            .unwrap();
        assert!(
            !guard.csrf_matches(&other, &token),
            "a token is its session's"
        );
    }

    #[test]
    fn forged_altered_expired_and_foreign_cookies_are_no_session() {
        let guard = Guard::new("correct horse battery").unwrap();
        let value = guard.new_session().unwrap();
        let (body, signature) = value.rsplit_once('.').unwrap();
        let (_, nonce) = body.split_once('.').unwrap();
        let later = format!("99999999999.{nonce}.{signature}");
        assert!(
            guard.session(Some(&cookie(&later))).is_none(),
            "a longer life is not signed"
        );
        let expired_body = format!("1.{nonce}");
        let expired = format!(
            "{expired_body}.{}",
            hex(&guard.tag(&[b"session", expired_body.as_bytes()]))
        );
        assert!(
            guard.session(Some(&cookie(&expired))).is_none(),
            "ended in 1970"
        );
        let foreign = Guard::new("correct horse battery").unwrap();
        assert!(
            foreign.session(Some(&cookie(&value))).is_none(),
            "another key"
        );
        assert!(guard.session(None).is_none());
        assert!(guard.session(Some("soniq_session=garbage")).is_none());
    }

    #[test]
    fn a_session_logged_out_is_no_session_and_others_stay() {
        let guard = Guard::new("correct horse battery").unwrap();
        let (one, other) = (guard.new_session().unwrap(), guard.new_session().unwrap());
        let session = guard.session(Some(&cookie(&one))).unwrap();
        guard.end(&session);
        assert!(guard.session(Some(&cookie(&one))).is_none());
        assert!(guard.session(Some(&cookie(&other))).is_some());
    }

    #[test]
    fn a_short_password_is_refused() {
        let refused = Guard::new("short").err().unwrap();
        assert!(refused.contains("at least 12 characters"), "{refused}");
    }
}
