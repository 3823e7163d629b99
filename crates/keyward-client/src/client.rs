//! [`Client`] and its [`ClientBuilder`].

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use keyward_proto::{
    paths, CreateKeyRequest, CreatedKey, ErrorCode, KeyList, KeyView, LoginRequest, LogoutRequest,
    MeResponse, PasswordChangeRequest, RefreshRequest, RegisterRequest, RegisterResponse,
    RotateKeyRequest, Secret, TenantView, TokenPair, VerifyRequest, VerifyResponse,
};
use reqwest::{Method, Response, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::credentials::{Bearer, Credentials};
use crate::error::{Error, Result};

/// Where [`Client::from_env`] connects when `KEYWARD_URL` is unset: `keyward serve`'s default.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:7777";

/// How long a request may take, connection included, unless [`ClientBuilder::timeout`] says
/// otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

const REQUEST_ID_HEADER: &str = "x-request-id";
const USER_AGENT: &str = concat!("keyward-client/", env!("CARGO_PKG_VERSION"));

/// A client of one Keyward server.
///
/// Cheap to clone: clones share the connection pool and the [`Credentials`], so a token pair
/// one clone obtains by [`login`](Self::login) or by a refresh is used by all of them.
/// `Debug` shows the base URL and which credentials are held, never their values.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: Url,
    timeout: Duration,
    /// Only ever locked for a clone or an assignment, never across an `.await`.
    credentials: RwLock<Credentials>,
    /// Taken for the whole of a refresh, so that clones that all meet `token_expired` at once
    /// spend the refresh token once: spending it twice would answer `invalid_token` to the
    /// second, and outside the server's grace window revoke the session.
    refresh_turn: tokio::sync::Mutex<()>,
}

/// Configures a [`Client`]; made by [`Client::builder`] or [`ClientBuilder::from_env`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    timeout: Duration,
    credentials: Credentials,
}

impl ClientBuilder {
    /// A builder for the server at `base_url` (e.g. `https://auth.example.com`; a path prefix
    /// such as `https://example.com/keyward` is kept), with no credentials and
    /// [`DEFAULT_TIMEOUT`].
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            timeout: DEFAULT_TIMEOUT,
            credentials: Credentials::default(),
        }
    }

    /// A builder from the environment: `KEYWARD_URL` (else [`DEFAULT_BASE_URL`]) and
    /// `KEYWARD_API_KEY` (else no credentials). Empty values count as unset.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let mut builder = Self::new(set("KEYWARD_URL").unwrap_or_else(|| DEFAULT_BASE_URL.into()));
        if let Some(key) = set("KEYWARD_API_KEY") {
            builder = builder.api_key(key.trim());
        }
        builder
    }

    /// The longest a request may take, from connecting to the end of the body.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Authenticate with an API key.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.credentials.api_key = Some(Secret::new(key));
        self
    }

    /// Authenticate with an access token alone: when it expires, calls answer `token_expired`.
    pub fn access_token(mut self, token: impl Into<String>) -> Self {
        self.credentials.access_token = Some(Secret::new(token));
        self
    }

    /// Authenticate with a session's token pair: on `token_expired` the client spends the
    /// refresh token for a new pair and retries.
    pub fn tokens(
        mut self,
        access_token: impl Into<String>,
        refresh_token: impl Into<String>,
    ) -> Self {
        self.credentials.access_token = Some(Secret::new(access_token));
        self.credentials.refresh_token = Some(Secret::new(refresh_token));
        self
    }

    /// Start from saved credentials (see [`Client::credentials`]), replacing any set before.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// The client. Fails on a base URL that is not a plain `http`/`https` URL (a query,
    /// fragment or `user:password@` part is refused: credentials never go in a URL).
    pub fn build(self) -> Result<Client> {
        let base_url = parse_base_url(&self.base_url)?;
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .user_agent(USER_AGENT)
            // The API never redirects; following one would send the credential elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base_url,
                timeout: self.timeout,
                credentials: RwLock::new(self.credentials),
                refresh_turn: tokio::sync::Mutex::new(()),
            }),
        })
    }
}

