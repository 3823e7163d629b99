//! [`Client`] and its [`ClientBuilder`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use keyward_proto::{
    paths, CreateKeyRequest, CreatedKey, DeviceApproveRequest, DeviceCodeRequest,
    DeviceCodeResponse, DeviceTokenRequest, DeviceTokenResponse, ErrorCode, KeyList, KeyView,
    LoginRequest, LogoutRequest, MeResponse, PasswordChangeRequest, RefreshRequest,
    RegisterRequest, RegisterResponse, RotateKeyRequest, Secret, TenantView, TokenPair,
    UpdateKeyRequest, UsageResponse, VerifyRequest, VerifyResponse,
};
use keyward_proto::{
    CreateWebhookRequest, CreatedWebhook, DeliveryList, DeliveryView, LeakReportRequest,
    LeakReportResponse, WebhookList, WebhookView,
};
use reqwest::{Method, Response, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::credentials::{Bearer, Credentials, CredentialsFile};
use crate::device::DevicePoll;
use crate::error::{Error, Result};

/// Where [`Client::from_env`] connects when `KEYWARD_URL` is unset: `keyward serve`'s default.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:7777";

/// How long a request may take, connection included, unless [`ClientBuilder::timeout`] says
/// otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

const REQUEST_ID_HEADER: &str = "x-request-id";
/// The `User-Agent` a client sends unless [`ClientBuilder::user_agent`] says otherwise.
pub const DEFAULT_USER_AGENT: &str = concat!("keyward-rust/", env!("CARGO_PKG_VERSION"));

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
    /// Where the credentials are written whenever a login, refresh or logout changes them.
    persist: Option<PathBuf>,
}

/// Configures a [`Client`]; made by [`Client::builder`] or [`ClientBuilder::from_env`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    timeout: Duration,
    credentials: Credentials,
    user_agent: String,
    persist: Option<PathBuf>,
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
            user_agent: DEFAULT_USER_AGENT.into(),
            persist: None,
        }
    }

    /// A builder from the environment and the credentials file
    /// ([`CredentialsFile::default_path`]), in this order of precedence:
    ///
    /// - URL: `KEYWARD_URL`, else the file's `url`, else [`DEFAULT_BASE_URL`];
    /// - credentials: `KEYWARD_API_KEY` (the file's credentials are then ignored), else the
    ///   file's, but only when the file's `url` is the URL in use: credentials issued by one
    ///   server are never sent to another.
    ///
    /// Empty variables count as unset; a missing file means no credentials. Fails on a file
    /// that cannot be read or parsed. The file is not written back unless
    /// [`persist`](Self::persist) says so.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let set = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let path = CredentialsFile::path_from(|name| set(name).map(PathBuf::from));
        let file = match &path {
            Some(path) => CredentialsFile::load(path)?,
            None => None,
        };
        let url = set("KEYWARD_URL")
            .map(|url| url.trim().to_owned())
            .or_else(|| file.as_ref().and_then(|file| file.url.clone()))
            .unwrap_or_else(|| DEFAULT_BASE_URL.into());
        let mut builder = Self::new(url.clone());
        if let Some(key) = set("KEYWARD_API_KEY") {
            builder = builder.api_key(key.trim());
        } else if let Some(file) = file.filter(|file| file.is_for(&url)) {
            builder = builder.credentials(file.credentials());
        }
        Ok(builder)
    }

    /// Replace the base URL.
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// The `User-Agent` header (default [`DEFAULT_USER_AGENT`]); programs built on this crate
    /// name themselves here, e.g. `keyward-cli/0.1.0`.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Keep the credentials file at `path` up to date: whenever a login, registration,
    /// refresh (including the automatic one after `token_expired`) or logout changes the
    /// credentials, the client writes them there with its base URL (mode 0600, atomically).
    /// Without this, a refreshed token pair lives only in memory, and the refresh token in the
    /// file is spent. When another process sharing the file refreshed first (so this client's
    /// refresh is refused), the client takes the pair that process saved and retries.
    pub fn persist(mut self, path: impl Into<PathBuf>) -> Self {
        self.persist = Some(path.into());
        self
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
            .user_agent(self.user_agent)
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
                persist: self.persist,
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

    /// A client configured from `KEYWARD_URL`, `KEYWARD_API_KEY` and the credentials file;
    /// see [`ClientBuilder::from_env`].
    pub fn from_env() -> Result<Self> {
        ClientBuilder::from_env()?.build()
    }

    /// The file the client keeps its credentials in, if it was built with
    /// [`ClientBuilder::persist`].
    pub fn persist_path(&self) -> Option<&Path> {
        self.inner.persist.as_deref()
    }

    /// Writes the credentials file now, if the client persists.
    pub fn save_credentials(&self) -> Result<()> {
        let Some(path) = &self.inner.persist else {
            return Ok(());
        };
        let url = self
            .inner
            .base_url
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        CredentialsFile::new(Some(url), self.credentials()).save(path)
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
        self.save_credentials()?;
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
        self.save_credentials()?;
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
        {
            let mut credentials = self.write_credentials();
            credentials.access_token = None;
            credentials.refresh_token = None;
        }
        self.save_credentials()
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

    /// `PATCH /v1/keys/{id}`: changes the fields `request` sets (rename, describe, meta,
    /// enable or disable, narrow scopes, rate limit, credits) and answers the key.
    pub async fn update_key(&self, id: &str, request: &UpdateKeyRequest) -> Result<KeyView> {
        let url = self.url(paths::KEY, Some(id))?;
        self.call(Method::PATCH, url, Some(request), Auth::Caller)
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
            cost: None,
        };
        self.call(Method::POST, url, Some(&request), Auth::None)
            .await
    }

    /// [`Self::verify_key`] that spends no credits (`cost: 0`): whether `key` is live, for
    /// scanners such as `keyward leaks check`.
    pub async fn check_key(&self, key: &str) -> Result<VerifyResponse> {
        let url = self.url(paths::KEYS_VERIFY, None)?;
        let request = VerifyRequest {
            key: Secret::new(key),
            scopes: None,
            cost: Some(0),
        };
        self.call(Method::POST, url, Some(&request), Auth::None)
            .await
    }

    // ------------------------------------------------------------ leaks and webhooks

    /// `POST /v1/leaks` (no credential): reports `key` as leaked, found at `found_at`. A live
    /// key is revoked when the server's `leaks.auto_revoke` is on; the answer only says whether
    /// it was live.
    pub async fn report_leak(
        &self,
        key: &str,
        found_at: Option<&str>,
    ) -> Result<LeakReportResponse> {
        let url = self.url(paths::LEAKS, None)?;
        let request = LeakReportRequest {
            key: Secret::new(key),
            url: found_at.map(str::to_owned),
        };
        self.call(Method::POST, url, Some(&request), Auth::None)
            .await
    }

    /// `POST /v1/webhooks` (session): the secret is in this answer only.
    pub async fn create_webhook(&self, url: &str, events: &[&str]) -> Result<CreatedWebhook> {
        let endpoint = self.url(paths::WEBHOOKS, None)?;
        let request = CreateWebhookRequest {
            url: url.to_owned(),
            events: events.iter().map(|event| (*event).to_owned()).collect(),
        };
        self.call(Method::POST, endpoint, Some(&request), Auth::Caller)
            .await
    }

    /// `GET /v1/webhooks` (session).
    pub async fn list_webhooks(&self) -> Result<Vec<WebhookView>> {
        let url = self.url(paths::WEBHOOKS, None)?;
        let list: WebhookList = self
            .call(Method::GET, url, None::<&()>, Auth::Caller)
            .await?;
        Ok(list.webhooks)
    }

    /// `DELETE /v1/webhooks/{id}` (session): its pending deliveries stop.
    pub async fn delete_webhook(&self, id: &str) -> Result<()> {
        let url = self.url(paths::WEBHOOK, Some(id))?;
        self.call_no_content(Method::DELETE, url, None::<&()>).await
    }

    /// `GET /v1/webhooks/{id}/deliveries` (session): newest first, each with its attempts.
    pub async fn webhook_deliveries(&self, id: &str) -> Result<Vec<DeliveryView>> {
        let url = self.url(paths::WEBHOOK_DELIVERIES, Some(id))?;
        let list: DeliveryList = self
            .call(Method::GET, url, None::<&()>, Auth::Caller)
            .await?;
        Ok(list.deliveries)
    }

    // ------------------------------------------------------------ usage

    /// `GET /v1/usage`: metered requests of the caller's tenant over the last `days` UTC days
    /// (1–90; `None` is the server's 30), or of one of the caller's keys. Another user's key is
    /// `not_found`. Needs a session or a key with `read`.
    pub async fn usage(&self, days: Option<u32>, key_id: Option<&str>) -> Result<UsageResponse> {
        let mut url = self.url(paths::USAGE, None)?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(days) = days {
                query.append_pair("days", &days.to_string());
            }
            if let Some(key_id) = key_id {
                query.append_pair("key_id", key_id);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        self.call(Method::GET, url, None::<&()>, Auth::Caller).await
    }

    // ------------------------------------------------------------ device authorization

    /// `POST /v1/auth/device/code`: start a device login (RFC 8628). Show the user
    /// `user_code` and `verification_uri`, then poll [`device_token`](Self::device_token)
    /// every `interval` seconds.
    pub async fn device_code(&self, client_name: Option<&str>) -> Result<DeviceCodeResponse> {
        let url = self.url(paths::DEVICE_CODE, None)?;
        let request = DeviceCodeRequest {
            client_name: client_name.map(str::to_owned),
        };
        self.call(Method::POST, url, Some(&request), Auth::None)
            .await
    }

    /// `POST /v1/auth/device/token`: one poll. The OAuth answers of RFC 8628 §3.5 are
    /// [`DevicePoll`] values, not errors; an `Err` is a failure to ask (network, a problem
    /// body such as `rate_limited`).
    pub async fn device_token(&self, device_code: &Secret) -> Result<DevicePoll> {
        let url = self.url(paths::DEVICE_TOKEN, None)?;
        let body = DeviceTokenRequest {
            device_code: Some(device_code.clone()),
            grant_type: Some(keyward_proto::DEVICE_CODE_GRANT_TYPE.to_owned()),
        };
        let response = self
            .inner
            .http
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&body)
            .send()
            .await?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            let key: DeviceTokenResponse = decode(response).await?;
            return Ok(DevicePoll::Approved(key));
        }
        let request_id = header_request_id(&response);
        let bytes = response.bytes().await?;
        if status == 400 {
            if let Some(poll) = DevicePoll::from_oauth_error(&bytes) {
                return Ok(poll);
            }
        }
        Err(Error::from_response(status, request_id, &bytes))
    }

    /// `POST /v1/auth/device/approve` (session): approve or deny the device showing
    /// `user_code`. An unknown or expired code is `not_found`.
    pub async fn approve_device(&self, user_code: &str, approve: bool) -> Result<()> {
        let url = self.url(paths::DEVICE_APPROVE, None)?;
        let request = DeviceApproveRequest {
            user_code: user_code.to_owned(),
            approve,
        };
        self.call_no_content(Method::POST, url, Some(&request))
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
                if !self.recover_from_expiry(&sent).await? {
                    return Err(error);
                }
                let bearer = self.read_credentials().bearer();
                self.send_once(method, url, body, bearer.as_ref()).await
            }
            other => other,
        }
    }

    /// After `sent` was refused as expired: makes sure the client holds a newer access token.
    /// Returns whether a retry is worth it. The one error it returns is a failure to write
    /// the refreshed pair to the credentials file: the old refresh token is spent, so hiding
    /// that would lose the session at the next run.
    async fn recover_from_expiry(&self, sent: &Secret) -> Result<bool> {
        let _turn = self.inner.refresh_turn.lock().await;
        let current = self.read_credentials().access_token.clone();
        if current.as_ref() != Some(sent) {
            // A clone refreshed (or logged out) while this request was in flight.
            return Ok(current.is_some());
        }
        match self.refresh_in_turn().await {
            Ok(_) => Ok(true),
            Err(error @ (Error::CredentialsFile { .. } | Error::CorruptCredentialsFile { .. })) => {
                Err(error)
            }
            Err(_) => Ok(self.adopt_persisted(sent)),
        }
    }

    /// After a failed refresh: when another process sharing the credentials file (a second
    /// `keyward` command, say) refreshed first, our refresh token was spent and the file
    /// holds the live pair. Takes it and says whether a retry is worth it.
    fn adopt_persisted(&self, sent: &Secret) -> bool {
        let Some(path) = &self.inner.persist else {
            return false;
        };
        let Ok(Some(file)) = CredentialsFile::load(path) else {
            return false;
        };
        if !file.is_for(self.inner.base_url.as_str()) {
            return false;
        }
        match &file.access_token {
            Some(token) if token != sent => {
                self.set_credentials(file.credentials());
                true
            }
            _ => false,
        }
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
        self.save_credentials()?;
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
        })
        .unwrap();
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
                .unwrap()
                .build()
                .unwrap();
            assert_eq!(client.base_url().as_str(), "http://127.0.0.1:7777/");
            assert_eq!(client.credentials(), Credentials::default());
        }
    }

    fn with_file(
        file: &CredentialsFile,
        vars: &[(&str, &str)],
    ) -> (tempfile::TempDir, Result<ClientBuilder>) {
        let dir = tempfile::tempdir().unwrap();
        file.save(&dir.path().join("credentials.json")).unwrap();
        let config_dir = dir.path().to_string_lossy().into_owned();
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .chain([("KEYWARD_CONFIG_DIR".to_owned(), config_dir)])
            .collect();
        let builder = ClientBuilder::from_lookup(|name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        });
        (dir, builder)
    }

    fn session_file(url: &str) -> CredentialsFile {
        CredentialsFile {
            url: Some(url.into()),
            api_key: None,
            access_token: Some(Secret::new("a.b.c")),
            refresh_token: Some(Secret::new("refresh")),
        }
    }

    #[test]
    fn from_env_reads_the_credentials_file() {
        let (_dir, builder) = with_file(&session_file("http://auth.example.com"), &[]);
        let client = builder.unwrap().build().unwrap();
        assert_eq!(client.base_url().as_str(), "http://auth.example.com/");
        assert_eq!(
            client.credentials(),
            session_file("x").credentials(),
            "the file's tokens"
        );
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let (_dir, builder) = with_file(
            &session_file("http://auth.example.com"),
            &[("KEYWARD_API_KEY", "kw_env")],
        );
        let credentials = builder.unwrap().build().unwrap().credentials();
        assert_eq!(
            credentials.api_key.as_ref().map(Secret::expose),
            Some("kw_env")
        );
        assert_eq!(
            credentials.access_token, None,
            "the file's session is ignored"
        );

        // The same server written differently still gets the file's credentials.
        let (_dir, builder) = with_file(
            &session_file("http://auth.example.com"),
            &[("KEYWARD_URL", "http://auth.example.com/")],
        );
        assert!(builder
            .unwrap()
            .build()
            .unwrap()
            .credentials()
            .access_token
            .is_some());

        // Another server never sees them.
        let (_dir, builder) = with_file(
            &session_file("http://auth.example.com"),
            &[("KEYWARD_URL", "http://other.example.com")],
        );
        let client = builder.unwrap().build().unwrap();
        assert_eq!(client.base_url().as_str(), "http://other.example.com/");
        assert_eq!(client.credentials(), Credentials::default());
    }

    #[test]
    fn a_corrupt_file_fails_from_env() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("credentials.json"), "{oops").unwrap();
        let config_dir = dir.path().to_string_lossy().into_owned();
        let error = ClientBuilder::from_lookup(|name| {
            (name == "KEYWARD_CONFIG_DIR").then(|| config_dir.clone())
        })
        .unwrap_err();
        assert!(
            matches!(error, Error::CorruptCredentialsFile { .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_transport_error_names_the_url() {
        // Port 9 (discard) on localhost: nothing listens there in a test environment.
        let client = Client::builder("http://127.0.0.1:9")
            .api_key("kw_x")
            .build()
            .unwrap();
        let error = client.me().await.unwrap_err();
        assert!(matches!(error, Error::Transport(_)), "{error:?}");
        let message = error.to_string();
        assert!(
            message.starts_with("request to http://127.0.0.1:9/v1/auth/me failed"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_timeout_names_the_url() {
        // A listener that never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", silent.local_addr().unwrap());
        let client = Client::builder(&base)
            .timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let message = client.tenant().await.unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("request to {base}/v1/tenant failed: ")),
            "{message}"
        );
        assert!(message.contains("timed out"), "{message}");
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