fn parse_base_url(raw: &str) -> Result<Url> {
    let invalid = |reason: &str| Error::InvalidBaseUrl {
        url: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(raw.trim()).map_err(|error| invalid(&error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials do not belong in a URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a base url has no query or fragment"));
    }
    Ok(url)
}

/// Whether a request presents the client's credential.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    None,
    Caller,
}

impl Client {
    /// A builder for the server at `base_url`.
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(base_url)
    }

    /// A client configured from `KEYWARD_URL` and `KEYWARD_API_KEY`; see
    /// [`ClientBuilder::from_env`].
    pub fn from_env() -> Result<Self> {
        ClientBuilder::from_env().build()
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        &self.inner.base_url
    }

    /// A copy of the credentials the client holds now, e.g. to save them.
    pub fn credentials(&self) -> Credentials {
        self.read_credentials().clone()
    }

    /// Replace the credentials of this client and of its clones.
    pub fn set_credentials(&self, credentials: Credentials) {
        *self.write_credentials() = credentials;
    }

    // ------------------------------------------------------------ accounts and sessions

    /// `POST /v1/auth/register`: create a user and their tenant. The client keeps the returned
    /// token pair, so later calls act as the new user.
    pub async fn register(&self, request: RegisterRequest) -> Result<RegisterResponse> {
        let url = self.url(paths::REGISTER, None)?;
        let response: RegisterResponse = self
            .call(Method::POST, url, Some(&request), Auth::None)
            .await?;
        self.write_credentials().store_tokens(&response.tokens);
        Ok(response)
    }

    /// `POST /v1/auth/login`: exchange email and password for a token pair, which the client
    /// keeps.
    pub async fn login(&self, email: &str, password: &str) -> Result<TokenPair> {
        let url = self.url(paths::LOGIN, None)?;
        let request = LoginRequest {
            email: Some(email.to_owned()),
            password: Secret::new(password),
        };
        let tokens: TokenPair = self
            .call(Method::POST, url, Some(&request), Auth::None)
            .await?;
        self.write_credentials().store_tokens(&tokens);
        Ok(tokens)
    }

    /// `POST /v1/auth/refresh`: spend the refresh token for a new pair, which the client keeps.
    ///
    /// Rarely needed by hand: every call refreshes by itself when the server answers
    /// `token_expired`. Fails with [`Error::NoRefreshToken`] when the client holds none.
    pub async fn refresh(&self) -> Result<TokenPair> {
        let _turn = self.inner.refresh_turn.lock().await;
        self.refresh_in_turn().await
    }

    /// `POST /v1/auth/logout`: end this session, or with `all` every session of the user.
    /// The client then forgets its token pair (its API key, if any, stays). With an API key
    /// as the only credential the server answers `session_required`.
    pub async fn logout(&self, all: bool) -> Result<()> {
        let url = self.url(paths::LOGOUT, None)?;
        let request = LogoutRequest { all: Some(all) };
        self.call_no_content(Method::POST, url, Some(&request))
            .await?;
        let mut credentials = self.write_credentials();
        credentials.access_token = None;
        credentials.refresh_token = None;
        Ok(())
    }

    /// `GET /v1/auth/me`: who the credentials belong to, and how they authenticate. Also the
    /// way to check that credentials are valid.
    pub async fn me(&self) -> Result<MeResponse> {
        let url = self.url(paths::ME, None)?;
        self.call(Method::GET, url, None::<&()>, Auth::Caller).await
    }

    /// `GET /v1/tenant`: the caller's tenant.
    pub async fn tenant(&self) -> Result<TenantView> {
        let url = self.url(paths::TENANT, None)?;
        self.call(Method::GET, url, None::<&()>, Auth::Caller).await
    }

    /// `POST /v1/auth/password` (session only): change the password. The user's other sessions
    /// end; this one goes on. A wrong `current_password` is a 422 `validation_failed` naming
    /// the field `current_password`.
    pub async fn change_password(&self, current_password: &str, new_password: &str) -> Result<()> {
        let url = self.url(paths::PASSWORD, None)?;
        let request = PasswordChangeRequest {
            current_password: Secret::new(current_password),
            new_password: Secret::new(new_password),
        };
        self.call_no_content(Method::POST, url, Some(&request))
            .await
    }

    // ------------------------------------------------------------ API keys

    /// `POST /v1/keys`: mint a key. The response's `key` is the only time the full key is
    /// shown.
    pub async fn create_key(&self, request: CreateKeyRequest) -> Result<CreatedKey> {
        let url = self.url(paths::KEYS, None)?;
        self.call(Method::POST, url, Some(&request), Auth::Caller)
            .await
    }

    /// `GET /v1/keys`: the caller's keys, newest first, masked; revoked ones only with
    /// `include_revoked`.
    pub async fn list_keys(&self, include_revoked: bool) -> Result<Vec<KeyView>> {
        let mut url = self.url(paths::KEYS, None)?;
        if include_revoked {
            url.query_pairs_mut().append_pair("include_revoked", "true");
        }
        let list: KeyList = self
            .call(Method::GET, url, None::<&()>, Auth::Caller)
            .await?;
        Ok(list.keys)
    }

    /// `GET /v1/keys/{id}`: one key, revoked ones included. Another user's key is `not_found`.
    pub async fn get_key(&self, id: &str) -> Result<KeyView> {
        let url = self.url(paths::KEY, Some(id))?;
        self.call(Method::GET, url, None::<&()>, Auth::Caller).await
    }

    /// `DELETE /v1/keys/{id}`: revoke a key, from the server's very next request on. Cannot be
    /// undone.
    pub async fn revoke_key(&self, id: &str) -> Result<()> {
        let url = self.url(paths::KEY, Some(id))?;
        self.call_no_content(Method::DELETE, url, None::<&()>).await
    }

    /// `POST /v1/keys/{id}/rotate`: replace a key with a new one (new id and key; same name,
    /// description, scopes and meta). With no grace period (or 0) the old key is revoked at
    /// once; else it expires after `grace_period_seconds`.
    pub async fn rotate_key(
        &self,
        id: &str,
        grace_period_seconds: Option<i64>,
    ) -> Result<CreatedKey> {
        let url = self.url(paths::KEY_ROTATE, Some(id))?;
        let request = RotateKeyRequest {
            grace_period_seconds,
        };
        self.call(Method::POST, url, Some(&request), Auth::Caller)
            .await
    }

    /// `POST /v1/keys/verify`: whether `key` is valid and holds every scope in `scopes`
    /// (`read` ⊂ `write` ⊂ `admin` applies; empty asks for none). An unknown, expired or revoked
    /// key is an `Ok` answer with `valid: false` and its `code`, not an error. Sends none of
    /// the client's own credentials.
    pub async fn verify_key(&self, key: &str, scopes: &[&str]) -> Result<VerifyResponse> {
        let url = self.url(paths::KEYS_VERIFY, None)?;
        let request = VerifyRequest {
            key: Secret::new(key),
            scopes: (!scopes.is_empty())
                .then(|| scopes.iter().map(|scope| (*scope).to_owned()).collect()),
        };
        self.call(Method::POST, url, Some(&request), Auth::None)
            .await
    }

    // ------------------------------------------------------------ plumbing

    /// `path` (one of [`paths`]) under the base URL, `{id}` replaced by `id` as one
    /// percent-encoded segment.
    fn url(&self, path: &str, id: Option<&str>) -> Result<Url> {
        let id = id.unwrap_or_default();
        if path.contains("{id}") && matches!(id, "" | "." | "..") {
            return Err(Error::InvalidKeyId(id.to_owned()));
        }
        let mut url = self.inner.base_url.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| Error::InvalidBaseUrl {
                    url: self.inner.base_url.to_string(),
                    reason: "it cannot have a path".into(),
                })?;
            segments.pop_if_empty();
            for segment in path.split('/').filter(|segment| !segment.is_empty()) {
                segments.push(if segment == "{id}" { id } else { segment });
            }
        }
        Ok(url)
    }

    /// Sends a request and decodes its 2xx JSON body.
    async fn call<B, T>(&self, method: Method, url: Url, body: Option<&B>, auth: Auth) -> Result<T>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        let response = self.execute(method, url, body, auth).await?;
        decode(response).await
    }

    /// Sends an authenticated request whose success is a 204.
    async fn call_no_content<B>(&self, method: Method, url: Url, body: Option<&B>) -> Result<()>
    where
        B: Serialize + ?Sized,
    {
        self.execute(method, url, body, Auth::Caller).await?;
        Ok(())
    }

    /// Sends a request and returns its 2xx response, or the error it answered.
    ///
    /// When an access token was presented and the answer is `token_expired`, refreshes once
    /// and retries once (SPEC §6). If the refresh fails, the original `token_expired` is
    /// returned, not the refresh's error: the caller asked for this request, not a refresh.
    async fn execute<B>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
        auth: Auth,
    ) -> Result<Response>
    where
        B: Serialize + ?Sized,
    {
        let bearer = match auth {
            Auth::Caller => self.read_credentials().bearer(),
            Auth::None => None,
        };
        let result = self
            .send_once(method.clone(), url.clone(), body, bearer.as_ref())
            .await;
        let Some(Bearer::AccessToken(sent)) = bearer else {
            return result;
        };
        match result {
            Err(error) if error.has_code(ErrorCode::TokenExpired) => {
                if !self.recover_from_expiry(&sent).await {
                    return Err(error);
                }
                let bearer = self.read_credentials().bearer();
                self.send_once(method, url, body, bearer.as_ref()).await
            }
            other => other,
        }
    }

    /// After `sent` was refused as expired: makes sure the client holds a newer access token.
    /// Returns whether a retry is worth it.
    async fn recover_from_expiry(&self, sent: &Secret) -> bool {
        let _turn = self.inner.refresh_turn.lock().await;
        let current = self.read_credentials().access_token.clone();
        if current.as_ref() != Some(sent) {
            // A clone refreshed (or logged out) while this request was in flight.
            return current.is_some();
        }
        self.refresh_in_turn().await.is_ok()
    }

    /// The refresh itself; the caller holds `refresh_turn`.
    async fn refresh_in_turn(&self) -> Result<TokenPair> {
        let refresh_token = self
            .read_credentials()
            .refresh_token
            .clone()
            .ok_or(Error::NoRefreshToken)?;
        let url = self.url(paths::REFRESH, None)?;
        let request = RefreshRequest { refresh_token };
        let response = self
            .send_once(Method::POST, url, Some(&request), None)
            .await?;
        let tokens: TokenPair = decode(response).await?;
        self.write_credentials().store_tokens(&tokens);
        Ok(tokens)
    }

    /// One HTTP exchange: a 2xx response, or the error it stands for.
    async fn send_once<B>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
        bearer: Option<&Bearer>,
    ) -> Result<Response>
    where
        B: Serialize + ?Sized,
    {
        let mut request = self
            .inner
            .http
            .request(method, url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(bearer) = bearer {
            // `bearer_auth` marks the header sensitive, so reqwest never prints it.
            request = request.bearer_auth(bearer.expose());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let request_id = header_request_id(&response);
        let body = response.bytes().await?;
        Err(Error::from_response(status, request_id, &body))
    }

    fn read_credentials(&self) -> RwLockReadGuard<'_, Credentials> {
        // A panic while the lock was held cannot leave `Credentials` half-written: every write
        // is one assignment. So a poisoned lock is still good to use.
        self.inner
            .credentials
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_credentials(&self) -> RwLockWriteGuard<'_, Credentials> {
        self.inner
            .credentials
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Credentials` prints each secret as `[redacted]`.
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url.as_str())
            .field("timeout", &self.inner.timeout)
            .field("credentials", &*self.read_credentials())
            .finish_non_exhaustive()
    }
}

fn header_request_id(response: &Response) -> Option<String> {
    response
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

async fn decode<T: DeserializeOwned>(response: Response) -> Result<T> {
    let status = response.status().as_u16();
    let request_id = header_request_id(&response);
    let body = response.bytes().await?;
    serde_json::from_slice(&body).map_err(|source| Error::Decode {
        status,
        request_id,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base_url: &str) -> Client {
        Client::builder(base_url).build().unwrap()
    }

    #[test]
    fn paths_go_under_the_base_url_with_or_without_a_trailing_slash() {
        for base in ["http://127.0.0.1:7777", "http://127.0.0.1:7777/"] {
            let url = client(base).url(paths::ME, None).unwrap();
            assert_eq!(url.as_str(), "http://127.0.0.1:7777/v1/auth/me");
        }
        for base in [
            "https://example.com/keyward",
            "https://example.com/keyward/",
        ] {
            let url = client(base).url(paths::KEY_ROTATE, Some("key_1")).unwrap();
            assert_eq!(
                url.as_str(),
                "https://example.com/keyward/v1/keys/key_1/rotate"
            );
        }
    }

    #[test]
    fn a_key_id_is_one_encoded_segment() {
        let client = client("http://localhost:7777");
        let url = client.url(paths::KEY, Some("a/b?c#d")).unwrap();
        assert_eq!(url.as_str(), "http://localhost:7777/v1/keys/a%2Fb%3Fc%23d");
        for id in ["", ".", ".."] {
            let error = client.url(paths::KEY, Some(id)).unwrap_err();
            assert!(matches!(error, Error::InvalidKeyId(_)), "{id:?}: {error:?}");
        }
    }

    #[test]
    fn unusable_base_urls_are_refused() {
        for base in [
            "not a url",
            "ftp://example.com",
            "https://user:pass@example.com",
            "https://example.com/?api_key=kw_x",
            "https://example.com/#x",
        ] {
            let error = Client::builder(base).build().unwrap_err();
            assert!(
                matches!(error, Error::InvalidBaseUrl { .. }),
                "{base}: {error:?}"
            );
        }
    }

    #[test]
    fn from_env_reads_url_and_api_key() {
        let builder = ClientBuilder::from_lookup(|name| match name {
            "KEYWARD_URL" => Some("https://auth.example.com".into()),
            "KEYWARD_API_KEY" => Some("kw_fromenv".into()),
            _ => None,
        });
        let client = builder.build().unwrap();
        assert_eq!(client.base_url().as_str(), "https://auth.example.com/");
        assert_eq!(
            client.credentials().api_key.as_ref().map(Secret::expose),
            Some("kw_fromenv")
        );
        assert_eq!(client.credentials().access_token, None);
    }

    #[test]
    fn from_env_defaults_to_the_local_server_without_credentials() {
        for value in [None, Some(String::new())] {
            let client = ClientBuilder::from_lookup(|_| value.clone())
                .build()
                .unwrap();
            assert_eq!(client.base_url().as_str(), "http://127.0.0.1:7777/");
            assert_eq!(client.credentials(), Credentials::default());
        }
    }

    #[test]
    fn debug_prints_no_credential() {
        let client = Client::builder("http://localhost:7777")
            .api_key("kw_secretkeyvalue")
            .tokens("header.payload.signature", "refreshsecret")
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let debug = format!("{client:?}");
        for secret in ["secretkeyvalue", "payload", "refreshsecret"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(debug.contains("localhost:7777"), "{debug}");
        assert!(debug.contains("5s"), "{debug}");
    }

    #[test]
    fn clones_share_credentials() {
        let client = client("http://localhost:7777");
        let clone = client.clone();
        clone.set_credentials(Credentials {
            api_key: Some(Secret::new("kw_shared")),
            ..Credentials::default()
        });
        assert_eq!(
            client.credentials().api_key.as_ref().map(Secret::expose),
            Some("kw_shared")
        );
    }
}
